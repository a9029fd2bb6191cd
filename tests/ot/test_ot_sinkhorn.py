"""Sinkhorn (Numba engine) against POT and hand-computed plans."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import ot
import pytest

import robopref.ot as rot


def _problem(n, m, seed, uniform=False):
    rng = np.random.default_rng(seed)
    M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(m, 2)))
    M /= M.max()
    if uniform:
        return ot.unif(n), ot.unif(m), M
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M


def _pot(a, b, M, eps):
    return ot.sinkhorn(a, b, M, eps, method="sinkhorn_log", numItermax=200_000, stopThr=1e-13)


def test_import_is_light():
    code = "import sys, robopref.ot; print('torch' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_two_point_closed_form():
    # a = b = [.5, .5], M = [[0, 1], [1, 0]]: P_11 = 0.5 / (1 + exp(-1 / eps))
    eps = 0.5
    M = np.array([[0.0, 1.0], [1.0, 0.0]])
    P = rot.sinkhorn(None, None, M, eps, tol=1e-14)
    x = 0.5 / (1 + np.exp(-1 / eps))
    np.testing.assert_allclose(P, [[x, 0.5 - x], [0.5 - x, x]], rtol=1e-12)


@pytest.mark.parametrize(
    ("n", "m", "eps", "seed"), [(7, 5, 0.1, 0), (60, 40, 0.02, 1), (30, 30, 2e-3, 2)]
)
def test_matches_pot_random(n, m, eps, seed):
    a, b, M = _problem(n, m, seed)
    P, log = rot.sinkhorn(a, b, M, eps, tol=1e-12, max_iter=100_000, log=True)
    ref = _pot(a, b, M, eps)
    assert log["converged"]
    np.testing.assert_allclose(P.sum(1), a, atol=1e-6)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-6)
    assert np.abs(P - ref).max() <= 1e-5 * ref.max()
    # potentials reproduce the plan
    np.testing.assert_allclose(
        np.exp((log["f"][:, None] + log["g"][None, :] - M) / eps), P, rtol=1e-9, atol=1e-300
    )


def test_matches_pot_structured_1d():
    # sorted 1-D grids, squared distance: plan concentrates on the monotone matching
    x, y = np.linspace(0, 1, 40), np.linspace(0, 1, 50) ** 2
    M = (x[:, None] - y[None, :]) ** 2
    a, b = ot.unif(40), ot.unif(50)
    P = rot.sinkhorn(a, b, M, 1e-3, tol=1e-12, max_iter=100_000)
    ref = _pot(a, b, M, 1e-3)
    assert np.abs(P - ref).max() <= 1e-5 * ref.max()


def test_warm_start_reuses_potentials():
    a, b, M = _problem(50, 50, 3)
    P, log = rot.sinkhorn(a, b, M, 0.01, tol=1e-10, log=True)
    P2, log2 = rot.sinkhorn(a, b, M, 0.01, tol=1e-10, warm_start=(log["f"], log["g"]), log=True)
    assert log2["n_iter"] <= 2 < log["n_iter"]
    np.testing.assert_allclose(P2, P, rtol=1e-7, atol=1e-12)
    # a nearby problem converges faster from the old potentials than from zero
    M3 = M + 0.01 * np.random.default_rng(0).random(M.shape)
    _, cold = rot.sinkhorn(a, b, M3, 0.01, tol=1e-10, log=True)
    _, warm = rot.sinkhorn(a, b, M3, 0.01, tol=1e-10, warm_start=(log["f"], log["g"]), log=True)
    assert warm["n_iter"] < cold["n_iter"]


def test_batched_equals_single_and_pot():
    probs = [_problem(12, 9, s) for s in range(5)]
    A = np.stack([p[0] for p in probs])
    B = np.stack([p[1] for p in probs])
    Ms = np.stack([p[2] for p in probs])
    P, log = rot.sinkhorn_batched(A, B, Ms, 0.05, tol=1e-12, log=True)
    assert P.shape == (5, 12, 9) and log["n_iter"].shape == (5,)
    for k, (a, b, M) in enumerate(probs):
        np.testing.assert_allclose(P[k], rot.sinkhorn(a, b, M, 0.05, tol=1e-12), rtol=1e-9)
        ref = _pot(a, b, M, 0.05)
        assert np.abs(P[k] - ref).max() <= 1e-5 * ref.max()
    # shared weights broadcast over the batch
    P1 = rot.sinkhorn(None, None, Ms, 0.05, tol=1e-12)
    np.testing.assert_allclose(P1.sum(-1), np.full((5, 12), 1 / 12), atol=1e-9)


def test_degenerate_inputs_stay_finite():
    # n = 1: the only plan is b itself
    P = rot.sinkhorn(np.ones(1), np.array([0.2, 0.8]), np.array([[3.0, 1.0]]), 0.1)
    np.testing.assert_allclose(P, [[0.2, 0.8]], atol=1e-12)
    # zero costs: independent coupling
    a, b, _ = _problem(6, 4, 0)
    np.testing.assert_allclose(rot.sinkhorn(a, b, np.zeros((6, 4)), 0.1), np.outer(a, b), 1e-9)
    # duplicate points: identical rows of M give proportional rows of P
    M = np.vstack([_problem(3, 5, 1)[2]] * 2)
    P = rot.sinkhorn(None, None, M, 0.05, tol=1e-12)
    np.testing.assert_allclose(P[:3], P[3:], rtol=1e-8)
    # very small eps (M / eps up to 1e9, far beyond exp's range): finite, rows exact, and a
    # warning (not a silent NaN) when the budget runs out
    a, b, M = _problem(20, 20, 4)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        P = rot.sinkhorn(a, b, 1e3 * M, 1e-6, max_iter=2_000, tol=1e-9)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(1), a, atol=1e-9)
    # eps = 1e-4 (M / eps up to 1e4) still converges
    P = rot.sinkhorn(a, b, M, 1e-4, max_iter=200_000, tol=1e-8)
    assert np.abs(P.sum(0) - b).sum() <= 1e-8
    # zero-mass entries get empty rows / columns
    a = np.array([0.5, 0.0, 0.5])
    b = np.array([0.0, 0.4, 0.6])
    P = rot.sinkhorn(a, b, _problem(3, 3, 5)[2], 0.05, tol=1e-12)
    assert np.isfinite(P).all() and P[1].sum() == 0 and P[:, 0].sum() == 0
    np.testing.assert_allclose(P.sum(0), b, atol=1e-9)


def test_not_converged_warns():
    a, b, M = _problem(30, 30, 6)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        rot.sinkhorn(a, b, M, 1e-3, max_iter=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
        ({"M": np.full((3, 4), np.nan)}, "M: contains NaN"),
        ({"a": np.ones(4) / 4}, r"a: expected shape \[..., 3\]"),
        ({"b": np.array([0.5, 0.5, 0.5, 0.5])}, "same total mass"),
        ({"a": np.array([1.5, -0.5, 0.0])}, "a: weights must be >= 0"),
        ({"M": np.ones(3)}, "M: expected shape"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"a": None, "b": None, "M": np.ones((3, 4)), "eps": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        rot.sinkhorn(args["a"], args["b"], args["M"], args["eps"])


def test_sinkhorn_cost_and_batched_shape_check():
    a, b, M = _problem(8, 8, 7)
    c = rot.sinkhorn_cost(a, b, M, 0.05, tol=1e-12)
    np.testing.assert_allclose(c, ot.sinkhorn2(a, b, M, 0.05, stopThr=1e-13), rtol=1e-6)
    with pytest.raises(ValueError, match=r"M: expected shape \[B, n, m\]"):
        rot.sinkhorn_batched(a, b, M, 0.05)


@pytest.mark.slow
def test_row_parallel_kernel_matches_sequential(monkeypatch):
    # the row-parallel kernel is opt-in (ROBOPREF_OT_ROW_PARALLEL_MIN); compiling it takes ~15 s
    import robopref.ot._gromov as gw_mod
    import robopref.ot._sinkhorn as sk_mod

    a, b, M = _problem(70, 90, 8)
    P_seq = rot.sinkhorn(a, b, M, 0.01, tol=1e-12)
    monkeypatch.setattr(sk_mod, "_PARALLEL_MIN_SIZE", 1)
    monkeypatch.setattr(gw_mod, "_PARALLEL_MIN_SIZE", 1)
    np.testing.assert_allclose(rot.sinkhorn(a, b, M, 0.01, tol=1e-12), P_seq, rtol=1e-10)
    C1, C2 = M @ M.T, M.T @ M
    T_par = rot.entropic_gromov_wasserstein(C1 / C1.max(), C2 / C2.max(), a, b, 0.05)
    monkeypatch.setattr(gw_mod, "_PARALLEL_MIN_SIZE", 10**12)
    T_seq = rot.entropic_gromov_wasserstein(C1 / C1.max(), C2 / C2.max(), a, b, 0.05)
    np.testing.assert_allclose(T_par, T_seq, rtol=1e-8, atol=1e-14)


def test_rounding_level_mass_mismatch_is_absorbed():
    a, b, M = _problem(10, 8, 9)
    b = b * (1 + 1e-8)
    P, log = rot.sinkhorn(a, b, M, 0.05, log=True)
    assert log["converged"]
    np.testing.assert_allclose(P.sum(), 1.0, atol=1e-12)
