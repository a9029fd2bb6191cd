"""Candidate cross-task features and label-free selections of the PEARL families study.

Everything here is computed without target labels; ``candidates`` returns, per candidate, the
transferred target pair probabilities, so the study scores them all against one oracle.

Candidates (names as in the rows of ``docs/results/pearl-families.jsonl``):

* ``grid:<feature>:<alpha>:<eps>``: fused GW with that cross feature (``progress``, ``motion``,
  ``slow``: the label-free temporal encoder of :func:`robopref.transfer.slow_features`,
  ``progress+slow``: both).
* ``sel:<criterion>:<grid>``: the grid setting chosen by a label-free criterion: ``half`` (the
  current ``half_source``), ``round`` (the split round trip: source half A -> target -> half B
  through one coupling), ``mass``.
* ``ens:<grid>``: the mean transferred label over every setting of the grid (no selection).
* ``bt:<feature>`` (``bt2``: with the squares too): a Bradley-Terry model, linear in the cross
  feature, fitted on the source labels and applied to the target segments.
"""

from __future__ import annotations

import numpy as np

from robopref.transfer.blend import fit_bt
from robopref.transfer.cpa import (
    _joint_standardize,
    _pair_accuracy,
    _task_features,
    coupling_for,
    labels_from_coupling,
    normalized,
    pairwise_distances,
    standardize,
)
from robopref.transfer.slow import slow_features

ALPHAS = (0.0, 0.2, 0.5, 0.8, 0.95)
EPSILONS = (0.02, 0.05)
OLD_GRID = [(f, a, e) for f in ("progress", "motion") for a in (0.5, 0.8, 0.95) for e in EPSILONS]


def _split(n, src_pairs, seed=0):
    half = np.random.default_rng(seed).permutation(n) < n // 2
    ia, ib = np.flatnonzero(half), np.flatnonzero(~half)
    remap = np.full(n, -1)
    remap[ia], remap[ib] = np.arange(len(ia)), np.arange(len(ib))
    in_a, in_b = half[src_pairs].all(1), (~half[src_pairs]).all(1)
    return ia, ib, in_a, in_b, remap[src_pairs[in_a]], remap[src_pairs[in_b]]


def _sq(x):
    return np.concatenate([x, x**2 - 1.0], axis=1)


def _bt_labels(w, x, pairs):
    return 1.0 / (1.0 + np.exp(-((x[pairs[:, 0]] - x[pairs[:, 1]]) @ w)))


def candidates(source, si, src_y, target, ti, config) -> tuple[dict, dict]:
    """``(labels, info)``: target pair probabilities per candidate, and each grid setting's
    label-free scores."""
    sp, tp = si.inverse, ti.inverse
    xs = standardize(_task_features(source, si, config.feature, config, None))
    xt = standardize(_task_features(target, ti, config.feature, config, None))
    cross = {
        f: _joint_standardize(
            _task_features(source, si, f, config, None), _task_features(target, ti, f, config, None)
        )
        for f in ("progress", "motion")
    }
    cross["slow"] = slow_features(source, si, target, ti, include_actions=config.include_actions)
    cross["progress+slow"] = tuple(
        np.concatenate([cross["progress"][i], cross["slow"][i]], axis=1) for i in (0, 1)
    )
    ia, ib, in_a, in_b, pa, pb = _split(len(xs), sp)
    labels, scores = {}, {}
    for f, (ms, mt) in cross.items():
        for a in ALPHAS:
            for e in EPSILONS:
                name = f"grid:{f}:{a}:{e}"
                M = normalized(pairwise_distances(ms, mt))
                T = coupling_for(xs, xt, M, "fgw", e, a, config)
                y, mass = labels_from_coupling(T, sp, src_y, tp, "pairs")
                labels[name] = y
                # the current half_source: source half A -> half B with their own coupling
                Mh = normalized(pairwise_distances(ms[ia], ms[ib]))
                Th = coupling_for(xs[ia], xs[ib], Mh, "fgw", e, a, config)
                yh, _ = labels_from_coupling(Th, pa, src_y[in_a], pb, "pairs")
                # the split round trip: A's labels -> target -> B, through the rows of T
                y_t, _ = labels_from_coupling(T[ia], pa, src_y[in_a], tp, "pairs")
                y_b, _ = labels_from_coupling(T[ib].T, tp, y_t, pb, "pairs")
                scores[name] = {
                    "half": _pair_accuracy(yh, src_y[in_b]),
                    "round": _pair_accuracy(y_b, src_y[in_b]),
                    "mass": float(np.mean(mass * np.abs(2 * y - 1))),
                }
        # BT models on the cross feature (linear; linear + squares), fitted on the source labels
        for name, (fs, ft) in ((f"bt:{f}", (ms, mt)), (f"bt2:{f}", (_sq(ms), _sq(mt)))):
            labels[name] = _bt_labels(fit_bt(fs, sp, src_y), ft, tp)
            wa = fit_bt(fs[ia], pa, src_y[in_a])
            scores[name] = {"half": _pair_accuracy(_bt_labels(wa, fs[ib], pb), src_y[in_b])}
    grids = {
        "old": [f"grid:{f}:{a}:{e}" for f, a, e in OLD_GRID],
        "wide": [k for k in labels if k.startswith("grid:") and "slow" not in k],
        "all": [k for k in labels if k.startswith("grid:")],
        "slow": [k for k in labels if k.startswith("grid:slow:")],
        "strong": [k for k in labels if k.startswith("grid:") and float(k.split(":")[2]) >= 0.8],
    }
    for g, names in grids.items():
        for crit in ("half", "round", "mass"):
            best = max(names, key=lambda k: np.nan_to_num(scores[k][crit], nan=-1.0))
            labels[f"sel:{crit}:{g}"] = labels[best]
            scores[f"sel:{crit}:{g}"] = {"chosen": best}
        labels[f"ens:{g}"] = np.mean([labels[k] for k in names], axis=0)
    return labels, scores


def accuracy(y, truth_y) -> float:
    return _pair_accuracy(y, truth_y)
