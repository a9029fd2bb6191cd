"""The label-free temporal encoder (slow feature analysis) of cross-task transfer."""

import numpy as np
import pytest

from robopref.data import DataValidationError, Trajectory, TrajectoryDataset
from robopref.transfer import fit_slow_encoder, slow_features, unique_items
from robopref.transfer.cpa import sample_pool_pairs


def _dataset(rng, n=12, horizon=60):
    trajs = []
    for i in range(n):
        t = np.linspace(0.0, 1.0, horizon)
        slow = np.sin(2 * np.pi * t + i)  # one smooth quantity over the episode
        fast = rng.normal(size=(horizon, 2))  # per-step noise of the same scale
        state = np.column_stack([fast[:, 0], slow, fast[:, 1], np.ones(horizon)])  # + a constant
        trajs.append(Trajectory(state, rng.normal(size=(horizon, 1)), rng.normal(size=horizon)))
    return TrajectoryDataset(trajs)


def test_the_slowest_direction_is_the_smooth_quantity():
    enc = fit_slow_encoder([_dataset(np.random.default_rng(0))], k=2, include_actions=False)
    w = enc.weights[:, 0]
    assert abs(w[1]) > 10 * max(abs(w[0]), abs(w[2]))  # the sine, not the noise
    assert w[3] == 0.0  # a constant dimension gets no weight
    assert enc.slowness[0] < 0.05 < enc.slowness[1]


def test_encoder_is_label_free_and_deterministic():
    # same states and actions, other rewards: the encoder never reads a reward or a label
    a = _dataset(np.random.default_rng(1))
    b = TrajectoryDataset(
        [Trajectory(t.state, t.actions, 100.0 * t.state[:, 1], task="t") for t in a]
    )
    ea, eb = fit_slow_encoder([a]), fit_slow_encoder([b])
    assert np.array_equal(ea.weights, eb.weights) and np.array_equal(ea.mean, eb.mean)
    again = fit_slow_encoder([a])
    assert np.array_equal(ea.weights, again.weights)


def test_slow_features_shapes_and_errors():
    rng = np.random.default_rng(2)
    src, tgt = _dataset(rng), _dataset(rng, n=8)
    si = unique_items(sample_pool_pairs(src, 20, 50, 10, rng))
    ti = unique_items(sample_pool_pairs(tgt, 15, 40, 10, rng))
    fs, ft = slow_features(src, si, tgt, ti, k=3)
    assert fs.shape == (len(si.traj_index), 6) and ft.shape == (len(ti.traj_index), 6)
    other = TrajectoryDataset(
        [Trajectory(np.zeros((5, 3)), np.zeros((5, 1)), np.zeros(5), task="u")]
    )
    with pytest.raises(DataValidationError, match="one step size"):
        fit_slow_encoder([src, other])
