"""Preference queries over trajectory segments: K-item lists with graded or soft labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from robopref.data.trajectory import DataValidationError, TrajectoryDataset, _check

LabelKind = Literal["graded", "soft_pair", "none"]


@dataclass(repr=False)
class PreferenceQueries:
    """Q queries of K items each; item (q, k) is the segment
    ``dataset[traj_index[q, k]].slice(start[q, k], length[q, k])``.

    Labels:
        * ``label_kind == "graded"``: ``labels[q, k]`` is a score psi_k, higher is preferred;
          equal scores are ties. Works for any K (pairs and ranked lists).
        * ``label_kind == "soft_pair"`` (K = 2 only): ``labels[q, 0] = y = P(item 0 preferred)``
          and ``labels[q, 1] = 1 - y``; a tie is ``y = 0.5``.
        * ``label_kind == "none"``: not labelled yet (labels are NaN).

    Attributes:
        traj_index, start, length: ``[Q, K]`` int64.
        labels: ``[Q, K]`` float64.
        mask: ``[Q, K]`` bool, False for padding items of ragged lists.
        confidence: ``[Q]`` float64 in [0, 1] (1 for a simulated oracle; the transferred mass for
            PEARL's transferred labels; 0 means "can't tell").
        teacher: name of who produced the labels; ``seed`` the seed they used.
    """

    traj_index: np.ndarray
    start: np.ndarray
    length: np.ndarray
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None
    label_kind: LabelKind = "none"
    teacher: str = ""
    seed: int = -1
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.traj_index = np.asarray(self.traj_index, dtype=np.int64)
        self.start = np.asarray(self.start, dtype=np.int64)
        ti = self.traj_index
        _check(
            ti.ndim == 2 and ti.shape[1] >= 2,
            "PreferenceQueries",
            "traj_index",
            "[Q, K] with K >= 2",
            f"shape {ti.shape}",
        )
        Q, K = ti.shape
        length = np.asarray(self.length, dtype=np.int64)
        try:
            self.length = np.broadcast_to(length, (Q, K)).copy()
        except ValueError:
            _check(False, "PreferenceQueries", "length", f"a scalar or shape ({Q}, {K})",
                   f"shape {length.shape}")  # fmt: skip
        if self.labels is None:
            self.labels = np.full((Q, K), np.nan)
        self.labels = np.asarray(self.labels, dtype=np.float64)
        if self.mask is None:
            self.mask = np.ones((Q, K), dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.confidence is None:
            self.confidence = np.ones(Q)
        self.confidence = np.asarray(self.confidence, dtype=np.float64)
        self.validate()

    @property
    def num_queries(self) -> int:
        return self.traj_index.shape[0]

    @property
    def k(self) -> int:
        return self.traj_index.shape[1]

    def __len__(self) -> int:
        return self.num_queries

    def __repr__(self) -> str:
        """One line: how many queries of K items, how many labelled, by whom, segment
        lengths; never the arrays."""
        parts = [
            f"num_queries={self.num_queries}",
            f"k={self.k}",
            f"label_kind={self.label_kind!r}",
        ]
        mask = np.asarray(self.mask, dtype=bool)
        if self.label_kind != "none" and self.num_queries:
            finite = np.isfinite(self.labels) | ~mask
            parts.append(f"labelled={int(finite.all(axis=1).sum())}")
        if self.teacher:
            parts.append(f"teacher={self.teacher!r}")
        if self.seed >= 0:
            parts.append(f"seed={self.seed}")
        lengths = np.unique(self.length[mask]) if mask.any() else np.array([], dtype=np.int64)
        if len(lengths) == 1:
            parts.append(f"segment_length={int(lengths[0])}")
        elif len(lengths) > 1:
            parts.append(f"segment_length={int(lengths[0])}..{int(lengths[-1])}")
        return f"PreferenceQueries({', '.join(parts)})"

    def validate(
        self, source: str = "PreferenceQueries", dataset: TrajectoryDataset | None = None
    ) -> None:
        """Check shapes, label ranges and (given ``dataset``) that every segment lies inside its
        trajectory. Raises :class:`DataValidationError` naming the field."""
        ti = self.traj_index
        _check(
            ti.ndim == 2 and ti.shape[1] >= 2,
            source,
            "traj_index",
            "[Q, K] with K >= 2",
            f"shape {ti.shape}",
        )
        Q, K = ti.shape
        for name in ("start", "length", "labels", "mask"):
            arr = getattr(self, name)
            _check(arr.shape == (Q, K), source, name, f"shape ({Q}, {K})", f"shape {arr.shape}")
        _check(
            self.confidence.shape == (Q,),
            source,
            "confidence",
            f"shape ({Q},)",
            f"shape {self.confidence.shape}",
        )
        c = self.confidence
        if Q and not np.all((c >= 0) & (c <= 1)):
            _check(
                False, source, "confidence", "values in [0, 1]", f"values in [{c.min()}, {c.max()}]"
            )
        _check(
            self.label_kind in ("graded", "soft_pair", "none"),
            source,
            "label_kind",
            "'graded', 'soft_pair' or 'none'",
            repr(self.label_kind),
        )
        _check(
            bool((self.mask.sum(1) >= 2).all()) if Q else True,
            source,
            "mask",
            ">= 2 valid items per query",
            f"min {int(self.mask.sum(1).min()) if Q else 0}",
        )
        _check(
            bool((self.length[self.mask] > 0).all()),
            source,
            "length",
            "positive segment lengths",
            "a length <= 0",
        )
        _check(
            bool((self.start[self.mask] >= 0).all()),
            source,
            "start",
            "non-negative starts",
            "a negative start",
        )
        if self.label_kind == "soft_pair":
            _check(K == 2, source, "labels", "K = 2 for soft pair labels", f"K = {K}")
            y = self.labels
            if Q and not (np.all((y >= 0) & (y <= 1)) and np.allclose(y.sum(1), 1.0)):
                _check(
                    False,
                    source,
                    "labels",
                    "probabilities in [0, 1] with labels[:, 0] + labels[:, 1] = 1",
                    f"values in [{y.min()}, {y.max()}], max |sum - 1| = {np.abs(y.sum(1) - 1).max()}",
                )
        elif self.label_kind == "graded":
            bad = int((~np.isfinite(self.labels[self.mask])).sum())
            _check(bad == 0, source, "labels", "finite graded scores", f"{bad} NaN/inf value(s)")
        if dataset is not None:
            check_segments(self, [len(t) for t in dataset.trajectories], source)

    def subset(self, idx: np.ndarray) -> PreferenceQueries:
        """Queries ``idx`` (an index or boolean array over Q) as a new object."""
        return PreferenceQueries(
            self.traj_index[idx],
            self.start[idx],
            self.length[idx],
            self.labels[idx],
            self.mask[idx],
            self.confidence[idx],
            self.label_kind,
            self.teacher,
            self.seed,
            dict(self.metadata),
        )

    def preferred_index(self) -> np.ndarray:
        """``[Q]`` index of the most preferred item of each query (first one on ties)."""
        lab = np.where(self.mask, self.labels, -np.inf)
        return np.argmax(lab, axis=1)

    def pair_probability(self) -> np.ndarray:
        """``[Q]`` P(item 0 preferred over item 1) for K = 2 (graded labels: 1, 0 or 0.5 on ties)."""
        if self.k != 2:
            raise ValueError("pair_probability needs K = 2 queries")
        if self.label_kind == "soft_pair":
            return self.labels[:, 0].copy()
        d = self.labels[:, 0] - self.labels[:, 1]
        return np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))


def check_segments(queries: PreferenceQueries, lengths: Sequence[int], source: str) -> None:
    """Check that every valid item of ``queries`` is a segment inside its trajectory.

    Args:
        queries: the queries to check.
        lengths: ``[N]`` number of steps of each trajectory of the dataset the queries index.
        source: prefix of the error message (a file name or an object name).

    Raises:
        DataValidationError: naming ``traj_index`` (index outside ``[0, N)``) or
            ``start/length`` (a segment running past the end of its trajectory).
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    n = len(lengths)
    ti = queries.traj_index[queries.mask]
    if ti.size == 0:
        return
    _check(
        bool(((ti >= 0) & (ti < n)).all()),
        source,
        "traj_index",
        f"indices in [0, {n})",
        f"range [{ti.min()}, {ti.max()}]",
    )
    ends = (queries.start + queries.length)[queries.mask]
    ok = ends <= lengths[ti]
    if not ok.all():
        q, k = (int(a[0]) for a in np.nonzero(queries.mask & ~_inside(queries, lengths)))
        _check(
            False,
            source,
            "start/length",
            "segments inside their trajectory",
            f"{int((~ok).sum())} segment(s) running past the end, e.g. query {q} item {k}: "
            f"[{queries.start[q, k]}, {queries.start[q, k] + queries.length[q, k]}) in "
            f"trajectory {queries.traj_index[q, k]} of {lengths[queries.traj_index[q, k]]} steps",
        )


def _inside(queries: PreferenceQueries, lengths: np.ndarray) -> np.ndarray:
    """``[Q, K]`` bool: the item ends inside its trajectory (padding items count as inside)."""
    ti = np.where(queries.mask, queries.traj_index, 0)
    return ~queries.mask | (queries.start + queries.length <= lengths[ti])


def segment_rewards(
    dataset: TrajectoryDataset, queries: PreferenceQueries, key: str = "rewards"
) -> list[list[np.ndarray]]:
    """Per-step arrays of each query item (``[Q][K]`` lists of ``[H]`` arrays; padding gives [])."""
    out = []
    for q in range(queries.num_queries):
        row = []
        for k in range(queries.k):
            if not queries.mask[q, k]:
                row.append(np.zeros(0))
                continue
            t = dataset[int(queries.traj_index[q, k])]
            s, h = int(queries.start[q, k]), int(queries.length[q, k])
            row.append(getattr(t, key)[s : s + h])
        out.append(row)
    return out


def sample_queries(
    dataset: TrajectoryDataset,
    num_queries: int,
    k: int = 2,
    segment_length: int = 25,
    rng: np.random.Generator | None = None,
    trajectory_ids: np.ndarray | None = None,
) -> PreferenceQueries:
    """Uniformly sample ``num_queries`` unlabelled K-item queries of fixed-length segments.

    Items of one query come from distinct trajectories when enough are available. Trajectories
    shorter than ``segment_length`` are never used.
    """
    if k < 2:
        raise DataValidationError(f"sample_queries: field 'k': expected K >= 2, found {k}")
    if segment_length < 1:
        raise DataValidationError(
            f"sample_queries: field 'segment_length': expected >= 1, found {segment_length}"
        )
    if num_queries < 0:
        raise DataValidationError(
            f"sample_queries: field 'num_queries': expected >= 0, found {num_queries}"
        )
    rng = rng if rng is not None else np.random.default_rng()
    ids = (
        np.arange(len(dataset))
        if trajectory_ids is None
        else np.asarray(trajectory_ids, dtype=np.int64)
    )
    lengths = np.array([len(dataset[int(i)]) for i in ids], dtype=np.int64)
    ids = ids[lengths >= segment_length]
    lengths = lengths[lengths >= segment_length]
    if len(ids) == 0:
        raise DataValidationError(
            f"sample_queries: no trajectory has at least {segment_length} steps"
        )
    replace = len(ids) < k
    if num_queries == 0:
        return PreferenceQueries(
            np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.int64), segment_length
        )
    traj = np.stack([rng.choice(len(ids), size=k, replace=replace) for _ in range(num_queries)])
    starts = rng.integers(0, lengths[traj] - segment_length + 1)
    return PreferenceQueries(ids[traj], starts, segment_length)


def sliding_segments(trajectory_length: int, segment_length: int, stride: int = 1) -> np.ndarray:
    """Start indices of every window of ``segment_length`` steps with the given stride.

    Returns ``[n]`` int64 starts ``0, stride, 2 * stride, ...`` with ``start + segment_length <=
    trajectory_length`` (empty when the trajectory is shorter than one window).
    """
    if segment_length < 1 or stride < 1:
        raise ValueError(
            f"sliding_segments: expected segment_length >= 1 and stride >= 1, "
            f"found segment_length={segment_length}, stride={stride}"
        )
    if trajectory_length < segment_length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, trajectory_length - segment_length + 1, stride, dtype=np.int64)
