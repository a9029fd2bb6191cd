"""Guided-cost preference generation (GRAPE): score trajectories, rank them, build pairs or lists.

Stage costs follow GRAPE's spatio-temporal constraints: a task is split into sequential stages
(declared per task; GRAPE gets them from a VLM, here from the config), each a distance between two
keypoints read from the simulator state (Meta-World observation slots, :data:`KEYPOINTS`) that
must fall below a threshold. Stage ``i`` is evaluated in the window that starts where stage
``i - 1`` was first completed (at the last step if it never was); its cost is ``max(min_window
d_i - threshold_i, 0)`` metres, so a completed stage costs 0. The external reward is
``R_ext = exp(-sum_i cost_i / scale)`` in ``(0, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KEYPOINTS: dict[str, slice] = {
    "hand": slice(0, 3),
    "obj1": slice(4, 7),
    "obj2": slice(11, 14),
    "goal": slice(36, 39),
}
"""Keypoint name -> slice of the 39-d Meta-World state (positions, metres)."""

SCORE_TERMS = ("success", "stages", "logp", "length", "collisions", "action")
"""Score components (see :func:`guided_scores`)."""


@dataclass(frozen=True)
class Stage:
    """One stage: keypoints ``a`` and ``b`` (names of :data:`KEYPOINTS`) closer than
    ``threshold`` metres."""

    name: str
    a: str
    b: str
    threshold: float


def keypoints_from_states(states: np.ndarray) -> dict[str, np.ndarray]:
    """``[T, 39]`` states -> keypoint name -> ``[T, 3]`` positions (metres)."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] < 39:
        raise ValueError(f"states: expected shape [T, 39], found {list(states.shape)}")
    return {name: states[:, sl] for name, sl in KEYPOINTS.items()}


def stage_costs(
    keypoints: Mapping[str, np.ndarray], stages: Sequence[Stage]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-stage costs ``[S]`` (metres beyond the threshold) and completion flags ``[S]`` bool."""
    costs = np.zeros(len(stages))
    done = np.zeros(len(stages), dtype=bool)
    if not stages:
        return costs, done
    T = len(next(iter(keypoints.values())))
    cursor = 0
    for i, stage in enumerate(stages):
        for key in (stage.a, stage.b):
            if key not in keypoints:
                raise ValueError(
                    f"stages[{i}] ({stage.name}): unknown keypoint {key!r}, expected one of "
                    f"{sorted(keypoints)}"
                )
        d = np.linalg.norm(keypoints[stage.a][cursor:] - keypoints[stage.b][cursor:], axis=-1)
        hits = np.flatnonzero(d < stage.threshold)
        if hits.size:
            done[i] = True
            cursor += int(hits[0])
        else:
            costs[i] = float(d.min()) - stage.threshold
            cursor = T - 1
    return costs, done


def external_reward(costs: np.ndarray, scale: float = 0.1) -> float:
    """``exp(-sum(costs) / scale)`` in ``(0, 1]`` (``scale`` in metres)."""
    return float(np.exp(-np.sum(costs) / scale))


def guided_scores(components: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """GRAPE's guided score per trajectory (higher = preferred):

    ``w_success * success + w_stages * R_ext + w_logp * logp - w_length * length
    - w_collisions * collisions - w_action * action``, where (each ``[N]``) ``success`` is 0/1,
    ``stages`` is :func:`external_reward`, ``logp`` the policy's log-likelihood per step (nats),
    ``length`` the episode length as a fraction of the step limit, ``collisions`` the robot's
    contacts with non-target geoms per step and ``action`` the mean squared action. Terms with a
    zero (or absent) weight are not needed in ``components``.
    """
    unknown = sorted(set(weights) - set(SCORE_TERMS))
    if unknown:
        raise ValueError(f"weights: unknown terms {unknown}, expected a subset of {SCORE_TERMS}")
    sign = {"success": 1, "stages": 1, "logp": 1, "length": -1, "collisions": -1, "action": -1}
    total = None
    for term, w in weights.items():
        if w == 0:
            continue
        if term not in components:
            raise ValueError(f"components: weight of '{term}' is {w} but the term is missing")
        x = sign[term] * w * np.asarray(components[term], dtype=np.float64)
        total = x if total is None else total + x
    if total is None:
        n = len(next(iter(components.values()))) if components else 0
        return np.zeros(n)
    return total


def _groups(n: int, groups: Sequence | None) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups: expected shape ({n},) (one per score), found {groups.shape}")
    return [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]


def build_pairs(
    scores: np.ndarray,
    groups: Sequence | None = None,
    mode: str = "best_worst",
    margin: float = 0.0,
) -> list[tuple[int, int]]:
    """Chosen/rejected index pairs from scores, within each group (e.g. task).

    Args:
        scores: ``[N]`` guided scores (higher = better).
        groups: ``[N]`` group labels; pairs never cross groups. ``None``: one group.
        mode: ``"best_worst"``: per group the highest- vs the lowest-scoring trajectory (ties
            broken by the lower index); ``"all"``: every pair ``(i, j)`` with ``s_i - s_j > margin``.
        margin: minimum score gap; a pair with ``s_chosen - s_rejected <= margin`` is dropped.

    Returns:
        ``(chosen, rejected)`` index pairs, groups in order of first appearance.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores: expected shape [N], found {list(scores.shape)}")
    if mode not in ("best_worst", "all"):
        raise ValueError(f"pairs: expected 'best_worst' or 'all', found {mode!r}")
    pairs: list[tuple[int, int]] = []
    for idx in _groups(len(scores), groups):
        if idx.size < 2:
            continue
        s = scores[idx]
        if mode == "best_worst":
            order = np.argsort(-s, kind="stable")
            best, worst = idx[order[0]], idx[order[-1]]
            if scores[best] - scores[worst] > margin:
                pairs.append((int(best), int(worst)))
        else:
            for a in range(idx.size):
                for b in range(idx.size):
                    if s[a] - s[b] > margin:
                        pairs.append((int(idx[a]), int(idx[b])))
    return pairs


def build_lists(
    scores: np.ndarray, groups: Sequence | None = None, max_size: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ranked lists for listwise losses: per group ``(indices [K], labels [K])`` with the scores as
    graded labels (best first); lists of one item or with all-equal scores are dropped;
    ``max_size`` keeps the best ``max_size // 2`` and the worst ``max_size - max_size // 2``."""
    scores = np.asarray(scores, dtype=np.float64)
    lists = []
    for idx in _groups(len(scores), groups):
        order = idx[np.argsort(-scores[idx], kind="stable")]
        if max_size is not None and order.size > max_size:
            top = max_size // 2
            order = np.concatenate([order[:top], order[order.size - (max_size - top) :]])
        if order.size < 2 or np.ptp(scores[order]) == 0:
            continue
        lists.append((order, scores[order]))
    return lists
