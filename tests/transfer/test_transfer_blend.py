"""The default ``auto`` blend: the mean of its members, deterministic, and blind to target labels."""

import numpy as np

from robopref.data import PreferenceQueries, Trajectory, TrajectoryDataset
from robopref.transfer import TransferConfig, sample_pool_pairs, transfer_labels
from robopref.transfer.blend import bt_labels, fit_bt

LAYOUT = {"hand": [0, 3], "gripper": None, "object": [3, 6], "goal": [6, 9]}


def _tasks(rng, n=30, h=10, sign=1.0):
    trajs = []
    for k in range(n):
        obj = np.zeros((h, 3))
        obj[:, 0] = sign * (k / n - 0.3) * 0.1 * np.arange(h)
        hand = obj + 0.05 * (1 + k % 3)
        goal = np.tile([sign, 0.0, 0.0], (h, 1))
        s = np.concatenate([hand, obj, goal], 1) + rng.normal(scale=1e-2, size=(h, 9))
        r = -np.linalg.norm(s[:, 3:6] - s[:, 6:9], axis=1)
        trajs.append(Trajectory(s, rng.normal(size=(h, 2)), r, task=f"t{sign}"))
    return TrajectoryDataset(trajs)


def _oracle(ds, q):
    r = np.array([[ds[int(t)].rewards.sum() for t in row] for row in q.traj_index])
    return PreferenceQueries(q.traj_index, q.start, q.length, r, label_kind="graded")


def test_fit_bt_recovers_a_linear_utility():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    pairs = rng.integers(0, 200, size=(2000, 2))
    u = x @ np.array([2.0, -1.0, 0.0])
    y = (u[pairs[:, 0]] > u[pairs[:, 1]]).astype(float)
    w = fit_bt(x, pairs, y)
    assert w[0] > 0 > w[1] and abs(w[2]) < 0.2 * abs(w[0])
    assert np.array_equal(w, fit_bt(x, pairs, y))  # no randomness
    p = bt_labels(w, x, pairs)
    assert np.mean((p > 0.5) == (y > 0.5)) > 0.95


def test_blend_is_the_mean_of_its_members_and_ignores_target_labels():
    rng = np.random.default_rng(1)
    source, target = _tasks(rng), _tasks(rng, sign=-1.0)
    src_q = _oracle(source, sample_pool_pairs(source, 30, 300, 6, rng))
    tgt_q = sample_pool_pairs(target, 30, 200, 6, rng)
    base = dict(layout=LAYOUT, auto={"members": [{"kind": "bt"}, {"kind": "fgw", "alpha": 0.5}]})
    blend, info = transfer_labels(source, src_q, target, tgt_q, TransferConfig(**base))
    bt, _ = transfer_labels(
        source,
        src_q,
        target,
        tgt_q,
        TransferConfig(**{**base, "auto": {"members": [{"kind": "bt"}]}}),
    )
    fgw, _ = transfer_labels(
        source, src_q, target, tgt_q,
        TransferConfig(method="fgw", alpha=0.5, epsilon=0.05, layout=LAYOUT),
    )  # fmt: skip
    want = (bt.pair_probability() + fgw.pair_probability()) / 2
    np.testing.assert_allclose(blend.pair_probability(), want, atol=1e-12)
    # the same target queries carrying labels (true, then scrambled) change nothing
    for labelled in (_oracle(target, tgt_q), _scrambled(_oracle(target, tgt_q), rng)):
        again, info2 = transfer_labels(source, src_q, target, labelled, TransferConfig(**base))
        np.testing.assert_array_equal(again.labels, blend.labels)
        assert info2["auto_members"] == info["auto_members"]


def _scrambled(q, rng):
    return PreferenceQueries(
        q.traj_index, q.start, q.length, rng.permutation(q.labels), label_kind=q.label_kind
    )
