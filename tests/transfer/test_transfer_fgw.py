"""PEARL transfer with fused GW: segment features by hand, orientation of a mirrored task
("open" -> "close"), label-free selection (auto) and bad input."""

import numpy as np
import pydantic
import pytest

from robopref.data import DataValidationError, PreferenceQueries, Trajectory, TrajectoryDataset
from robopref.transfer import (
    ObsLayout,
    TransferConfig,
    label_accuracy,
    sample_pool_pairs,
    segment_features,
    transfer_labels,
    unique_items,
)

LAYOUT = ObsLayout(hand=(0, 3), gripper=None, object=(3, 6), goal=(6, 9))


def _items(n_traj, length):
    q = PreferenceQueries(
        np.arange(n_traj)[:, None].repeat(2, 1), np.zeros((n_traj, 2), int), length
    )
    return unique_items(q)


def test_resampled_motion_progress_by_hand():
    # one 3-step trajectory, 9-d states: hand moves, object moves towards the goal at (1, 0, 0)
    hand = np.array([[0.0, 0, 0], [0.5, 0, 0], [1.0, 0, 0]])
    obj = np.array([[0.0, 1, 0], [0.0, 1, 0], [0.6, 0, 0]])
    goal = np.tile([1.0, 0, 0], (3, 1))
    states = np.concatenate([hand, obj, goal], 1)
    ds = TrajectoryDataset([Trajectory(states, np.zeros((3, 1)), np.zeros(3), task="t")])
    items = unique_items(PreferenceQueries(np.array([[0, 0]]), np.array([[0, 0]]), 3))
    res = segment_features(ds, items, "resampled", include_actions=False, points=5)
    # times 0, .5, 1, 1.5, 2 (in steps): hand x = 0, .25, .5, .75, 1
    np.testing.assert_allclose(res[0].reshape(5, 9)[:, 0], [0, 0.25, 0.5, 0.75, 1.0])
    mot = segment_features(ds, items, "motion", include_actions=False)
    np.testing.assert_allclose(mot[0, :9], np.abs(states[-1] - states[0]))
    np.testing.assert_allclose(mot[0, 9:], np.abs(np.diff(states, axis=0)).mean(0))
    prog = segment_features(ds, items, "progress", layout=LAYOUT)[0]
    d_ho = np.linalg.norm(hand - obj, axis=1)  # [sqrt 2, sqrt(1.25), 0.4]
    d_og = np.linalg.norm(obj - goal, axis=1)  # [sqrt 2, sqrt 2, 0.4]
    want = [d_ho[0], d_ho[-1], d_ho.mean(), d_ho[-1] - d_ho[0]]
    want += [d_og[0], d_og[-1], d_og.mean(), d_og[-1] - d_og[0]]
    want += [0.5, (0 + np.hypot(0.6, 1.0)) / 2]  # mean hand speed, mean object speed
    np.testing.assert_allclose(prog, want)


def _mirror_tasks(rng, n=40, h=8, sign=1.0):
    """Objects pushed along x towards a goal at x = sign; speed (and so the return) varies per
    trajectory, some move away. The target task (sign = -1) is the mirror image: pure structure
    cannot tell the two orientations apart."""
    speeds = np.linspace(-0.05, 0.12, n)
    trajs = []
    for k in range(n):
        t = np.arange(h)[:, None]
        obj = np.zeros((h, 3))
        obj[:, 0] = sign * speeds[k] * t[:, 0]
        obj[:, 1] = 0.02 * (k % 5)
        hand = obj + np.array([0.0, 0.05, 0.05]) * (1 + 0.3 * (k % 3))
        goal = np.tile([sign, 0.0, 0.0], (h, 1))
        states = np.concatenate([hand, obj, goal], 1) + rng.normal(scale=1e-3, size=(h, 9))
        reward = -np.linalg.norm(states[:, 3:6] - states[:, 6:9], axis=1)
        trajs.append(Trajectory(states, np.zeros((h, 1)), reward, task=f"s{sign}"))
    return TrajectoryDataset(trajs)


def _oracle(dataset, queries):
    r = np.array([[dataset[int(t)].rewards.sum() for t in row] for row in queries.traj_index])
    return PreferenceQueries(
        queries.traj_index, queries.start, queries.length, r, label_kind="graded"
    )


def test_fgw_orients_a_mirrored_task_and_auto_finds_it():
    rng = np.random.default_rng(0)
    source, target = _mirror_tasks(rng, sign=1.0), _mirror_tasks(rng, sign=-1.0)
    src_q = _oracle(source, sample_pool_pairs(source, 40, 400, 8, rng))
    tgt_q = sample_pool_pairs(target, 40, 300, 8, rng)
    truth = _oracle(target, tgt_q)
    base = dict(include_actions=False, layout=LAYOUT, epsilon=0.01)
    fgw = TransferConfig(method="fgw", alpha=0.5, cross_feature="progress", **base)
    labels, _ = transfer_labels(source, src_q, target, tgt_q, fgw)
    assert label_accuracy(labels, truth) >= 0.85
    # similarity on raw states carries the direction: its labels come out inverted
    sim = TransferConfig(method="sim", **base)
    labels, _ = transfer_labels(source, src_q, target, tgt_q, sim)
    assert label_accuracy(labels, truth) <= 0.35
    select = TransferConfig(method="auto", auto={"mode": "select"}, **base)
    labels, info = transfer_labels(source, src_q, target, tgt_q, select)
    assert label_accuracy(labels, truth) >= 0.9
    assert info["auto_cross_feature"] in ("progress", "motion")
    assert len(info["auto_grid"]) == 12 and all(np.isfinite(c["score"]) for c in info["auto_grid"])
    assert labels.metadata["auto_alpha"] == info["auto_alpha"]


def test_default_auto_blend_orients_a_mirrored_task():
    rng = np.random.default_rng(0)
    source, target = _mirror_tasks(rng, sign=1.0), _mirror_tasks(rng, sign=-1.0)
    src_q = _oracle(source, sample_pool_pairs(source, 40, 400, 8, rng))
    tgt_q = sample_pool_pairs(target, 40, 300, 8, rng)
    cfg = TransferConfig(include_actions=False, layout=LAYOUT)
    labels, info = transfer_labels(source, src_q, target, tgt_q, cfg)
    assert [m["kind"] for m in info["auto_members"]] == ["bt", "fgw", "fgw"]
    # similarity on raw states reads <= 0.35 here (the test above): the blend is oriented
    assert label_accuracy(labels, _oracle(target, tgt_q)) >= 0.95


def test_auto_criteria_never_read_target_labels():
    rng = np.random.default_rng(1)
    source, target = _mirror_tasks(rng), _mirror_tasks(rng, sign=-1.0)
    src_q = _oracle(source, sample_pool_pairs(source, 40, 300, 8, rng))
    tgt_q = sample_pool_pairs(target, 40, 200, 8, rng)
    for crit in ("half_source", "cycle", "mass"):
        cfg = TransferConfig(
            include_actions=False,
            layout=LAYOUT,
            auto={"mode": "select", "criterion": crit, "alphas": [0.5, 1.0], "epsilons": [0.02]},
        )
        a, info_a = transfer_labels(source, src_q, target, tgt_q, cfg)
        # the same unlabelled target queries carrying (wrong) labels change nothing
        labelled = _oracle(target, tgt_q)
        b, info_b = transfer_labels(source, src_q, target, labelled, cfg)
        assert info_a["auto_grid"] == info_b["auto_grid"]
        np.testing.assert_allclose(a.labels, b.labels)


def test_transfer_bad_input():
    with pytest.raises(pydantic.ValidationError, match=r"alpha"):
        TransferConfig(method="fgw", alpha=1.5)
    rng = np.random.default_rng(2)
    ds = _mirror_tasks(rng, n=10)
    q = _oracle(ds, sample_pool_pairs(ds, 10, 30, 8, rng))
    with pytest.raises(ValueError, match="feature 'reward' needs an embedder"):
        transfer_labels(ds, q, ds, q, TransferConfig(method="fgw", cross_feature="reward"))
    bad = TransferConfig(method="fgw", cross_feature="progress", layout={"goal": [36, 39]})
    with pytest.raises(
        DataValidationError, match=r"transfer.layout.goal: .* 9-d state, found \[36, 39\]"
    ):
        transfer_labels(ds, q, ds, q, bad)


def test_reward_feature_uses_the_embedder():
    rng = np.random.default_rng(3)
    source, target = _mirror_tasks(rng), _mirror_tasks(rng, sign=-1.0)
    src_q = _oracle(source, sample_pool_pairs(source, 40, 300, 8, rng))
    tgt_q = sample_pool_pairs(target, 40, 200, 8, rng)

    def embed(dataset, items):  # the return-to-go a source reward model would learn (sign-free)
        return np.array(
            [
                [
                    -np.linalg.norm(
                        dataset[int(t)].state[s + h - 1, 3:6]
                        - dataset[int(t)].state[s + h - 1, 6:9]
                    )
                ]
                for t, s, h in zip(items.traj_index, items.start, items.length)
            ]
        )

    cfg = TransferConfig(
        method="fgw", alpha=0.2, cross_feature="reward", include_actions=False, epsilon=0.01
    )
    labels, _ = transfer_labels(source, src_q, target, tgt_q, cfg, embedder=embed)
    assert label_accuracy(labels, _oracle(target, tgt_q)) >= 0.9


def test_pearl_source_reward_embedder_feeds_the_reward_feature():
    from robopref.envs import CollectConfig
    from robopref.methods import pearl

    rng = np.random.default_rng(4)
    source, target = _mirror_tasks(rng, n=20), _mirror_tasks(rng, n=20, sign=-1.0)
    src_q = _oracle(source, sample_pool_pairs(source, 20, 150, 8, rng))
    tgt_q = sample_pool_pairs(target, 20, 100, 8, rng)
    config = pearl.Config(
        source=CollectConfig(tasks=["button-press-v3"]),
        target=CollectConfig(tasks=["button-press-wall-v3"]),
        transfer={"method": "fgw", "cross_feature": "reward", "include_actions": False},
    )
    embed = pearl.source_reward_embedder(source, src_q, config)
    items = unique_items(tgt_q)
    e = embed(target, items)
    assert e.shape == (len(items.traj_index), 65) and np.isfinite(e).all()
    labels, info = pearl.target_labels("pearl", config, source, src_q, target, tgt_q)
    assert labels.labels.shape == (100, 2) and info["method"] == "fgw"
