"""PEARL cross-task preference alignment: the label rule by hand, and GW recovering labels
when the target task is a rotated, permuted copy of the source task."""

import numpy as np
import pytest

from robopref.data import PreferenceQueries, Trajectory, TrajectoryDataset
from robopref.transfer import (
    TransferConfig,
    label_accuracy,
    sample_pool_pairs,
    transfer_labels,
    transfer_through_coupling,
    unique_items,
)


def test_label_rule_by_hand():
    # 3 source items, 2 target items; labelled source pairs (0 > 1, y = 0.9) and (2 vs 1, y = 0.2)
    T = np.array([[0.3, 0.0], [0.0, 0.2], [0.1, 0.4]])
    src_pairs = np.array([[0, 1], [2, 1]])
    src_y = np.array([0.9, 0.2])
    y, mass = transfer_through_coupling(T, src_pairs, src_y, np.array([[0, 1], [1, 0]]))
    # target (0, 1): forward T00*T11 = 0.06 (y .9), T20*T11 = 0.02 (y .2); backward T10*T01 = 0, T10*T21 = 0
    num = 0.9 * 0.06 + 0.2 * 0.02
    den = 0.06 + 0.02
    assert y[0] == pytest.approx(num / den)
    assert y[1] == pytest.approx(1 - num / den)  # symmetric rule
    col = T.sum(0)
    assert mass[0] == pytest.approx(den / (col[0] * col[1]))


def test_label_rule_without_mass_is_a_tie():
    T = np.array([[0.5, 0.0], [0.0, 0.5]])
    y, mass = transfer_through_coupling(T, np.array([[0, 0]]), np.array([1.0]), np.array([[0, 1]]))
    assert y[0] == 0.5 and mass[0] == 0.0


def _structured_dataset(rng, n, horizon=5, dim=3):
    """Trajectories on a few well-separated, anisotropic clusters; reward = a fixed function of state."""
    centres = rng.normal(size=(4, dim)) * np.array([6.0, 3.0, 1.5])
    trajs = []
    for i in range(n):
        c = centres[i % 4]
        states = c + np.cumsum(rng.normal(scale=0.4, size=(horizon, dim)), axis=0) * np.array(
            [1.0, 0.6, 0.3]
        )
        reward = states[:, 0] + 0.5 * states[:, 1]
        trajs.append(Trajectory(states, np.zeros((horizon, 1)), reward, task="src"))
    return TrajectoryDataset(trajs)


def _rotated_permuted(dataset, rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    perm = rng.permutation(len(dataset))
    trajs = [
        Trajectory(
            dataset[int(p)].state @ q.T,
            dataset[int(p)].actions,
            dataset[int(p)].rewards,
            task="tgt",
        )
        for p in perm
    ]
    inv = np.argsort(perm)  # source trajectory s lives at target index inv[s]
    return TrajectoryDataset(trajs), inv


def _oracle(dataset, queries):
    returns = np.array([[dataset[int(t)].rewards.sum() for t in row] for row in queries.traj_index])
    return PreferenceQueries(
        queries.traj_index, queries.start, queries.length, returns, label_kind="graded"
    )


@pytest.mark.parametrize("rule", ["pairs", "scores"])
def test_gw_recovers_labels_of_a_rotated_permuted_task(rule):
    rng = np.random.default_rng(0)
    source = _structured_dataset(rng, 48)
    target, inv = _rotated_permuted(source, rng)
    src_q = _oracle(source, sample_pool_pairs(source, 48, 400, 5, rng))
    if rule == "pairs":
        # the target pairs are the images of labelled source pairs: GW must find the correspondence
        tgt_idx = inv[src_q.traj_index]
    else:
        # fresh target pairs over the same items, labelled through source utilities moved along the coupling
        seen = np.unique(src_q.traj_index)
        tgt_idx = inv[rng.choice(seen, size=(300, 2))]
        tgt_idx = tgt_idx[tgt_idx[:, 0] != tgt_idx[:, 1]]
    tgt_q = PreferenceQueries(tgt_idx, np.zeros_like(tgt_idx), 5)
    config = TransferConfig(
        method="gw", include_actions=False, standardize=False, epsilon=0.005, label_rule=rule
    )
    labels, info = transfer_labels(source, src_q, target, tgt_q, config)
    assert labels.label_kind == "soft_pair" and labels.labels.shape == (len(tgt_q), 2)
    assert np.allclose(labels.labels.sum(1), 1.0)
    acc = label_accuracy(labels, _oracle(target, tgt_q))
    assert acc >= 0.95, (acc, info)


def test_similarity_baseline_exact_on_identical_task():
    rng = np.random.default_rng(1)
    source = _structured_dataset(rng, 30)
    src_q = _oracle(source, sample_pool_pairs(source, 30, 200, 5, rng))
    config = TransferConfig(method="sim", include_actions=False, standardize=False)
    labels, _ = transfer_labels(
        source, src_q, source, PreferenceQueries(src_q.traj_index, src_q.start, 5), config
    )
    assert label_accuracy(labels, src_q) == 1.0


def test_unique_items_maps_back():
    q = PreferenceQueries(np.array([[0, 1], [1, 2], [0, 1]]), np.array([[0, 3], [3, 0], [0, 4]]), 5)
    items = unique_items(q)
    assert len(items.traj_index) == 4
    for qi in range(3):
        for k in range(2):
            j = items.inverse[qi, k]
            assert (items.traj_index[j], items.start[j]) == (q.traj_index[qi, k], q.start[qi, k])


def test_rejects_lists_and_unlabelled_sources():
    rng = np.random.default_rng(2)
    ds = _structured_dataset(rng, 10)
    unlabelled = sample_pool_pairs(ds, 10, 20, 5, rng)
    with pytest.raises(ValueError, match="labels"):
        transfer_labels(ds, unlabelled, ds, unlabelled, TransferConfig())


def test_label_rule_matches_the_pairwise_sum():
    # the factored rule equals the sum over every (labelled source pair, target pair), self-pairs
    # and repeated pairs included
    rng = np.random.default_rng(3)
    T = rng.random((7, 5)) * (rng.random((7, 5)) > 0.3)
    src_pairs = np.vstack([rng.integers(0, 7, size=(40, 2)), [[2, 2], [1, 4], [1, 4]]])
    src_y = rng.random(len(src_pairs))
    tgt_pairs = np.vstack([rng.integers(0, 5, size=(30, 2)), [[3, 3]]])
    y, mass = transfer_through_coupling(T, src_pairs, src_y, tgt_pairs)
    for q, (i, j) in enumerate(tgt_pairs):
        fwd = T[src_pairs[:, 0], i] * T[src_pairs[:, 1], j]
        bwd = T[src_pairs[:, 1], i] * T[src_pairs[:, 0], j]
        den = (fwd + bwd).sum()
        want = (src_y * fwd + (1 - src_y) * bwd).sum() / den if den > 0 else 0.5
        assert y[q] == pytest.approx(want, rel=1e-10)
        assert mass[q] == pytest.approx(den / (T[:, i].sum() * T[:, j].sum()), rel=1e-10)
