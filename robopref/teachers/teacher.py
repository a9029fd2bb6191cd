"""Simulated labellers (B-Pref, Lee et al. 2021; regret model of Knox et al.) for pairs and lists.

Labels are graded scores (``label_kind == "graded"``): the teacher ranks the valid items of a
query and item ``k`` gets ``psi_k = n - 1 - rank_k`` (n valid items, rank 0 = most preferred).
Tied items share the mean of the grades they span, so a tied pair is ``[0.5, 0.5]`` and a
strict pair is ``[1, 0]`` or ``[0, 1]``. With ``soft=True`` (pairs only) the label is the
probability ``y`` that the teacher prefers item 0 (``label_kind == "soft_pair"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    TrajectoryDataset,
    sample_queries,
)
from robopref.teachers.config import TeacherConfig, preset_config
from robopref.teachers.values import ValueFn, segment_values


def _segment_steps(
    dataset: TrajectoryDataset, queries: PreferenceQueries, key: str = "rewards"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-step arrays of every query item, padded: ``([Q, K, H_max] float, [Q, K, H_max] bool)``.

    Same values as :func:`robopref.data.segment_rewards`, gathered without a Python loop.
    """
    arrays = [np.asarray(getattr(t, key), dtype=np.float64) for t in dataset.trajectories]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    mask = queries.mask
    h_max = int(queries.length[mask].max()) if queries.num_queries else 1
    t = np.arange(h_max)
    valid = mask[..., None] & (t < queries.length[..., None])
    ti = np.where(mask, queries.traj_index, 0)
    idx = np.where(valid, offsets[ti][..., None] + queries.start[..., None] + t, 0)
    return np.where(valid, flat[idx], 0.0), valid


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Teacher:
    """A simulated labeller configured by a :class:`TeacherConfig`.

    Args:
        config: the teacher's settings (see :class:`TeacherConfig`).
        value_fn: for the regret model, ``value_fn(observations [N, obs_dim]) -> [N]`` values.

    The teacher owns a random stream seeded with ``config.seed``: two teachers built with the
    same config give identical labels for the same calls; successive calls of one teacher use
    fresh randomness. Pass ``rng`` to :meth:`label` to use another stream.
    """

    def __init__(self, config: TeacherConfig | None = None, value_fn: ValueFn | None = None):
        self.config = config if config is not None else TeacherConfig(name="oracle")
        self.value_fn = value_fn
        self.rng = np.random.default_rng(self.config.seed)

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"Teacher({self.config!r})"

    # -- utilities -------------------------------------------------------------------------

    def returns(
        self, dataset: TrajectoryDataset, queries: PreferenceQueries
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(R, u)``, both ``[Q, K]`` (0 on padding): ``R`` the undiscounted segment return,
        ``u`` the teacher's utility (myopic discounted return, plus ``V(end) - V(start)`` for the
        regret model)."""
        cfg = self.config
        r, valid = _segment_steps(dataset, queries)
        R = r.sum(-1)
        if cfg.gamma == 1.0:
            u = R.copy()
        else:
            # weight gamma^(H-1-t) on step t of a segment of H steps: the end counts most.
            t = np.arange(r.shape[-1])
            expo = queries.length[..., None] - 1 - t
            u = (r * np.where(valid, cfg.gamma ** np.maximum(expo, 0), 0.0)).sum(-1)
        if cfg.regret:
            m = queries.mask
            v0, v1 = segment_values(
                dataset,
                queries.traj_index[m],
                queries.start[m],
                queries.length[m],
                self.value_fn,
                cfg.value_key,
                cfg.value_gamma,
                cfg.value_knn,
            )
            u[m] += v1 - v0
        return R, u

    def thresholds(
        self, dataset: TrajectoryDataset, queries: PreferenceQueries
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """``(skip [Q] or None, equal [Q])`` thresholds in reward units."""
        cfg = self.config
        scale = np.ones(queries.num_queries)
        if cfg.threshold_mode == "relative":
            total = sum(float(t.rewards.sum()) for t in dataset.trajectories)
            steps = sum(len(t) for t in dataset.trajectories)
            mean_h = (queries.length * queries.mask).sum(1) / queries.mask.sum(1)
            scale = total / max(steps, 1) * mean_h
        skip = None if cfg.skip_threshold is None else cfg.skip_threshold * scale
        return skip, cfg.equal_threshold * np.abs(scale)

    # -- labelling -------------------------------------------------------------------------

    def label(
        self,
        dataset: TrajectoryDataset,
        queries: PreferenceQueries,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
    ) -> PreferenceQueries:
        """Label ``queries`` (any labels they carry are ignored).

        Returns a new :class:`PreferenceQueries` without the skipped queries; ``.teacher`` is
        the config name, ``.seed`` the seed (``seed`` if given, else ``config.seed``) and
        ``.metadata`` holds ``teacher_config``, ``num_asked``, ``num_skipped`` and ``kept_index``
        (indices of the labelled queries in the input).
        """
        cfg = self.config
        rng = self.rng if rng is None else rng
        queries.validate("Teacher.label: queries", dataset)
        if cfg.soft and queries.k != 2:
            raise DataValidationError(
                f"Teacher.label: queries: field 'traj_index': expected K = 2 for soft labels, "
                f"found K = {queries.k}"
            )
        R, u = self.returns(dataset, queries)
        skip, equal = self.thresholds(dataset, queries)
        keep = np.ones(queries.num_queries, dtype=bool)
        if skip is not None:
            keep = np.where(queries.mask, R, -np.inf).max(1) >= skip
        kept = np.flatnonzero(keep)
        mask, R, u, equal = queries.mask[kept], R[kept], u[kept], equal[kept]
        if cfg.soft:
            labels = self._soft_pair(R, u, equal)
        else:
            labels = self._graded(R, u, mask, equal, rng)
        out = queries.subset(kept)
        out.labels = labels
        out.label_kind = "soft_pair" if cfg.soft else "graded"
        out.confidence = np.ones(len(kept))
        out.teacher = cfg.name
        out.seed = cfg.seed if seed is None else int(seed)
        out.metadata = {
            **queries.metadata,
            "teacher_config": cfg.model_dump(mode="json"),
            "num_asked": int(queries.num_queries),
            "num_skipped": int(queries.num_queries - len(kept)),
            "kept_index": kept.tolist(),
        }
        out.validate("Teacher.label: output")
        return out

    def _soft_pair(self, R: np.ndarray, u: np.ndarray, equal: np.ndarray) -> np.ndarray:
        cfg = self.config
        d = u[:, 0] - u[:, 1]
        p = _sigmoid(cfg.beta * d) if cfg.beta is not None else 0.5 * (1.0 + np.sign(d))
        y = (1.0 - cfg.eps) * p + cfg.eps * (1.0 - p)
        y = np.where(np.abs(R[:, 0] - R[:, 1]) < equal, 0.5, y)
        return np.stack([y, 1.0 - y], axis=1)

    def _graded(
        self,
        R: np.ndarray,
        u: np.ndarray,
        mask: np.ndarray,
        equal: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        cfg = self.config
        Q, K = u.shape
        # 1. position score: u itself (rational) or a Plackett-Luce sample by the Gumbel trick.
        s = u.copy()
        if cfg.beta is not None:
            s = cfg.beta * u + rng.gumbel(size=(Q, K))
        s = np.where(mask, s, -np.inf)
        # 2. mistakes: swap the scores of two distinct random valid items with probability eps.
        if cfg.eps > 0:
            flip = np.flatnonzero(rng.random(Q) < cfg.eps)
            if len(flip):
                pick = np.argsort(np.where(mask[flip], rng.random((len(flip), K)), np.inf), 1)
                a, b = pick[:, 0], pick[:, 1]
                sa, sb = s[flip, a].copy(), s[flip, b].copy()
                s[flip, a], s[flip, b] = sb, sa
        # 3. equal: items whose returns chain with gaps < threshold form one tie group, and a
        #    group takes the best score of its members.
        if np.any(equal > 0):
            order = np.argsort(np.where(mask, -R, np.inf), axis=1, kind="stable")
            Rs = np.take_along_axis(R, order, 1)
            ms = np.take_along_axis(mask, order, 1)
            close = (Rs[:, :-1] - Rs[:, 1:] < equal[:, None]) & ms[:, 1:]
            gid_sorted = np.cumsum(np.concatenate([np.ones((Q, 1), bool), ~close], 1), 1)
            gid = np.empty_like(gid_sorted)
            np.put_along_axis(gid, order, gid_sorted, 1)
            same = (gid[:, :, None] == gid[:, None, :]) & mask[:, None, :]
            s = np.where(mask, np.where(same, s[:, None, :], -np.inf).max(-1), -np.inf)
        # 4. fractional grades: equal scores are ties sharing the mean of their grades.
        higher = ((s[:, None, :] > s[:, :, None]) & mask[:, None, :]).sum(-1)
        tied = ((s[:, None, :] == s[:, :, None]) & mask[:, None, :]).sum(-1)
        n = mask.sum(1, keepdims=True)
        return np.where(mask, n - 1 - higher - 0.5 * (tied - 1), 0.0).astype(np.float64)


def make_teacher(
    spec: str | TeacherConfig | dict[str, Any] = "oracle",
    value_fn: ValueFn | None = None,
    **overrides: Any,
) -> Teacher:
    """Build a :class:`Teacher` from a preset name (``"oracle"``, ``"stochastic"``, ``"myopic"``,
    ``"mistake"``, ``"skip"``, ``"equal"``, ``"regret"``) with keyword overrides, a
    :class:`TeacherConfig`, or a config dict (e.g. read from YAML).

    Example: ``make_teacher("mistake", eps=0.1, seed=0)``.
    """
    if isinstance(spec, str):
        config = preset_config(spec, **overrides)
    elif isinstance(spec, TeacherConfig):
        config = spec.model_copy(update=overrides) if overrides else spec
        config = TeacherConfig.model_validate(config.model_dump())
    elif isinstance(spec, dict):
        config = TeacherConfig.model_validate({**spec, **overrides})
    else:
        raise TypeError(
            f"make_teacher: expected a preset name, TeacherConfig or dict, found {type(spec)}"
        )
    return Teacher(config, value_fn=value_fn)


def label_queries(
    dataset: TrajectoryDataset,
    teacher: Teacher | str,
    num_queries: int,
    k: int = 2,
    segment_length: int = 25,
    budget: int | None = None,
    seed: int = 0,
    trajectory_ids: np.ndarray | None = None,
) -> PreferenceQueries:
    """Sample queries with :func:`robopref.data.sample_queries` and label them with ``teacher``.

    Args:
        num_queries: number of labelled queries wanted.
        budget: most queries shown to the teacher (skipped ones count). ``None``: exactly
            ``num_queries`` are asked, and skipped ones are not replaced; otherwise queries are
            asked in rounds until ``num_queries`` are labelled or the budget is spent.
        seed: seeds both the sampling and the teacher's randomness (independent of the
            teacher's own stream), so a call is reproducible.

    Returns:
        at most ``min(num_queries, budget)`` labelled queries; ``metadata`` records
        ``num_asked`` and ``num_skipped`` over all rounds.
    """
    if isinstance(teacher, str):
        teacher = make_teacher(teacher)
    if num_queries < 0 or (budget is not None and budget < 0):
        raise ValueError(
            f"label_queries: expected num_queries, budget >= 0, found {num_queries}, {budget}"
        )
    sample_rng, label_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    limit = num_queries if budget is None else budget
    parts: list[PreferenceQueries] = []
    asked = labelled = 0
    while labelled < num_queries and asked < limit:
        n = min(num_queries - labelled, limit - asked)
        q = sample_queries(dataset, n, k, segment_length, sample_rng, trajectory_ids)
        out = teacher.label(dataset, q, rng=label_rng, seed=seed)
        asked += n
        labelled += out.num_queries
        parts.append(out)
        if budget is None:
            break
    if not parts:  # nothing asked: an empty, labelled query set
        empty = np.zeros((0, k), dtype=np.int64)
        q = PreferenceQueries(empty, empty, segment_length)
        parts.append(teacher.label(dataset, q, rng=label_rng, seed=seed))
    result = _concat(parts)
    result.metadata.update(num_asked=asked, num_skipped=asked - result.num_queries)
    result.metadata.pop("kept_index", None)
    return result


def _concat(parts: list[PreferenceQueries]) -> PreferenceQueries:
    first = parts[0]
    if len(parts) == 1:
        return first
    cat = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in ("traj_index", "start", "length", "labels", "mask", "confidence")
    }
    return PreferenceQueries(
        **cat,
        label_kind=first.label_kind,
        teacher=first.teacher,
        seed=first.seed,
        metadata=dict(first.metadata),
    )
