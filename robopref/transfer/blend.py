"""``transfer.method: auto`` (default mode ``blend``): the mean of a few fixed label-free
transfers instead of one setting chosen per pair.

Members (``transfer.auto.members``): ``bt``, a Bradley-Terry utility linear in a shared,
direction-invariant cross-task feature, fitted on the source labels and applied to the target
segments; ``fgw``, fused GW with a fixed ``alpha`` and ``epsilon`` on that feature. The default
blend (BT on ``progress``, fused GW on ``progress`` and on ``slow`` features at alpha 0.8,
eps 0.05) was chosen on the PEARL families study by the rule in ``docs/decisions.md``. No
member reads a target label.
"""

from __future__ import annotations

import numpy as np

from robopref.transfer.cpa import (
    TransferConfig,
    coupling_for,
    labels_from_coupling,
    normalized,
    pairwise_distances,
)


def fit_bt(x: np.ndarray, pairs: np.ndarray, y: np.ndarray, l2=1e-2, iters=300, lr=0.5):
    """``w [F]``: the linear Bradley-Terry utility ``x @ w`` fitted to soft pair labels ``y``
    (full-batch gradient descent from 0, so deterministic)."""
    w = np.zeros(x.shape[1])
    d = x[pairs[:, 0]] - x[pairs[:, 1]]
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(d @ w)))
        w -= lr * (d.T @ (p - y) / len(y) + l2 * w)
    return w


def bt_labels(w: np.ndarray, x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-((x[pairs[:, 0]] - x[pairs[:, 1]]) @ w)))


def blend_labels(
    xs: np.ndarray,
    xt: np.ndarray,
    cross: dict[str, tuple[np.ndarray, np.ndarray]],
    src_pairs: np.ndarray,
    src_y: np.ndarray,
    tgt_pairs: np.ndarray,
    config: TransferConfig,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(y [Qt], mass [Qt], per-member labels)``: the mean of the members' target labels;
    the mass is the fused-GW members' mean (1 where there is none)."""
    ys, masses = [], []
    for m in config.auto.members:
        ms, mt = cross[m.cross_feature]
        if m.kind == "bt":
            ys.append(bt_labels(fit_bt(ms, src_pairs, src_y), mt, tgt_pairs))
            continue
        M = normalized(pairwise_distances(ms, mt))
        T = coupling_for(xs, xt, M, "fgw", m.epsilon, m.alpha, config)
        y, mass = labels_from_coupling(T, src_pairs, src_y, tgt_pairs, config.label_rule)
        ys.append(y)
        masses.append(mass)
    mass = np.mean(masses, axis=0) if masses else np.ones(len(tgt_pairs))
    return np.mean(ys, axis=0), mass, ys
