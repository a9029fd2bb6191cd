"""Exact low-rank structure in the numpy engine: detection, and default calls through the
factored products that reach POT's default call's objective (or better) with exact marginals."""

from __future__ import annotations

import numpy as np
import ot
import pytest

import robopref.ot as rot
import robopref.ot._gromov as gromov
import robopref.ot._lowrank as lowrank
from robopref.ot._lowrank import factor


def _sq(X, Y=None):
    D = ot.dist(X, X if Y is None else Y, metric="sqeuclidean")
    return D / D.max()


@pytest.mark.parametrize("d", [1, 2, 10, 30])
def test_factor_is_exact_on_squared_euclidean_costs(d):
    C = _sq(np.random.default_rng(d).normal(size=(300, d)))
    U, V = factor(C)
    assert U.shape == (300, d + 2) and V.shape == (d + 2, 300)
    assert np.abs(U @ V - C).max() <= 1e-13


def test_factor_rejects_full_rank_and_small_matrices():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    assert factor(ot.dist(X, X, metric="euclidean")) is None  # plain distances: full rank
    assert factor(_sq(rng.normal(size=(300, 60)))) is None  # rank 62 > the probe's reach
    assert factor(_sq(X[:40])) is None  # small: dense products are cheap
    # rank 5 plus a perturbation far above rounding: not exact, so not factored
    C = _sq(X) + 1e-8 * rng.random((300, 300))
    assert factor(C) is None


def _instances():
    """(name, M, C1, C2, p, q): low-rank structures of several shapes, n = m = 150..170."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(150, 2)), rng.normal(size=(160, 3))
    yield "sq 2-D vs 3-D", _sq(X[:, :2], Y[:, :2]), _sq(X), _sq(Y), ot.unif(150), ot.unif(160)
    X, Y = rng.uniform(size=(170, 10)), rng.normal(size=(170, 6))
    p, q = rng.dirichlet(np.full(170, 2.0)), rng.dirichlet(np.full(170, 2.0))
    yield "sq 10-D vs 6-D, weights", _sq(X[:, :6], Y), _sq(X), _sq(Y), p, q
    # one side low rank, the other full rank (plain distances)
    D = ot.dist(Y, Y, metric="euclidean")
    yield "sq vs plain", _sq(X[:, :6], Y), _sq(X), D / D.max(), p, q
    # non-symmetric rank-3 costs (two tensor products per step)
    A, B = rng.random((150, 3)), rng.random((3, 150))
    C1, C2 = A @ B, rng.random((150, 2)) @ rng.random((2, 150))
    yield "non-symmetric", rng.random((150, 150)), C1, C2 / C2.max(), ot.unif(150), ot.unif(150)


@pytest.mark.parametrize("eps", [0.005, 0.01, 0.05])
@pytest.mark.parametrize("case", list(_instances()), ids=lambda c: c[0])
def test_low_rank_default_call_no_worse_than_pots(case, eps, monkeypatch):
    """The factored path is taken, and its plan's objective is at most POT's default call's
    x (1 + 1e-6) with marginals within 1e-8, for GW and FGW (alpha 0.5)."""
    _, M, C1, C2, p, q = case
    used = []
    real = lowrank.product

    def spy(hA, hB, **kw):
        fn, low = real(hA, hB, **kw)
        used.append(low)
        return fn, low

    monkeypatch.setattr(gromov, "lowrank_product", spy)
    with np.errstate(all="ignore"):
        _, lp = ot.gromov.entropic_gromov_wasserstein(
            C1, C2, p, q, "square_loss", epsilon=eps, log=True
        )
        _, lpf = ot.gromov.entropic_fused_gromov_wasserstein(
            M, C1, C2, p, q, "square_loss", epsilon=eps, alpha=0.5, log=True
        )
    T, log = rot.entropic_gromov_wasserstein(C1, C2, p, q, eps, log=True)
    Tf, logf = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, eps, 0.5, log=True)
    assert used and all(used)
    for T_, lg, ref, key, alpha in ((T, log, lp, "gw_dist", 1.0), (Tf, logf, lpf, "fgw_dist", 0.5)):
        assert lg["converged"]
        assert lg[key] <= float(ref[key]) * (1 + 1e-6), (lg[key], float(ref[key]))
        # the log's objective is that of the returned plan, computed densely
        assert lg[key] == pytest.approx(float(rot.fgw_objective(M, C1, C2, T_, alpha)), rel=1e-9)
        np.testing.assert_allclose(T_.sum(1), p, atol=1e-8)
        np.testing.assert_allclose(T_.sum(0), q, atol=1e-8)


@pytest.mark.parametrize("tol", [None, 1e-9])
def test_factored_products_give_the_dense_plan(tol, monkeypatch):
    """Same plan with and without the factorisation (default rule and POT's ``tol`` rule):
    the factors change the cost of a product, not its value."""
    _, M, C1, C2, p, q = next(_instances())
    T_fast = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, 0.02, 0.5, tol=tol)
    monkeypatch.setattr(lowrank, "factor", lambda H, **kw: None)
    T_dense = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, 0.02, 0.5, tol=tol)
    assert np.abs(T_fast - T_dense).max() <= 1e-6 * T_dense.max()


def test_default_call_matches_pot_on_full_rank_costs_at_large_eps():
    """Plain (full-rank) distances at eps 0.05, where mixing is now skipped while the plain
    map contracts fast: still no worse than POT's default call."""
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(140, 2)), rng.normal(size=(140, 3))
    C1, C2 = ot.dist(X, X, metric="euclidean"), ot.dist(Y, Y, metric="euclidean")
    C1, C2, p = C1 / C1.max(), C2 / C2.max(), ot.unif(140)
    for eps in (0.02, 0.05, 0.1):
        with np.errstate(all="ignore"):
            _, lp = ot.gromov.entropic_gromov_wasserstein(
                C1, C2, p, p, "square_loss", epsilon=eps, log=True
            )
        _, log = rot.entropic_gromov_wasserstein(C1, C2, p, p, eps, log=True)
        assert log["converged"]
        assert log["gw_dist"] <= float(lp["gw_dist"]) * (1 + 1e-6)
