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

Baselines from the paper's table (our reading, see ``docs/decisions.md``):
``sim`` (PT+Sim) copies the label of the nearest labelled source pair in a shared feature
space; ``dis`` (PT+Dis) averages all source labels weighted by exp(-distance / temperature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from robopref.config import StrictModel
from robopref.data import DataValidationError, PreferenceQueries, TrajectoryDataset
from robopref.ot import entropic_gromov_wasserstein

TransferMethod = Literal["gw", "sim", "dis"]


class TransferConfig(StrictModel):
    """How labels move from the source task to the target task."""

    method: TransferMethod = "gw"
    feature: Literal["flat", "mean_std"] = "mean_std"
    include_actions: bool = True
    standardize: bool = True
    epsilon: float = 0.02  # entropic GW regularisation, relative to costs scaled to [0, 1]
    max_iter: int = 200
    tol: float = 1e-7
    label_rule: Literal["pairs", "scores"] = "pairs"
    temperature: float = 0.05  # for method "dis", in units of the max cross-task distance


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
    dataset: TrajectoryDataset, items: Items, feature: str = "flat", include_actions: bool = True
) -> np.ndarray:
    """``[N, F]`` features of the items' state(-action) segments.

    ``flat`` concatenates every step (segments must share one length); ``mean_std`` is the
    per-dimension mean and std over the segment plus its first and last state.
    """
    rows = []
    for t, s, h in zip(items.traj_index, items.start, items.length):
        traj = dataset[int(t)]
        x = traj.state[s : s + h].astype(np.float64)
        if include_actions:
            x = np.concatenate([x, traj.actions[s : s + h].astype(np.float64)], axis=1)
        if feature == "flat":
            rows.append(x.reshape(-1))
        elif feature == "mean_std":
            rows.append(np.concatenate([x.mean(0), x.std(0), x[0], x[-1]]))
        else:
            raise ValueError(f"unknown segment feature '{feature}': expected 'flat' or 'mean_std'")
    if feature == "flat" and len({len(r) for r in rows}) > 1:
        raise DataValidationError("segment_features: feature 'flat' needs segments of one length")
    return np.stack(rows)


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
    a_i = coupling[src_pairs[:, 0]][:, tgt_pairs[:, 0]]  # T_ki  [Qs, Qt]
    b_j = coupling[src_pairs[:, 1]][:, tgt_pairs[:, 1]]  # T_lj
    b_i = coupling[src_pairs[:, 1]][:, tgt_pairs[:, 0]]  # T_li
    a_j = coupling[src_pairs[:, 0]][:, tgt_pairs[:, 1]]  # T_kj
    forward, backward = a_i * b_j, b_i * a_j
    y = src_y[:, None]
    num = (y * forward + (1.0 - y) * backward).sum(0)
    den = (forward + backward).sum(0)
    col = coupling.sum(0)
    total = col[tgt_pairs[:, 0]] * col[tgt_pairs[:, 1]]
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


def transfer_labels(
    source: TrajectoryDataset,
    source_queries: PreferenceQueries,
    target: TrajectoryDataset,
    target_queries: PreferenceQueries,
    config: TransferConfig,
) -> tuple[PreferenceQueries, dict]:
    """Label ``target_queries`` (pairs, unlabelled) from ``source_queries`` (labelled pairs).

    Returns soft-pair :class:`PreferenceQueries` with a per-query confidence, and a dict of
    diagnostics (coupling entropy, transferred mass, solver iterations).
    """
    src_y = pair_labels(source_queries)
    if target_queries.k != 2:
        raise DataValidationError(
            f"target queries: expected pairs (K = 2), found K = {target_queries.k}"
        )
    src_items, tgt_items = unique_items(source_queries), unique_items(target_queries)
    xs = segment_features(source, src_items, config.feature, config.include_actions)
    xt = segment_features(target, tgt_items, config.feature, config.include_actions)
    if config.standardize:
        xs, xt = standardize(xs), standardize(xt)
    src_pairs, tgt_pairs = src_items.inverse, tgt_items.inverse
    info: dict = {"n_source_items": len(xs), "n_target_items": len(xt), "method": config.method}

    if config.method == "gw":
        c1, c2 = normalized(pairwise_distances(xs)), normalized(pairwise_distances(xt))
        p, q = np.full(len(xs), 1.0 / len(xs)), np.full(len(xt), 1.0 / len(xt))
        coupling = entropic_gromov_wasserstein(
            c1, c2, p, q, config.epsilon, max_iter=config.max_iter, tol=config.tol
        )
        coupling = np.asarray(coupling, dtype=np.float64)
        if not np.isfinite(coupling).all():
            raise FloatingPointError("GW coupling is not finite: raise transfer.epsilon")
        if config.label_rule == "pairs":
            y, mass = transfer_through_coupling(coupling, src_pairs, src_y, tgt_pairs)
        else:
            u_src = source_item_scores(len(xs), src_pairs, src_y)
            u_tgt = (coupling.T @ u_src) / coupling.sum(0)
            y = 1.0 / (1.0 + np.exp(-(u_tgt[tgt_pairs[:, 0]] - u_tgt[tgt_pairs[:, 1]])))
            mass = np.ones(len(y))
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
        {"transfer": config.model_dump(), **{k: v for k, v in info.items() if k != "method"}},
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
