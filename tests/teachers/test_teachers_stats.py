"""Statistics of the simulated teachers on 10k queries; budgets, seeds and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robopref.data import (
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    sample_queries,
    segment_rewards,
)
from robopref.teachers import label_queries, make_teacher

N = 10_000


@pytest.fixture(scope="module")
def data() -> TrajectoryDataset:
    rng = np.random.default_rng(0)
    trajs = [
        Trajectory(rng.normal(size=(60, 3)), np.zeros((60, 1)), 0.3 * rng.normal(size=60) + 0.1)
        for _ in range(200)
    ]
    return TrajectoryDataset(trajs)


@pytest.fixture(scope="module")
def queries(data) -> PreferenceQueries:
    return sample_queries(data, N, 2, 25, np.random.default_rng(1))


@pytest.fixture(scope="module")
def returns(data, queries) -> np.ndarray:
    """[N, 2] segment returns computed independently with robopref.data.segment_rewards."""
    return np.array([[r.sum() for r in row] for row in segment_rewards(data, queries)])


def test_mistake_rate_matches_eps(data, queries, returns):
    eps = 0.1
    oracle = make_teacher("oracle").label(data, queries).labels
    np.testing.assert_array_equal(oracle[:, 0], (returns[:, 0] > returns[:, 1]).astype(float))
    noisy = make_teacher("mistake", eps=eps, seed=5).label(data, queries).labels
    rate = np.mean(noisy[:, 0] != oracle[:, 0])
    assert abs(rate - eps) < 4 * np.sqrt(eps * (1 - eps) / N), rate


def test_stochastic_matches_boltzmann(data, queries, returns):
    beta = 1.0
    y = make_teacher("stochastic", beta=beta, seed=2).label(data, queries).labels[:, 0]
    assert set(np.unique(y)) == {0.0, 1.0}
    d = returns[:, 0] - returns[:, 1]
    edges = np.linspace(-4, 4, 9)
    checked = 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        b = (d >= lo) & (d < hi)
        if b.sum() < 200:
            continue
        p = 1 / (1 + np.exp(-beta * d[b]))
        sigma = np.sqrt((p * (1 - p)).sum()) / b.sum()
        assert abs(y[b].mean() - p.mean()) < 4 * sigma, (lo, y[b].mean(), p.mean())
        checked += 1
    assert checked >= 6
    # the maximum-likelihood rationality recovers beta
    grid = np.linspace(0.5, 2.0, 151)
    sign = 2 * y - 1
    loglik = [-np.logaddexp(0, -g * sign * d).sum() for g in grid]
    assert abs(grid[int(np.argmax(loglik))] - beta) < 0.1
    soft = make_teacher("stochastic", beta=beta, soft=True).label(data, queries).labels[:, 0]
    np.testing.assert_allclose(soft, 1 / (1 + np.exp(-beta * d)), rtol=1e-10)


def test_myopic_matches_discounted_returns(data, queries, returns):
    gamma = 0.9
    w = gamma ** np.arange(24, -1, -1)  # weight gamma^(H-1-t)
    u = np.array([[(r * w).sum() for r in row] for row in segment_rewards(data, queries)])
    y = make_teacher("myopic", gamma=gamma).label(data, queries).labels[:, 0]
    np.testing.assert_array_equal(y, (u[:, 0] > u[:, 1]).astype(float))
    flips = np.mean(y != (returns[:, 0] > returns[:, 1]))
    assert 0.05 < flips < 0.5  # the myopic teacher disagrees with the oracle on some queries


def test_skip_and_equal_thresholds_exact(data, queries, returns):
    thr = 2.5  # about the mean segment return (25 steps x 0.1)
    out = make_teacher("oracle", skip_threshold=thr).label(data, queries)
    kept = returns.max(1) >= thr
    assert 0.2 < kept.mean() < 0.9
    np.testing.assert_array_equal(out.metadata["kept_index"], np.flatnonzero(kept))
    np.testing.assert_array_equal(out.traj_index, queries.traj_index[kept])
    thr = 1.0
    eq = make_teacher("oracle", equal_threshold=thr).label(data, queries).labels
    tie = np.abs(returns[:, 0] - returns[:, 1]) < thr
    assert 0.1 < tie.mean() < 0.5
    np.testing.assert_array_equal(eq[:, 0] == 0.5, tie)
    np.testing.assert_array_equal(eq[~tie, 0], (returns[~tie, 0] > returns[~tie, 1]))


def test_plackett_luce_top1_and_full_ranking_frequencies():
    beta, R = 0.7, np.array([0.0, 1.0, 2.0, 3.0])
    data = TrajectoryDataset([Trajectory(np.zeros((1, 1)), np.zeros((1, 1)), [r]) for r in R])
    q = PreferenceQueries(np.tile([0, 1, 2, 3], (N, 1)), np.zeros((N, 4)), 1)
    lab = make_teacher("stochastic", beta=beta, seed=11).label(data, q).labels
    np.testing.assert_array_equal(np.sort(lab, 1), np.tile([0.0, 1, 2, 3], (N, 1)))
    p = np.exp(beta * R) / np.exp(beta * R).sum()
    top1 = np.bincount(lab.argmax(1), minlength=4) / N
    np.testing.assert_array_less(np.abs(top1 - p), 4 * np.sqrt(p * (1 - p) / N))
    # P(ranking 3 > 2 > 1 > 0) = prod_i exp(beta R_i) / sum_{j ranked after i} exp(beta R_j)
    e = np.exp(beta * R[::-1])
    p_rank = np.prod(e / np.cumsum(e[::-1])[::-1])
    freq = np.mean((lab == [0, 1, 2, 3]).all(1))
    assert abs(freq - p_rank) < 4 * np.sqrt(p_rank * (1 - p_rank) / N), (freq, p_rank)


def test_regret_stochastic_with_known_values(data, queries, returns):
    # V(s) = 2 * first state coordinate, a known value function
    beta = 0.8
    teacher = make_teacher("regret", beta=beta, seed=4, value_fn=lambda obs: 2.0 * obs[:, 0])
    y = teacher.label(data, queries).labels[:, 0]
    u = returns.copy()
    for k in range(2):
        for i in range(N):
            t = data[int(queries.traj_index[i, k])]
            s = int(queries.start[i, k])
            end = min(s + 25, len(t) - 1)
            u[i, k] += 2.0 * (t.state[end, 0] - t.state[s, 0])
    p = 1 / (1 + np.exp(-beta * (u[:, 0] - u[:, 1])))
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / N
    conf = np.abs(p - 0.5) > 0.45  # near-certain decisions follow the regret utility
    assert np.mean(y[conf] == (p[conf] > 0.5)) > 0.95
    assert np.mean(y[conf] == (returns[conf, 0] > returns[conf, 1])) < 0.85


def test_label_queries_budget(data):
    skip = make_teacher("oracle", skip_threshold=2.5)
    out = label_queries(data, skip, num_queries=100, budget=400, seed=0)
    assert out.num_queries == 100 and 100 < out.metadata["num_asked"] <= 400
    assert out.metadata["num_skipped"] == out.metadata["num_asked"] - 100
    out = label_queries(data, skip, num_queries=100, budget=60, seed=0)
    assert out.metadata["num_asked"] == 60 and out.num_queries < 60
    out = label_queries(data, skip, num_queries=100, seed=0)
    assert out.metadata["num_asked"] == 100 and out.num_queries < 100
    out = label_queries(data, "oracle", num_queries=50, k=3, segment_length=10, budget=20, seed=0)
    assert out.num_queries == 20 and out.k == 3 and (out.length == 10).all()
    assert label_queries(data, "oracle", num_queries=0, seed=0).num_queries == 0
    ids = np.array([3, 4, 5])
    out = label_queries(data, "oracle", 30, trajectory_ids=ids, seed=0)
    assert set(np.unique(out.traj_index)) <= set(ids)
    assert out.teacher == "oracle" and out.seed == 0 and out.label_kind == "graded"


def test_seeds_reproducible(data, queries):
    def lab(seed):
        return make_teacher("stochastic", eps=0.1, seed=seed).label(data, queries).labels

    np.testing.assert_array_equal(lab(0), lab(0))
    assert np.mean(lab(0) != lab(1)) > 0.05
    a = label_queries(data, make_teacher("stochastic"), 500, seed=3)
    b = label_queries(data, make_teacher("stochastic"), 500, seed=3)
    c = label_queries(data, make_teacher("stochastic"), 500, seed=4)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.traj_index, b.traj_index)
    assert not np.array_equal(a.traj_index, c.traj_index)
    # one teacher: successive calls draw fresh randomness
    t = make_teacher("stochastic", seed=0)
    assert not np.array_equal(t.label(data, queries).labels, t.label(data, queries).labels)


def test_ten_thousand_queries_label_fast(data, queries):
    q4 = sample_queries(data, N, 4, 25, np.random.default_rng(2))
    for teacher, q in [
        (make_teacher("oracle"), queries),
        (make_teacher("stochastic", eps=0.1, gamma=0.9, equal_threshold=0.1), queries),
        (make_teacher("stochastic", eps=0.1, equal_threshold=0.1), q4),
    ]:
        t0 = time.perf_counter()
        teacher.label(data, q)
        assert time.perf_counter() - t0 < 1.0
