"""PEARL's Cross-task Preference Alignment (Liu et al., ICML 2024, arXiv 2306.03615).

Labelled source-task segments and unlabelled target-task segments are embedded as feature
vectors; each task gets an intra-task distance matrix (C1 over source items, C2 over target
items, each divided by its max). Gromov-Wasserstein between (C1, p) and (C2, q) with uniform
marginals gives a coupling ``T [n_src, n_tgt]`` that matches items playing the same role in
both tasks without comparing them across tasks. A target pair (i, j) then gets the soft label

    z(i, j) = sum_{(k,l,y) labelled} [T_ki T_lj y + T_li T_kj (1 - y)]
              / sum_{(k,l,y) labelled} [T_ki T_lj + T_li T_kj]

(each labelled source pair is counted in both orders, so the rule is symmetric:
z(j, i) = 1 - z(i, j)). The denominator is the coupling mass that reaches labelled pairs; we
report it and turn it into a per-query confidence (see ``docs/decisions.md``).

Fused GW (``method: fgw``, Vayer et al. 2019) adds a cross-task feature cost ``M[source item,
target item]`` on *shared, direction-invariant* features (``cross_feature``, default
``progress``: hand-object and object-goal distances and speeds of the Meta-World observation),
weighted ``1 - alpha``. Pure GW is invariant to isometries of the structure, so it cannot tell
"open" from "close"; the feature term decides the orientation (``docs/decisions.md``).
``method: auto`` (the default) averages fixed label-free transfers (``auto.mode: blend``,
``robopref.transfer.blend``: a Bradley-Terry utility on ``progress`` and fused GW on
``progress`` and ``slow`` features), or picks ``alpha``, ``epsilon`` and the cross feature
without target labels (``auto.mode: select``, :func:`select_config`).

Baselines from the paper's table (our reading, see ``docs/decisions.md``):
``sim`` (PT+Sim) copies the label of the nearest labelled source pair in a shared feature
space; ``dis`` (PT+Dis) averages all source labels weighted by exp(-distance / temperature).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from robopref.config import Seed, StrictModel
from robopref.data import DataValidationError, PreferenceQueries, TrajectoryDataset
from robopref.ot import entropic_fused_gromov_wasserstein, entropic_gromov_wasserstein

TransferMethod = Literal["auto", "gw", "fgw", "sim", "dis"]
Feature = Literal["flat", "mean_std", "resampled", "motion", "progress", "reward"]
FEATURES: tuple[str, ...] = ("flat", "mean_std", "resampled", "motion", "progress", "reward")
# cross-task features may also be ``slow``: a temporal encoder fitted on both tasks (slow.py)
CrossFeature = Literal["flat", "mean_std", "resampled", "motion", "progress", "reward", "slow"]
# An embedding of segments by the source reward model: (dataset, items) -> [N, F]. Built by the
# caller (robopref.methods.pearl), since transfer may not import rewards.
Embedder = Callable[[TrajectoryDataset, "Items"], np.ndarray]


class ObsLayout(StrictModel):
    """Where the shared quantities of the ``progress`` feature live in the state vector
    (``[start, stop)`` index ranges). Defaults: Meta-World's 39-d observation (hand xyz,
    gripper, first object xyz, goal xyz)."""

    hand: tuple[int, int] = (0, 3)
    """Hand position (xyz)."""
    gripper: int | None = 3
    """Gripper opening (None: not in the state)."""
    object: tuple[int, int] = (4, 7)
    """First object's position (xyz)."""
    goal: tuple[int, int] | None = (36, 39)
    """Goal position (xyz; None: not in the state)."""


class BlendMember(StrictModel):
    """One member of the ``auto`` blend: ``bt`` (a linear Bradley-Terry utility on the cross
    feature, fitted on the source labels) or ``fgw`` (fused GW at this alpha and epsilon)."""

    kind: Literal["bt", "fgw"]
    """``bt`` or ``fgw``."""
    cross_feature: CrossFeature = "progress"
    """The shared cross-task feature (``slow``: the label-free temporal encoder)."""
    alpha: float = Field(0.8, ge=0.0, le=1.0)
    """``fgw``: weight of the structure term."""
    epsilon: float = Field(0.05, gt=0.0)
    """``fgw``: entropic regularisation."""


def _default_members() -> list[BlendMember]:
    return [
        BlendMember(kind="bt", cross_feature="progress"),
        BlendMember(kind="fgw", cross_feature="progress", alpha=0.8, epsilon=0.05),
        BlendMember(kind="fgw", cross_feature="slow", alpha=0.8, epsilon=0.05),
    ]


class AutoConfig(StrictModel):
    """``method: auto``: the mean of fixed label-free transfers (``mode: blend``, the default),
    or one fused-GW setting of a grid chosen without target labels (``mode: select``,
    :func:`select_config`)."""

    mode: Literal["blend", "select"] = "blend"
    """``blend`` (mean of ``members``) or ``select`` (the grid below and ``criterion``)."""
    members: list[BlendMember] = Field(default_factory=_default_members, min_length=1)
    """``blend``: the transfers averaged (defaults chosen on the PEARL families study)."""

    alphas: list[float] = Field(default_factory=lambda: [0.5, 0.8, 0.95])
    """Values of ``alpha`` tried."""
    epsilons: list[float] = Field(default_factory=lambda: [0.02, 0.05])
    """Values of ``epsilon`` tried."""
    cross_features: list[Feature] = Field(default_factory=lambda: ["progress", "motion"])
    """Values of ``cross_feature`` tried."""
    criterion: Literal["half_source", "cycle", "mass"] = "half_source"
    """How a setting is scored without target labels."""
    split_seed: Seed = 0
    """Seed of the source-label split of the ``half_source`` criterion."""


class TransferConfig(StrictModel):
    """How labels move from the source task to the target task.

    ``feature`` builds the intra-task structures (C1, C2; also the shared space of ``sim`` /
    ``dis``), ``cross_feature`` the cross-task cost ``M`` of ``fgw`` (``alpha`` weights the
    structure term: 1 = GW, 0 = OT on ``M``). Features: ``flat`` (every step), ``mean_std``,
    ``resampled`` (the state sequence linearly resampled at ``resample_points`` times),
    ``motion`` (per-dimension |displacement| and mean |velocity|: direction-invariant),
    ``progress`` (hand-object / object-goal distances and speeds, :class:`ObsLayout`),
    ``reward`` (embedding by a reward model fitted on the source labels; needs an embedder).
    """

    method: TransferMethod = "auto"
    """How the labels move (``auto``: label-free, see :class:`AutoConfig`)."""
    feature: Feature = "mean_std"
    """Feature of the intra-task structures (C1, C2)."""
    cross_feature: Feature = "progress"
    """Feature of the cross-task cost ``M`` of ``fgw``."""
    include_actions: bool = True
    """Features include the actions, not only the states."""
    standardize: bool = True
    """Standardise each feature dimension before computing distances."""
    epsilon: float = 0.02
    """Entropic GW regularisation, relative to costs scaled to [0, 1]."""
    alpha: float = 0.5
    """``fgw``: weight of the structure (GW) term (1: GW, 0: OT on the cross-task cost)."""
    max_iter: int = 300
    """Maximum outer iterations of the solver."""
    tol: float | None = None
    """Stopping tolerance; None: the solver's default stopping rule (robopref.ot)."""
    label_rule: Literal["pairs", "scores"] = "pairs"
    """How a coupling turns into target labels: by transported pair labels or by scores."""
    temperature: float = 0.05
    """For method ``dis``, in units of the max cross-task distance."""
    resample_points: int = 5
    """Points of the ``resampled`` feature."""
    layout: ObsLayout = Field(default_factory=ObsLayout)
    """Where the ``progress`` feature finds hand, object and goal in the state."""
    auto: AutoConfig = Field(default_factory=AutoConfig)
    """The grid and criterion of ``method: auto``."""

    @field_validator("alpha")
    @classmethod
    def _alpha_in_unit(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"expected a number in [0, 1], found {v}")
        return v


@dataclass
class Items:
    """The distinct segments referenced by a set of queries, and where each query item points."""

    traj_index: np.ndarray  # [N]
    start: np.ndarray  # [N]
    length: np.ndarray  # [N]
    inverse: np.ndarray  # [Q, K] item id of each query item


def unique_items(queries: PreferenceQueries) -> Items:
    keys = np.stack([queries.traj_index, queries.start, queries.length], axis=-1).reshape(-1, 3)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    return Items(uniq[:, 0], uniq[:, 1], uniq[:, 2], inverse.reshape(queries.traj_index.shape))


def segment_features(
    dataset: TrajectoryDataset,
    items: Items,
    feature: str = "flat",
    include_actions: bool = True,
    *,
    points: int = 5,
    layout: ObsLayout | None = None,
    embedder: Embedder | None = None,
) -> np.ndarray:
    """``[N, F]`` features of the items' state(-action) segments.

    ``flat`` concatenates every step (segments must share one length); ``mean_std`` is the
    per-dimension mean and std over the segment plus its first and last state; ``resampled``
    the sequence linearly interpolated at ``points`` evenly spaced times (any lengths);
    ``motion`` per-dimension |last - first| and mean |step| (direction-invariant);
    ``progress`` distances and speeds of :class:`ObsLayout` (states only); ``reward`` calls
    ``embedder(dataset, items)``.
    """
    if feature == "reward":
        if embedder is None:
            raise ValueError(
                "feature 'reward' needs an embedder (a reward model fitted on the source labels)"
            )
        return np.asarray(embedder(dataset, items), dtype=np.float64)
    if feature not in FEATURES:
        raise ValueError(f"unknown segment feature '{feature}': expected one of {FEATURES}")
    layout = layout or ObsLayout()
    rows = []
    for t, s, h in zip(items.traj_index, items.start, items.length):
        traj = dataset[int(t)]
        st = traj.state[s : s + h].astype(np.float64)
        if feature == "progress":
            rows.append(_progress(st, layout))
            continue
        x = st
        if include_actions:
            x = np.concatenate([x, traj.actions[s : s + h].astype(np.float64)], axis=1)
        if feature == "flat":
            rows.append(x.reshape(-1))
        elif feature == "mean_std":
            rows.append(np.concatenate([x.mean(0), x.std(0), x[0], x[-1]]))
        elif feature == "resampled":
            rows.append(_resample(x, points).reshape(-1))
        else:  # motion
            step = np.abs(np.diff(x, axis=0)).mean(0) if len(x) > 1 else np.zeros(x.shape[1])
            rows.append(np.concatenate([np.abs(x[-1] - x[0]), step]))
    if feature == "flat" and len({len(r) for r in rows}) > 1:
        raise DataValidationError("segment_features: feature 'flat' needs segments of one length")
    return np.stack(rows)


def _resample(x: np.ndarray, points: int) -> np.ndarray:
    """``[points, D]``: ``x [H, D]`` linearly interpolated at ``points`` evenly spaced times."""
    if points < 2:
        raise ValueError(f"resample_points: expected >= 2, found {points}")
    src = np.linspace(0.0, 1.0, len(x)) if len(x) > 1 else np.zeros(1)
    dst = np.linspace(0.0, 1.0, points)
    return np.stack([np.interp(dst, src, x[:, d]) for d in range(x.shape[1])], axis=1)


def _progress(st: np.ndarray, layout: ObsLayout) -> np.ndarray:
    """Direction-invariant task progress of one segment ``st [H, obs_dim]``: hand-object and
    object-goal distances (first, last, mean, last - first), hand and object speeds, gripper
    opening (mean)."""
    dim = st.shape[1]
    for name, rng in (("hand", layout.hand), ("object", layout.object), ("goal", layout.goal)):
        if rng is not None and not 0 <= rng[0] < rng[1] <= dim:
            raise DataValidationError(
                f"transfer.layout.{name}: expected an index range within the {dim}-d state, "
                f"found {list(rng)}"
            )
    hand, obj = st[:, slice(*layout.hand)], st[:, slice(*layout.object)]
    dists = [np.linalg.norm(hand - obj, axis=1)]
    if layout.goal is not None:
        dists.append(np.linalg.norm(obj - st[:, slice(*layout.goal)], axis=1))
    out = []
    for d in dists:
        out += [d[0], d[-1], d.mean(), d[-1] - d[0]]
    for pos in (hand, obj):
        v = np.linalg.norm(np.diff(pos, axis=0), axis=1) if len(pos) > 1 else np.zeros(1)
        out.append(v.mean())
    if layout.gripper is not None and layout.gripper < dim:
        out.append(st[:, layout.gripper].mean())
    return np.asarray(out)


def standardize(features: np.ndarray) -> np.ndarray:
    """Z-score each feature over the items; constant features (e.g. a fixed goal) become 0."""
    std = features.std(0)
    return (features - features.mean(0)) / np.where(std > 1e-8, std, 1.0)


def pairwise_distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances ``[N, M]`` between rows of x and y (y = x by default)."""
    y = x if y is None else y
    sq = (x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def normalized(c: np.ndarray) -> np.ndarray:
    m = c.max()
    return c / m if m > 0 else c


def pair_labels(queries: PreferenceQueries) -> np.ndarray:
    """``[Q]`` y = P(item 0 preferred) of labelled pair queries."""
    if queries.k != 2:
        raise DataValidationError(f"source queries: expected pairs (K = 2), found K = {queries.k}")
    if queries.label_kind == "none":
        raise DataValidationError(
            "source queries: field 'labels': expected labelled queries, found none"
        )
    return queries.pair_probability()


def transfer_through_coupling(
    coupling: np.ndarray, src_pairs: np.ndarray, src_y: np.ndarray, tgt_pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the CPA label rule.

    Args:
        coupling: ``T [n_src, n_tgt]``.
        src_pairs: ``[Qs, 2]`` source item ids (k, l) of labelled pairs; src_y ``[Qs]`` P(k > l).
        tgt_pairs: ``[Qt, 2]`` target item ids (i, j).

    Returns:
        ``(y [Qt], mass [Qt])``: transferred P(i > j) and the coupling mass on labelled pairs,
        as a fraction of the total mass ``q_i q_j`` of the two target items.
    """
    # The sums over labelled pairs factor through two source-item matrices, so the rule costs
    # O(n_src^2 n_tgt) instead of O(Qs Qt) memory and time:
    #   num_ij = sum_p y_p T_kp,i T_lp,j + (1 - y_p) T_lp,i T_kp,j = (T^T W T)_ij
    # with W[k, l] += y_p and W[l, k] += 1 - y_p; den likewise with the pair counts.
    n = coupling.shape[0]
    ka, kb = src_pairs[:, 0], src_pairs[:, 1]
    w = np.zeros((n, n))
    np.add.at(w, (ka, kb), src_y)
    np.add.at(w, (kb, ka), 1.0 - src_y)
    c = np.zeros((n, n))
    np.add.at(c, (ka, kb), 1.0)
    c = c + c.T
    ti, tj = tgt_pairs[:, 0], tgt_pairs[:, 1]
    num = ((w @ coupling[:, tj]) * coupling[:, ti]).sum(0)
    den = ((c @ coupling[:, tj]) * coupling[:, ti]).sum(0)
    col = coupling.sum(0)
    total = col[ti] * col[tj]
    labels = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5)
    return labels, den / np.where(total > 0, total, 1.0)


def source_item_scores(
    n_items: int, pairs: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 500
) -> np.ndarray:
    """Bradley-Terry utilities ``[n_items]`` fitted to soft pair labels by gradient descent."""
    u = np.zeros(n_items)
    lr = 1.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(u[pairs[:, 0]] - u[pairs[:, 1]])))
        g = np.zeros(n_items)
        np.add.at(g, pairs[:, 0], p - y)
        np.add.at(g, pairs[:, 1], y - p)
        counts = np.bincount(pairs.reshape(-1), minlength=n_items) + 1.0
        u -= lr * (g / counts + l2 * u)
    return u


def _task_features(dataset, items, feature, config: TransferConfig, embedder) -> np.ndarray:
    return segment_features(
        dataset, items, feature, config.include_actions, points=config.resample_points,
        layout=config.layout, embedder=embedder,
    )  # fmt: skip


def _joint_standardize(xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score with the mean / std of both item sets together (keeps cross-task distances
    meaningful, unlike a per-task z-score that would erase a shift between the tasks)."""
    if xs.shape[1] != xt.shape[1]:
        raise DataValidationError(
            f"cross-task features: expected equal sizes, found {xs.shape[1]} (source) vs "
            f"{xt.shape[1]} (target)"
        )
    z = standardize(np.concatenate([xs, xt]))
    return z[: len(xs)], z[len(xs) :]


def _cross_features(source, src_items, target, tgt_items, feature, config, embedder):
    """Jointly standardised cross-task features of the source and target items."""
    if feature == "slow":
        from robopref.transfer.slow import slow_features

        return slow_features(
            source, src_items, target, tgt_items, include_actions=config.include_actions
        )
    return _joint_standardize(
        _task_features(source, src_items, feature, config, embedder),
        _task_features(target, tgt_items, feature, config, embedder),
    )


def coupling_for(
    xs: np.ndarray,
    xt: np.ndarray,
    M: np.ndarray | None,
    method: str,
    epsilon: float,
    alpha: float,
    config: TransferConfig,
) -> np.ndarray:
    """``T [n_src, n_tgt]``: entropic GW on the structures of ``xs``, ``xt`` (``method`` gw),
    or fused GW with the cross-task cost ``M`` (``fgw``); uniform marginals, costs / max."""
    c1, c2 = normalized(pairwise_distances(xs)), normalized(pairwise_distances(xt))
    p, q = np.full(len(xs), 1.0 / len(xs)), np.full(len(xt), 1.0 / len(xt))
    kw = {"max_iter": config.max_iter, "tol": config.tol}
    with warnings.catch_warnings():
        # a budget-limited coupling is still a coupling (rows exact); the accuracy says the rest
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "gw" or M is None or alpha == 1.0:
            T = entropic_gromov_wasserstein(c1, c2, p, q, epsilon, **kw)
        else:
            T = entropic_fused_gromov_wasserstein(M, c1, c2, p, q, epsilon, alpha, **kw)
    T = np.asarray(T, dtype=np.float64)
    if not np.isfinite(T).all():
        raise FloatingPointError("GW coupling is not finite: raise transfer.epsilon")
    return T


def labels_from_coupling(coupling, src_pairs, src_y, tgt_pairs, rule: str):
    """The CPA label rule (``pairs``) or source Bradley-Terry scores moved along the coupling
    (``scores``); returns ``(y [Qt], mass [Qt])``."""
    if rule == "pairs":
        return transfer_through_coupling(coupling, src_pairs, src_y, tgt_pairs)
    u_src = source_item_scores(coupling.shape[0], src_pairs, src_y)
    u_tgt = (coupling.T @ u_src) / coupling.sum(0)
    y = 1.0 / (1.0 + np.exp(-(u_tgt[tgt_pairs[:, 0]] - u_tgt[tgt_pairs[:, 1]])))
    return y, np.ones(len(y))


def _pair_accuracy(y: np.ndarray, truth: np.ndarray) -> float:
    decided = truth != 0.5
    if not decided.any():
        return float("nan")
    right = np.where(y[decided] == 0.5, 0.5, ((y[decided] > 0.5) == (truth[decided] > 0.5)))
    return float(np.mean(right))


@dataclass
class Candidate:
    """One setting of the ``auto`` grid and its label-free score."""

    cross_feature: str
    alpha: float
    epsilon: float
    score: float = float("nan")


def select_config(
    xs: np.ndarray,
    xt: np.ndarray,
    cross: dict[str, tuple[np.ndarray, np.ndarray]],
    src_pairs: np.ndarray,
    src_y: np.ndarray,
    tgt_pairs: np.ndarray,
    config: TransferConfig,
) -> tuple[Candidate, list[Candidate]]:
    """Label-free choice of ``(cross_feature, alpha, epsilon)`` for ``method: auto``.

    Criteria (``config.auto.criterion``), none of which reads a target label:

    * ``half_source`` (default): split the source items at random into halves A and B; move
      the labels of pairs within A to pairs within B with the candidate setting (structure of A
      vs B, cross cost A x B) and score them against B's own source labels. It measures how
      well a setting carries labels between two item sets of one task; orientation between
      tasks is left to the direction-invariant cross features (``docs/decisions.md``).
    * ``cycle``: source -> target -> source: the transferred target labels are moved back with
      the transposed coupling and scored against the source labels.
    * ``mass``: mean coupling mass on labelled source pairs times label sharpness |2 y - 1|.

    Ties go to the earlier grid entry. Returns the chosen candidate and all scored ones.
    """
    auto = config.auto
    cands = [
        Candidate(f, a, e)
        for f in auto.cross_features
        for a in auto.alphas
        for e in auto.epsilons
        if not (a == 1.0 and f != auto.cross_features[0])  # GW ignores the cross feature
    ]
    if auto.criterion == "half_source":
        rng = np.random.default_rng(auto.split_seed)
        half = rng.permutation(len(xs)) < len(xs) // 2  # True: A, False: B
        in_a = half[src_pairs].all(1)
        in_b = (~half[src_pairs]).all(1)
        ia, ib = np.flatnonzero(half), np.flatnonzero(~half)
        remap = np.full(len(xs), -1)
        remap[ia], remap[ib] = np.arange(len(ia)), np.arange(len(ib))
        pa, pb = remap[src_pairs[in_a]], remap[src_pairs[in_b]]
    for c in cands:
        ms, mt = cross[c.cross_feature]
        if auto.criterion == "half_source":
            M = normalized(pairwise_distances(ms[ia], ms[ib]))
            T = coupling_for(xs[ia], xs[ib], M, "fgw", c.epsilon, c.alpha, config)
            y, _ = labels_from_coupling(T, pa, src_y[in_a], pb, config.label_rule)
            c.score = _pair_accuracy(y, src_y[in_b])
            continue
        M = normalized(pairwise_distances(ms, mt))
        T = coupling_for(xs, xt, M, "fgw", c.epsilon, c.alpha, config)
        y, mass = labels_from_coupling(T, src_pairs, src_y, tgt_pairs, config.label_rule)
        if auto.criterion == "cycle":
            y_back, _ = labels_from_coupling(T.T, tgt_pairs, y, src_pairs, config.label_rule)
            c.score = _pair_accuracy(y_back, src_y)
        else:
            c.score = float(np.mean(mass * np.abs(2.0 * y - 1.0)))
    best = max(cands, key=lambda c: np.nan_to_num(c.score, nan=-1.0))
    return best, cands


def transfer_labels(
    source: TrajectoryDataset,
    source_queries: PreferenceQueries,
    target: TrajectoryDataset,
    target_queries: PreferenceQueries,
    config: TransferConfig,
    embedder: Embedder | None = None,
) -> tuple[PreferenceQueries, dict]:
    """Label ``target_queries`` (pairs, unlabelled) from ``source_queries`` (labelled pairs).

    ``embedder`` (optional) embeds segments with a reward model fitted on the source labels;
    it is needed when a feature is ``reward``. Returns soft-pair :class:`PreferenceQueries`
    with a per-query confidence, and a dict of diagnostics (coupling entropy, transferred
    mass, the setting chosen by ``auto`` and the scores of its grid).
    """
    src_y = pair_labels(source_queries)
    if target_queries.k != 2:
        raise DataValidationError(
            f"target queries: expected pairs (K = 2), found K = {target_queries.k}"
        )
    src_items, tgt_items = unique_items(source_queries), unique_items(target_queries)
    xs = _task_features(source, src_items, config.feature, config, embedder)
    xt = _task_features(target, tgt_items, config.feature, config, embedder)
    if config.standardize:
        xs, xt = standardize(xs), standardize(xt)
    src_pairs, tgt_pairs = src_items.inverse, tgt_items.inverse
    info: dict = {"n_source_items": len(xs), "n_target_items": len(xt), "method": config.method}

    if config.method == "auto" and config.auto.mode == "blend":
        from robopref.transfer.blend import blend_labels

        cross = {}
        for f in dict.fromkeys(m.cross_feature for m in config.auto.members):
            cross[f] = _cross_features(source, src_items, target, tgt_items, f, config, embedder)
        y, mass, _ = blend_labels(xs, xt, cross, src_pairs, src_y, tgt_pairs, config)
        info["auto_members"] = [m.model_dump() for m in config.auto.members]
    elif config.method in ("gw", "fgw", "auto"):
        method, alpha, eps, M = config.method, config.alpha, config.epsilon, None
        feats = [config.cross_feature] if method == "fgw" else []
        if method == "auto":
            feats = list(dict.fromkeys(config.auto.cross_features))
        cross = {}
        for f in feats:
            cross[f] = _cross_features(source, src_items, target, tgt_items, f, config, embedder)
        if method == "auto":
            best, cands = select_config(xs, xt, cross, src_pairs, src_y, tgt_pairs, config)
            info["auto_grid"] = [vars(c) for c in cands]
            info.update(
                auto_cross_feature=best.cross_feature, auto_alpha=best.alpha,
                auto_epsilon=best.epsilon, auto_score=best.score,
            )  # fmt: skip
            method, alpha, eps = "fgw", best.alpha, best.epsilon
            feats = [best.cross_feature]
        if method == "fgw":
            M = normalized(pairwise_distances(*cross[feats[0]]))
        coupling = coupling_for(xs, xt, M, method, eps, alpha, config)
        y, mass = labels_from_coupling(coupling, src_pairs, src_y, tgt_pairs, config.label_rule)
        nz = coupling[coupling > 0] / coupling.sum()
        info["coupling_entropy"] = float(-(nz * np.log(nz)).sum())
    else:
        if xs.shape[1] != xt.shape[1]:
            raise DataValidationError(
                f"transfer method '{config.method}' compares items across tasks: expected equal feature sizes, "
                f"found {xs.shape[1]} (source) vs {xt.shape[1]} (target)"
            )
        d = normalized(pairwise_distances(xs, xt))  # [n_src, n_tgt]
        direct = (
            d[src_pairs[:, 0]][:, tgt_pairs[:, 0]] + d[src_pairs[:, 1]][:, tgt_pairs[:, 1]]
        )  # [Qs, Qt]
        swapped = d[src_pairs[:, 1]][:, tgt_pairs[:, 0]] + d[src_pairs[:, 0]][:, tgt_pairs[:, 1]]
        cost = np.concatenate([direct, swapped])  # [2 Qs, Qt]
        lab = np.concatenate([src_y, 1.0 - src_y])[:, None]
        if config.method == "sim":
            best = cost.argmin(0)
            y = lab[best, 0]
            mass = np.exp(-cost.min(0))
        else:
            w = np.exp(-(cost - cost.min(0)) / config.temperature)
            y = (w * lab).sum(0) / w.sum(0)
            mass = w.max(0) / w.sum(0)
    confidence = mass / mass.max() if mass.max() > 0 else np.ones_like(mass)
    info["mean_mass"] = float(mass.mean())
    labels = np.stack([y, 1.0 - y], axis=1).clip(0.0, 1.0)
    meta_info = {k: v for k, v in info.items() if k not in ("method", "auto_grid", "auto_members")}
    out = PreferenceQueries(
        target_queries.traj_index,
        target_queries.start,
        target_queries.length,
        labels,
        target_queries.mask,
        confidence,
        "soft_pair",
        f"transfer:{config.method}",
        -1,
        {"transfer": config.model_dump(), **meta_info},
    )
    return out, info


def sample_pool_pairs(
    dataset: TrajectoryDataset,
    pool_size: int,
    num_queries: int,
    segment_length: int,
    rng: np.random.Generator,
) -> PreferenceQueries:
    """Unlabelled pairs drawn among a pool of ``pool_size`` random segments.

    CPA transfers a label through pairs of source items that are both coupled to the target
    pair, so labelled source pairs must be dense among the source items: drawing many pairs from
    a small pool (rather than each pair from fresh segments) is what makes the coupling mass on
    labelled pairs large enough to trust.
    """
    lengths = np.array([len(t) for t in dataset])
    eligible = np.flatnonzero(lengths >= segment_length)
    if len(eligible) == 0 or pool_size < 2:
        raise DataValidationError(
            f"sample_pool_pairs: expected pool_size >= 2 and trajectories of >= {segment_length} steps"
        )
    traj = rng.choice(eligible, size=pool_size)
    start = rng.integers(0, lengths[traj] - segment_length + 1)
    first = rng.integers(0, pool_size, size=num_queries)
    second = (
        first + rng.integers(1, pool_size, size=num_queries)
    ) % pool_size  # never the same item
    idx = np.stack([first, second], axis=1)
    return PreferenceQueries(traj[idx], start[idx], segment_length)


def label_accuracy(predicted: PreferenceQueries, reference: PreferenceQueries) -> float:
    """Agreement of predicted pair labels with reference labels on queries where the reference
    is not a tie (same query order; ties in the prediction count as half right)."""
    p, r = predicted.pair_probability(), reference.pair_probability()
    decided = r != 0.5
    if not decided.any():
        return float("nan")
    agree = np.where(
        p[decided] == 0.5, 0.5, ((p[decided] > 0.5) == (r[decided] > 0.5)).astype(float)
    )
    return float(agree.mean())
