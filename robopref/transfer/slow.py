"""A label-free temporal encoder shared by two tasks: linear slow feature analysis.

Time-contrastive learning pulls together the embeddings of states that are close in time and
keeps the embedding from collapsing. Slow feature analysis (Wiskott & Sejnowski, 2002) is its
linear, closed-form case: the directions ``w`` that minimise the mean squared step
``E[(w . (z_t+1 - z_t))^2]`` subject to unit variance ``E[(w . z_t)^2] = 1`` (a generalised
eigenproblem). Fitted on the steps of the source *and* target trajectories together (jointly
standardised), the slow directions are quantities that change smoothly in both tasks (object
and fixture positions, distances to them), not the per-step noise of the controller. No
preference label of either task is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from robopref.data import DataValidationError, TrajectoryDataset


@dataclass
class SlowEncoder:
    """``z = ((x - mean) / scale) @ weights``: ``weights [D, k]``, slowest direction first."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    slowness: np.ndarray  # [k] mean squared step of each direction (unit variance)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights


def _steps(traj, include_actions: bool) -> np.ndarray:
    x = np.asarray(traj.state, dtype=np.float64)
    if include_actions:
        x = np.concatenate([x, np.asarray(traj.actions, dtype=np.float64)], axis=1)
    return x


def fit_slow_encoder(
    datasets: list[TrajectoryDataset],
    k: int = 8,
    include_actions: bool = True,
    ridge: float = 1e-3,
) -> SlowEncoder:
    """Slow feature analysis on the steps of every trajectory of ``datasets`` (deterministic:
    each direction's sign makes its largest weight positive)."""
    per_traj = [_steps(t, include_actions) for ds in datasets for t in ds]
    dims = {x.shape[1] for x in per_traj}
    if len(dims) != 1:
        raise DataValidationError(
            f"slow features: expected one step size across the tasks, found {sorted(dims)}"
        )
    x = np.concatenate(per_traj)
    mean, std = x.mean(0), x.std(0)
    scale = np.where(std > 1e-8, std, 1.0)
    live = std > 1e-8  # constant dimensions (a fixed goal) carry no time
    z = [((xi - mean) / scale)[:, live] for xi in per_traj]
    d = np.concatenate([np.diff(zi, axis=0) for zi in z if len(zi) > 1])
    zc = np.concatenate(z)
    if len(d) == 0 or zc.shape[1] == 0:
        raise DataValidationError("slow features: expected trajectories of >= 2 steps that move")
    a = d.T @ d / len(d)
    b = zc.T @ zc / len(zc) + ridge * np.eye(zc.shape[1])
    vals, vecs = scipy.linalg.eigh(a, b)  # ascending: slowest first
    k = min(k, vecs.shape[1])
    w_live = vecs[:, :k]
    w_live = w_live * np.sign(w_live[np.abs(w_live).argmax(0), np.arange(k)])
    weights = np.zeros((x.shape[1], k))
    weights[live] = w_live
    return SlowEncoder(mean, scale, weights, vals[:k])


def segment_slow_features(encoder: SlowEncoder, dataset, items, include_actions=True):
    """``[N, 2 k]`` per segment: the mean of the slow features and |last - first| (how far the
    segment moves along each slow direction, whatever the direction)."""
    rows = []
    for t, s, h in zip(items.traj_index, items.start, items.length):
        z = encoder.encode(_steps(dataset[int(t)], include_actions)[s : s + h])
        rows.append(np.concatenate([z.mean(0), np.abs(z[-1] - z[0])]))
    return np.stack(rows)


def slow_features(source, source_items, target, target_items, k=8, include_actions=True):
    """Jointly standardised slow features of the source and target items (the encoder is fitted
    on both tasks' trajectories)."""
    from robopref.transfer.cpa import _joint_standardize

    enc = fit_slow_encoder([source, target], k=k, include_actions=include_actions)
    return _joint_standardize(
        segment_slow_features(enc, source, source_items, include_actions),
        segment_slow_features(enc, target, target_items, include_actions),
    )
