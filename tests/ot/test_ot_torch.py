"""Torch engine: agreement with POT / the Numba engine, batching, gradients, CUDA."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch

import robopref.ot as rot


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # tiny matrices: on a busy 2-core machine, intra-op threads only add spin-wait overhead
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _problem(n, m, seed):
    rng = np.random.default_rng(seed)
    M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(m, 2)))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M / M.max()


def _clouds(n, m, seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(m, 3))
    C1, C2 = ot.dist(X, X, metric="euclidean"), ot.dist(Y, Y, metric="euclidean")
    return C1 / C1.max(), C2 / C2.max(), ot.unif(n), ot.unif(m)


def _t(*xs, **kw):
    return [torch.as_tensor(x, **kw) for x in xs]


def test_sinkhorn_torch_matches_pot_and_returns_torch():
    a, b, M = _problem(30, 20, 0)
    P, log = rot.sinkhorn(*_t(a, b, M), 0.02, tol=1e-12, max_iter=50_000, log=True)
    assert isinstance(P, torch.Tensor) and P.dtype == torch.float64
    ref = ot.sinkhorn(a, b, M, 0.02, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    assert (P.numpy() - ref).__abs__().max() <= 1e-5 * ref.max()
    np.testing.assert_allclose(P.sum(1).numpy(), a, atol=1e-6)
    np.testing.assert_allclose(P.sum(0).numpy(), b, atol=1e-6)
    assert bool(log["converged"])


def test_sinkhorn_torch_batch_dims_and_warm_start():
    probs = [_problem(8, 6, s) for s in range(6)]
    A = torch.tensor(np.stack([p[0] for p in probs])).reshape(2, 3, 8)
    B = torch.tensor(np.stack([p[1] for p in probs])).reshape(2, 3, 6)
    Ms = torch.tensor(np.stack([p[2] for p in probs])).reshape(2, 3, 8, 6)
    P, log = rot.sinkhorn(A, B, Ms, 0.05, tol=1e-12, log=True)
    assert P.shape == (2, 3, 8, 6) and log["err"].shape == (2, 3)
    P_np = rot.sinkhorn(A.numpy(), B.numpy(), Ms.numpy(), 0.05, tol=1e-12)
    np.testing.assert_allclose(P.numpy(), P_np, rtol=1e-7, atol=1e-14)
    _, log2 = rot.sinkhorn(A, B, Ms, 0.05, tol=1e-12, warm_start=(log["f"], log["g"]), log=True)
    assert log2["n_iter"] <= 10 < log["n_iter"]


def test_sinkhorn_gradient_is_the_plan():
    # envelope theorem: d/dM min_P <P, M> - eps H(P) = P*
    a, b, M = _problem(6, 5, 1)
    eps = 0.1
    a, b = _t(a, b)
    M = torch.tensor(M, requires_grad=True)
    P = rot.sinkhorn(a, b, M, eps, tol=1e-13, max_iter=5000)
    value = (P * M).sum() + eps * (P * (torch.log(P) - 1)).sum()
    (grad,) = torch.autograd.grad(value, M)
    np.testing.assert_allclose(grad.numpy(), P.detach().numpy(), rtol=1e-6, atol=1e-10)


def test_sinkhorn_gradcheck_through_plan():
    a, b, M = _problem(4, 3, 2)
    a, b = _t(a, b)
    M = torch.tensor(M, requires_grad=True)
    w = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(M):
        return (rot.sinkhorn(a, b, M, 0.2, tol=1e-14, max_iter=5000) * w).sum()

    assert torch.autograd.gradcheck(f, (M,), eps=1e-6, atol=1e-6)


def test_sinkhorn_float32_and_zero_mass():
    a, b, M = _problem(10, 10, 3)
    a[2] = 0.0
    a /= a.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float32 default tolerance is reachable
        P = rot.sinkhorn(*_t(a, b, M, dtype=torch.float32), 0.05)
    assert P.dtype == torch.float32 and torch.isfinite(P).all()
    assert float(P[2].sum()) == 0.0
    np.testing.assert_allclose(P.sum(0).numpy(), b, atol=1e-5)


def test_sinkhorn_torch_bad_input():
    with pytest.raises(ValueError, match="a: expected shape"):
        rot.sinkhorn(torch.ones(2) / 2, None, torch.ones(3, 4), 0.1)
    with pytest.raises(ValueError, match="M: contains NaN"):
        rot.sinkhorn(None, None, torch.full((3, 4), float("nan")), 0.1)


def test_entropic_gw_torch_matches_numba_and_pot():
    C1, C2, p, q = _clouds(20, 25, 0)
    T, log = rot.entropic_gromov_wasserstein(*_t(C1, C2, p, q), 0.02, tol=1e-12, log=True)
    T_np, log_np = rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.02, tol=1e-12, log=True)
    assert isinstance(T, torch.Tensor)
    assert np.abs(T.numpy() - T_np).max() <= 1e-7 * T_np.max()
    T_ref, log_ref = ot.gromov.entropic_gromov_wasserstein(
        C1, C2, p, q, "square_loss", epsilon=0.02, max_iter=5000, tol=1e-12, log=True,
        numItermax=100_000, stopThr=1e-14,
    )  # fmt: skip
    assert np.abs(T.numpy() - T_ref).max() <= 1e-5 * T_ref.max()
    assert log["gw_dist"] == pytest.approx(float(log_ref["gw_dist"]), rel=1e-5)
    assert float(rot.gw_objective(*_t(C1, C2), T)) == pytest.approx(log["gw_dist"], rel=1e-10)


def test_entropic_gw_torch_batched_equals_single():
    probs = [_clouds(9, 11, s) for s in range(3)]
    C1, C2 = (torch.tensor(np.stack([c[i] for c in probs])) for i in (0, 1))
    T = rot.entropic_gromov_wasserstein_batched(C1, C2, None, None, 0.05, tol=1e-11)
    assert T.shape == (3, 9, 11)
    for k in range(3):
        Tk = rot.entropic_gromov_wasserstein(C1[k], C2[k], None, None, 0.05, tol=1e-11)
        assert float((T[k] - Tk).abs().max()) <= 1e-7 * float(Tk.max())


def test_entropic_gw_torch_float32_batch():
    probs = [_clouds(16, 12, s) for s in range(3)]
    C1, C2 = (torch.tensor(np.stack([c[i] for c in probs])) for i in (0, 1))
    T64 = rot.entropic_gromov_wasserstein(C1, C2, None, None, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T32 = rot.entropic_gromov_wasserstein(C1.float(), C2.float(), None, None, 0.05)
    assert T32.dtype == torch.float32
    np.testing.assert_allclose(T32.sum(-2).numpy(), np.full((3, 12), 1 / 12), atol=1e-5)
    assert float((T32.double() - T64).abs().max()) <= 1e-3 * float(T64.max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    a, b, M = _problem(40, 30, 4)
    P = rot.sinkhorn(*_t(a, b, M, device="cuda"), 0.02, tol=1e-10)
    assert P.device.type == "cuda"
    np.testing.assert_allclose(P.cpu().numpy(), rot.sinkhorn(a, b, M, 0.02, tol=1e-10), atol=1e-9)
    C1, C2, p, q = _clouds(30, 30, 1)
    T = rot.entropic_gromov_wasserstein(*_t(C1, C2, p, q, device="cuda"), 0.02, tol=1e-11)
    T_np = rot.entropic_gromov_wasserstein(C1, C2, p, q, 0.02, tol=1e-11)
    assert np.abs(T.cpu().numpy() - T_np).max() <= 1e-6 * T_np.max()
