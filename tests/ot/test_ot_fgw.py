"""Fused Gromov-Wasserstein (both engines) against POT, brute force and its two limits."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import robopref.ot as rot


def _problem(n, m, seed, asym=0.0):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    C1, C2 = ot.dist(X, X, metric="euclidean"), ot.dist(Y, Y, metric="euclidean")
    C1, C2 = C1 / C1.max(), C2 / C2.max()
    if asym:
        C1 = C1 + asym * rng.random((n, n))
        C2 = C2 + asym * rng.random((m, m))
    M = ot.dist(X, Y)  # cross-domain feature cost [n, m]
    M = M / M.max()
    p, q = rng.random(n) + 0.2, rng.random(m) + 0.2
    return M, C1, C2, p / p.sum(), q / q.sum()


def _pot_efgw(M, C1, C2, p, q, eps, alpha):
    return ot.gromov.entropic_fused_gromov_wasserstein(
        M, C1, C2, p, q, "square_loss", epsilon=eps, alpha=alpha, max_iter=5000, tol=1e-12,
        log=True, numItermax=100_000, stopThr=1e-14,
    )  # fmt: skip


def _check(T, log, T_ref, log_ref, p, q):
    np.testing.assert_allclose(T.sum(1), p, atol=1e-6)
    np.testing.assert_allclose(T.sum(0), q, atol=1e-6)
    assert log["fgw_dist"] == pytest.approx(float(log_ref["fgw_dist"]), rel=1e-5)
    assert np.abs(T - T_ref).max() <= 1e-5 * T_ref.max()


def test_fgw_objective_brute_force():
    rng = np.random.default_rng(0)
    M, C1, C2, T = rng.random((3, 4)), rng.random((3, 3)), rng.random((4, 4)), rng.random((3, 4))
    gw = sum(
        (C1[i, k] - C2[j, l]) ** 2 * T[i, j] * T[k, l]
        for i in range(3) for j in range(4) for k in range(3) for l in range(4)  # noqa: E741
    )  # fmt: skip
    want = 0.7 * (M * T).sum() + 0.3 * gw
    assert rot.fgw_objective(M, C1, C2, T, alpha=0.3) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("alpha", "eps", "asym"), [(0.5, 0.02, 0.0), (0.2, 0.01, 0.0), (0.8, 0.05, 0.3)]
)
def test_entropic_fgw_matches_pot(alpha, eps, asym):
    M, C1, C2, p, q = _problem(25, 30, 3, asym)
    T, log = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, eps, alpha, tol=1e-12, log=True)
    T_ref, log_ref = _pot_efgw(M, C1, C2, p, q, eps, alpha)
    assert log["converged"]
    _check(T, log, T_ref, log_ref, p, q)
    # the torch engine (float64) reaches the same fixed point
    Tt, logt = rot.entropic_fused_gromov_wasserstein(
        *(torch.as_tensor(x) for x in (M, C1, C2, p, q)), eps, alpha, tol=1e-12, log=True
    )
    assert isinstance(Tt, torch.Tensor)
    _check(Tt.numpy(), logt, T_ref, log_ref, p, q)


def test_fgw_limits_are_gw_and_sinkhorn():
    M, C1, C2, p, q = _problem(20, 15, 4)
    T1 = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, 0.02, alpha=1.0, tol=1e-12)
    Tg = rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.02, tol=1e-12)
    np.testing.assert_allclose(T1, Tg, atol=1e-14)
    # alpha = 0: the gradient is M whatever T, so one Sinkhorn on M
    T0, log0 = rot.entropic_fused_gromov_wasserstein(
        M, C1, C2, p, q, 0.02, alpha=0.0, tol=1e-12, log=True
    )
    Ts = ot.sinkhorn(p, q, M, 0.02, numItermax=100_000, stopThr=1e-14)
    np.testing.assert_allclose(T0, Ts, atol=1e-9)
    assert log0["fgw_dist"] == pytest.approx((M * Ts).sum(), rel=1e-9)


def test_exact_fgw_through_pot():
    M, C1, C2, p, q = _problem(12, 10, 5)
    T, log = rot.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=0.4, method="cg", log=True)
    T_ref, log_ref = ot.gromov.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=0.4, log=True)
    np.testing.assert_allclose(T, T_ref, atol=1e-12)
    assert log["fgw_dist"] == pytest.approx(float(log_ref["fgw_dist"]))
    T_e = rot.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=0.4, eps=0.05)
    np.testing.assert_allclose(
        T_e, rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, 0.05, 0.4)
    )


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_batched_fgw_equals_single(engine):
    probs = [_problem(10, 12, s) for s in range(3)]
    M, C1, C2, p, q = (np.stack([pr[i] for pr in probs]) for i in range(5))
    conv = (lambda x: torch.as_tensor(x)) if engine == "torch" else (lambda x: x)
    T = rot.entropic_fused_gromov_wasserstein_batched(
        *(conv(x) for x in (M, C1, C2, p, q)), 0.05, 0.6, tol=1e-11
    )
    assert tuple(T.shape) == (3, 10, 12)
    for k in range(3):
        Tk = rot.entropic_fused_gromov_wasserstein(
            M[k], C1[k], C2[k], p[k], q[k], 0.05, 0.6, tol=1e-11
        )
        np.testing.assert_allclose(np.asarray(T[k]), Tk, atol=1e-9)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize(
    ("M", "alpha", "match"),
    [
        (
            np.ones((4, 5)),
            0.5,
            r"M: expected shape \[..., n_source, n_target\] = \(4, 6\) .* found \(4, 5\)",
        ),
        (np.ones((6, 4)), 0.5, r"M: expected shape .* found \(6, 4\)"),
        (np.ones((4, 6)), 1.5, r"alpha: expected a number in \[0, 1\], found 1.5"),
        (np.ones((4, 6)), -0.1, r"alpha: expected a number in \[0, 1\]"),
        (np.full((4, 6), np.nan), 0.5, r"M: contains NaN or inf \(shape \(4, 6\)"),
    ],
)
def test_fgw_bad_input_raises(engine, M, alpha, match):
    C1, C2 = np.ones((4, 4)) - np.eye(4), np.ones((6, 6)) - np.eye(6)
    if engine == "torch":
        M, C1, C2 = (torch.as_tensor(x) for x in (M, C1, C2))
    with pytest.raises(ValueError, match=match):
        rot.entropic_fused_gromov_wasserstein(M, C1, C2, None, None, 0.1, alpha)


@pytest.mark.parametrize(
    ("n", "eps", "alpha"), [(40, 0.01, 1.0), (128, 0.05, 1.0), (128, 0.02, 0.5)]
)
def test_default_stopping_rule_reaches_pot_objective(n, eps, alpha):
    """The default call (objective rule; float32 products while far at n = 128) ends within
    1e-6 relative of POT's tightly converged objective, with marginals within 1e-6."""
    M, C1, C2, p, q = _problem(n, n, 7)
    T_ref, log_ref = _pot_efgw(M, C1, C2, p, q, eps, alpha)
    T, log = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, eps, alpha, log=True)
    assert log["converged"]
    np.testing.assert_allclose(T.sum(1), p, atol=1e-6)
    np.testing.assert_allclose(T.sum(0), q, atol=1e-6)
    ref = float(log_ref["fgw_dist"])
    assert log["fgw_dist"] <= ref * (1 + 1e-6)
    assert log["fgw_dist"] == pytest.approx(ref, rel=1e-5)
    # fewer outer steps than POT's own rule (||dT||_F < 1e-9, tested every 10th step)
    assert log["n_iter"] < 10 * len(log_ref["err"])


def test_stop_rule_by_hand():
    from robopref.ot._gromov import _Stop

    # objective rule every 2 steps: converged once the change and the geometric tail are small
    s = _Stop(None, 1e-3, 2, 100)
    for it, obj in [(1, 1.0), (3, 0.5), (5, 0.4999), (7, 0.49989)]:
        s.record(it, np.array([obj]))
    # changes: 0.5 -> 2e-4 -> 2e-5 (r = 0.1, tail 2.2e-6): met at step 7
    assert s.obj_ok
    assert not s.done(7, 1.0, tight=False) and s.finish  # loose inner tol: one more step
    assert s.final_step(8) and s.done(8, 1.0, tight=True) and s.converged
    # a slow geometric drift (r = 0.99): each window moves 5e-6 < obj_tol, but the tail
    # (~5e-4) does not, so it is not converged
    s = _Stop(None, 1e-4, 2, 100)
    for k, it in enumerate(range(1, 9, 2)):
        s.record(it, np.array([1.0 + 5e-4 * 0.99**k]))
    assert not s.obj_ok
    # the ||dT||_F rule alone (explicit tol) never looks at the objective
    s = _Stop(1e-9, None, 2, 100)
    assert not s.wants_objective(1) and s.done(3, 1e-10, tight=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fgw_cuda_matches_cpu():
    M, C1, C2, p, q = _problem(30, 25, 8)
    T = rot.entropic_fused_gromov_wasserstein(
        *(torch.as_tensor(x, device="cuda") for x in (M, C1, C2, p, q)), 0.02, 0.6, tol=1e-11
    )
    assert T.device.type == "cuda"
    T_np = rot.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, 0.02, 0.6, tol=1e-11)
    assert np.abs(T.cpu().numpy() - T_np).max() <= 1e-6 * T_np.max()
