"""The default-rule outer loop of the numpy engine (issue 14, point 2): Anderson mixing of the
outer map, the residual-guarded objective rule, and agreement with POT's default call."""

from __future__ import annotations

import numpy as np
import ot
import pytest

import robopref.ot as rot
from robopref.ot._gromov import _anderson, _obj_converged


def test_anderson_step_is_exact_on_an_affine_map():
    """On an affine map g(x) = A x + c in R^3, three secant pairs make the type-II Anderson
    step land on the fixed point; the carried products (here P = L x, linear) are mixed the
    same way, so they equal L at the mixed point."""
    rng = np.random.default_rng(0)
    A = 0.5 * rng.random((3, 3)) / 3.0  # contraction
    c = rng.random(3)
    L = rng.random((2, 3))
    x_star = np.linalg.solve(np.eye(3) - A, c)
    xs = [np.zeros(3)]
    for _ in range(4):
        xs.append(A @ xs[-1] + c)  # plain iterates: x_{k+1} = g(x_k)
    g = xs[1:]  # g(x_k)
    r = [g[k] - xs[k] for k in range(4)]  # residuals
    mem, head = 3, 0
    dF = np.zeros((1, mem, 3), np.float32)
    dZ = np.zeros((1, mem, 3 + 2), np.float32)
    for k in range(1, 4):  # ring of the 3 differences, newest at head - 1
        dF[0, head] = r[k] - r[k - 1]
        dZ[0, head] = np.concatenate([g[k] - g[k - 1], L @ g[k] - L @ g[k - 1]])
        head = (head + 1) % mem
    x, (P,) = _anderson(dF, dZ, r[3][None], g[3][None], [(L @ g[3])[None]], np.array([3]), head)
    np.testing.assert_allclose(x[0], x_star, rtol=1e-5)
    np.testing.assert_allclose(P[0], L @ x[0], rtol=1e-5)
    # cnt = 0: a plain step, returned unchanged
    x0, (P0,) = _anderson(dF, dZ, r[3][None], g[3][None], [(L @ g[3])[None]], np.array([0]), 0)
    np.testing.assert_array_equal(x0[0], g[3])
    np.testing.assert_array_equal(P0[0], L @ g[3])


def test_objective_rule_needs_a_contracting_residual():
    tol = 1e-6
    one = lambda v: np.array([v])  # noqa: E731
    # small, shrinking changes while the residual contracts at rate 0.1: converged
    assert _obj_converged([one(1e-5), one(1e-6), one(1e-7)], [one(1e-4), one(1e-5), one(1e-6)], tol)
    # same objective changes, but the residual grows (a plateau, T still drifting): not
    assert not _obj_converged(
        [one(1e-5), one(1e-8), one(1e-9)], [one(1e-4), one(1.1e-4), one(1.2e-4)], tol
    )
    # one lucky small change after large ones, residual contracting slowly (rho = 0.9):
    # 1e-5 per unit of residual ... the remaining change ~ 1e-3 * 0.9e-4... > tol: not
    assert not _obj_converged(
        [one(1e-3), one(1e-3), one(1e-9)], [one(1e-1), one(1e-1), one(0.9e-1)], tol
    )
    # residual below POT's tolerance: converged whatever its ratio (rounding floor)
    assert _obj_converged([one(1e-7), one(1e-8)], [one(1e-10), one(5e-10)], tol)
    # a batch converges only when every problem does
    assert not _obj_converged(
        [np.array([1e-7, 1e-7]), np.array([1e-8, 1e-5])],
        [np.array([1e-10, 1e-10]), np.array([5e-11, 5e-11])],
        tol,
    )


def _instance(n, seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n + seed, 3))
    C1, C2 = ot.dist(X, X, metric="euclidean"), ot.dist(Y, Y, metric="euclidean")
    M = ot.dist(X, Y[:, :2])
    p = rng.random(n) + 0.2
    return M / M.max(), C1 / C1.max(), C2 / C2.max(), p / p.sum(), ot.unif(n + seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.01, 0.05])
def test_default_call_no_worse_than_pots_default_call(seed, eps):
    """Both default calls (POT: ||dT||_F < 1e-9; ours: objective + residual rule, Anderson
    mixing): our objective is at most POT's x (1 + 1e-6), marginals within 1e-6, for GW and
    FGW (alpha 0.5)."""
    M, C1, C2, p, q = _instance(40, seed)
    with np.errstate(all="ignore"):
        _, lp = ot.gromov.entropic_gromov_wasserstein(
            C1, C2, p, q, "square_loss", epsilon=eps, log=True
        )
        _, lpf = ot.gromov.entropic_fused_gromov_wasserstein(
            M, C1, C2, p, q, "square_loss", epsilon=eps, alpha=0.5, log=True
        )
    T, log = rot.entropic_gromov_wasserstein(C1, C2, p, q, eps, log=True)
    Tf, logf = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, eps, 0.5, log=True)
    for T_, lg, ref, key in ((T, log, lp, "gw_dist"), (Tf, logf, lpf, "fgw_dist")):
        assert lg["converged"]
        assert lg[key] <= float(ref[key]) * (1 + 1e-6)
        assert lg[key] == pytest.approx(float(rot.fgw_objective(M, C1, C2, T_, 1.0 if key ==
                                                                 "gw_dist" else 0.5)), rel=1e-9)  # fmt: skip
        np.testing.assert_allclose(T_.sum(1), p, atol=1e-6)
        np.testing.assert_allclose(T_.sum(0), q, atol=1e-6)


def test_default_rule_batch_equals_single():
    """Each problem of a batch is mixed and judged as it would be alone: the default call on
    a batch gives each problem's single default call (up to the joint stopping point)."""
    probs = [_instance(30, seed)[1:3] for seed in (0, 1, 2)]
    C1 = np.stack([c1 for c1, _ in probs])
    C2 = np.stack([c2[:30, :30] for _, c2 in probs])
    T, log = rot.entropic_gromov_wasserstein_batched(C1, C2, None, None, 0.02, log=True)
    assert log["converged"]
    for k in range(3):
        Tk = rot.entropic_gromov_wasserstein(C1[k], C2[k], None, None, 0.02)
        assert np.abs(T[k] - Tk).max() <= 1e-5 * Tk.max()
