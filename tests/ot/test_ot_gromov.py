"""Entropic and exact Gromov-Wasserstein (Numba engine) against POT and brute force."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest

import robopref.ot as rot


def _clouds(n, m, seed, asym=0.0):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(m, 3))
    C1, C2 = ot.dist(X, X, metric="euclidean"), ot.dist(Y, Y, metric="euclidean")
    C1, C2 = C1 / C1.max(), C2 / C2.max()
    if asym:
        C1 = C1 + asym * rng.random((n, n))
        C2 = C2 + asym * rng.random((m, m))
    p, q = rng.random(n) + 0.2, rng.random(m) + 0.2
    return C1, C2, p / p.sum(), q / q.sum()


def _pot_egw(C1, C2, p, q, eps, loss="square_loss"):
    return ot.gromov.entropic_gromov_wasserstein(
        C1, C2, p, q, loss, epsilon=eps, max_iter=5000, tol=1e-12, log=True,
        numItermax=100_000, stopThr=1e-14,
    )  # fmt: skip


def _check_against_pot(T, log, T_ref, log_ref, p, q):
    np.testing.assert_allclose(T.sum(1), p, atol=1e-6)
    np.testing.assert_allclose(T.sum(0), q, atol=1e-6)
    assert np.abs(T - T_ref).max() <= 1e-5 * T_ref.max()
    assert log["gw_dist"] == pytest.approx(float(log_ref["gw_dist"]), rel=1e-5)


def test_gw_objective_brute_force():
    rng = np.random.default_rng(0)
    C1, C2, T = rng.random((3, 3)), rng.random((4, 4)), rng.random((3, 4))
    sq = sum(
        (C1[i, k] - C2[j, l]) ** 2 * T[i, j] * T[k, l]
        for i in range(3) for j in range(4) for k in range(3) for l in range(4)  # noqa: E741
    )  # fmt: skip
    assert rot.gw_objective(C1, C2, T) == pytest.approx(sq, rel=1e-12)
    kl = sum(
        (C1[i, k] * np.log(C1[i, k] / C2[j, l]) - C1[i, k] + C2[j, l]) * T[i, j] * T[k, l]
        for i in range(3) for j in range(4) for k in range(3) for l in range(4)  # noqa: E741
    )  # fmt: skip
    assert rot.gw_objective(C1, C2, T, loss="kl") == pytest.approx(kl, rel=1e-9)


@pytest.mark.parametrize(("n", "m", "eps", "seed"), [(20, 30, 0.05, 0), (40, 40, 0.01, 1)])
def test_entropic_gw_matches_pot_symmetric(n, m, eps, seed):
    C1, C2, p, q = _clouds(n, m, seed)
    T, log = rot.entropic_gromov_wasserstein(C1, C2, p, q, eps, tol=1e-12, log=True)
    T_ref, log_ref = _pot_egw(C1, C2, p, q, eps)
    assert log["converged"]
    _check_against_pot(T, log, T_ref, log_ref, p, q)
    assert log["gw_dist"] == pytest.approx(rot.gw_objective(C1, C2, T), rel=1e-12)


def test_entropic_gw_matches_pot_nonsymmetric():
    C1, C2, p, q = _clouds(25, 18, 2, asym=0.3)
    T, log = rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.02, tol=1e-12, log=True)
    T_ref, log_ref = _pot_egw(C1, C2, p, q, 0.02)
    _check_against_pot(T, log, T_ref, log_ref, p, q)
    # treating non-symmetric costs as symmetric is a different (wrong) gradient
    T_sym = rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.02, symmetric=True, tol=1e-12)
    assert np.abs(T_sym - T).max() > 1e-3 * T.max()


def test_entropic_gw_matches_pot_kl_loss():
    C1, C2, p, q = _clouds(15, 20, 3)
    C1, C2 = C1 + 0.1, C2 + 0.1
    T, log = rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.05, loss="kl", tol=1e-12, log=True)
    T_ref, log_ref = _pot_egw(C1, C2, p, q, 0.05, loss="kl_loss")
    _check_against_pot(T, log, T_ref, log_ref, p, q)


def test_recovers_permutation_of_isometric_spaces():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(12, 2))
    C1 = ot.dist(X, X, metric="euclidean")
    C1 /= C1.max()
    perm = rng.permutation(12)
    C2 = C1[np.ix_(perm, perm)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converges: no max_iter / inner-accuracy warning
        T, log = rot.entropic_gromov_wasserstein(C1, C2, None, None, 2e-3, log=True)
    # point perm[j] of X is point j of the target
    assert (T.argmax(1) == np.argsort(perm)).all()
    assert log["gw_dist"] < 1e-3  # the exact permutation scores 0; entropy blurs it
    assert log["inner_err"] < 1e-6


def test_batched_gw_equals_single():
    probs = [_clouds(10, 12, s) for s in range(4)]
    C1 = np.stack([c[0] for c in probs])
    C2 = np.stack([c[1] for c in probs])
    p = np.stack([c[2] for c in probs])
    q = np.stack([c[3] for c in probs])
    T, log = rot.entropic_gromov_wasserstein_batched(C1, C2, p, q, 0.05, tol=1e-11, log=True)
    assert T.shape == (4, 10, 12) and log["gw_dist"].shape == (4,)
    for k, (c1, c2, pk, qk) in enumerate(probs):
        Tk = rot.entropic_gromov_wasserstein(c1, c2, pk, qk, 0.05, tol=1e-11)
        assert np.abs(T[k] - Tk).max() <= 1e-7 * Tk.max()


def test_exact_cg_through_pot():
    C1, C2, p, q = _clouds(15, 15, 5)
    T, log = rot.gromov_wasserstein(C1, C2, p, q, method="cg", log=True)
    T_ref, log_ref = ot.gromov.gromov_wasserstein(C1, C2, p, q, log=True)
    np.testing.assert_allclose(T, T_ref, atol=1e-12)
    assert log["gw_dist"] == pytest.approx(log_ref["gw_dist"])
    assert rot.gw_objective(C1, C2, T) == pytest.approx(float(log_ref["gw_dist"]), rel=1e-9)
    # the entropic method through the same entry point
    T_e = rot.gromov_wasserstein(C1, C2, p, q, method="entropic", eps=0.05)
    np.testing.assert_allclose(T_e, rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.05))
    with pytest.raises(ValueError, match="method"):
        rot.gromov_wasserstein(C1, C2, method="bogus")


def test_degenerate_gw_inputs():
    # n = 1: the coupling is q itself
    C2, q = _clouds(5, 5, 0)[1], np.full(5, 0.2)
    T = rot.entropic_gromov_wasserstein(np.zeros((1, 1)), C2, None, q, 0.01)
    np.testing.assert_allclose(T, q[None, :], atol=1e-9)
    # zero costs on both sides: every coupling has objective 0, entropy picks p q^T
    p, q = np.full(4, 0.25), np.full(6, 1 / 6)
    T = rot.entropic_gromov_wasserstein(np.zeros((4, 4)), np.zeros((6, 6)), p, q, 0.01)
    np.testing.assert_allclose(T, np.outer(p, q), atol=1e-12)
    # duplicate points: finite, marginals kept
    C1, C2, p, q = _clouds(6, 6, 1)
    idx = np.array([0, 0, 1, 2, 3, 3])
    C1d = C1[np.ix_(idx, idx)]
    T = rot.entropic_gromov_wasserstein(C1d, C2, None, None, 1e-3, max_iter=300, tol=1e-8)
    assert np.isfinite(T).all()
    np.testing.assert_allclose(T.sum(1), np.full(6, 1 / 6), atol=1e-6)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.ones((3, 4)), np.ones((3, 3))), r"C1: expected shape \[..., n, n\]"),
        ((np.ones((3, 3)), np.ones((2, 3))), r"C2: expected shape"),
        ((np.ones((3, 3)), np.ones((3, 3)), np.ones(2) / 2), r"p: expected shape \[..., 3\]"),
        ((np.full((3, 3), np.inf), np.ones((3, 3))), "C1: contains NaN or inf"),
    ],
)
def test_gw_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        rot.entropic_gromov_wasserstein(*args)


def test_kl_needs_nonnegative_costs_and_unknown_loss():
    C1, C2, _, _ = _clouds(4, 4, 0)
    with pytest.raises(ValueError, match="non-negative"):
        rot.entropic_gromov_wasserstein(-C1, C2, loss="kl")
    with pytest.raises(ValueError, match="loss"):
        rot.entropic_gromov_wasserstein(C1, C2, loss="l1")
