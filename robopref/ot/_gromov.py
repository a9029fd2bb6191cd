"""Gromov-Wasserstein: entropic (Peyre et al. 2016) on both engines, exact CG through POT.

Entropic GW iterates ``T <- Sinkhorn(p, q, grad(T), eps)`` from ``T0 = p q^T``, where
``grad(T) = 2 L(C1, C2) (x) T`` (``tens(T) + tens_t(T)`` for non-symmetric costs) -- the same
map, gradient scaling and stopping rule (Frobenius norm of the change of ``T``) as POT's
``ot.gromov.entropic_gromov_wasserstein(..., solver="PGD")``, so both converge to the same
stationary point of ``<L (x) T, T> - eps H(T)``. The tensor product uses the decomposition
``L(a, b) = f1(a) + f2(b) - h1(a) h2(b)``: ``L (x) T = constC - h1(C1) T h2(C2)^T`` (two matrix
products, BLAS). Speed comes from the inner Sinkhorn: potentials are warm-started from the
previous outer step and its tolerance follows the outer progress (loose while ``T`` still moves
a lot, ``inner_tol`` at the end).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from robopref.ot._common import (
    any_torch,
    check_eps,
    check_finite,
    check_masses,
    numba_kernels,
    shape_error,
)
from robopref.ot._sinkhorn import _BOUND, _PARALLEL_MIN_SIZE, batch_kernel

LOSSES = ("square", "kl")
_LOSS_ALIASES = {"square": "square", "square_loss": "square", "kl": "kl", "kl_loss": "kl"}
# inner tolerance while T still moves: inner_tol_k = clip(_INNER_RATE * |T_k - T_{k-1}|_1, ...)
_INNER_RATE = 1e-2
_INNER_LOOSE = 1e-4
# warn when the last inner Sinkhorn ends with an L1 marginal error above this (and 10 x its tol)
_INNER_WARN = 1e-6


def loss_name(loss: str) -> str:
    try:
        return _LOSS_ALIASES[loss]
    except KeyError:
        raise ValueError(f"loss: expected one of {LOSSES}, found {loss!r}") from None


def transform_matrices(C1, C2, loss: str, log):
    """``f1(C1), f2(C2), h1(C1), h2(C2)`` with ``L(a, b) = f1(a) + f2(b) - h1(a) h2(b)``.

    square: ``(a - b)^2``; kl: ``a log(a / b) - a + b`` (1e-18 inside logs, as POT).
    ``log`` is ``np.log`` or ``torch.log``.
    """
    if loss == "square":
        return C1**2, C2**2, C1, 2.0 * C2
    return C1 * log(C1 + 1e-18) - C1, C2, C1, log(C2 + 1e-18)


def _const_c(fC1, fC2, p, q):
    """``constC[..., i, j] = (f1(C1) p)_i + (f2(C2) q)_j``, shape ``[..., n, m]``."""
    return (fC1 @ p[..., :, None]) + (fC2 @ q[..., :, None]).swapaxes(-1, -2)


def gw_objective(C1, C2, T, loss: str = "square"):
    """GW objective ``sum_{ijkl} L(C1_ik, C2_jl) T_ij T_kl`` (no entropy term), shape ``[...]``.

    Args:
        C1: ``[..., n, n]``; C2: ``[..., m, m]``; T: coupling ``[..., n, m]`` (any non-negative
        matrix: its own marginals are used, so the value is exact even if ``T`` is not).
        loss: "square" or "kl".
    Works for numpy and torch inputs (returns the same kind). Equals POT's ``gwloss``.
    """
    loss = loss_name(loss)
    if any_torch(C1, C2, T):
        import torch

        log, swap = torch.log, lambda x: x.transpose(-1, -2)
    else:
        C1, C2, T = (np.asarray(x, dtype=np.float64) for x in (C1, C2, T))
        log, swap = np.log, lambda x: np.swapaxes(x, -1, -2)
    _check_gw_shapes(C1, C2)
    if T.shape[-2:] != (C1.shape[-1], C2.shape[-1]):
        raise shape_error("T", f"[..., {C1.shape[-1]}, {C2.shape[-1]}]", T.shape)
    fC1, fC2, hC1, hC2 = transform_matrices(C1, C2, loss, log)
    const = (fC1 @ T.sum(-1)[..., :, None]) + swap(fC2 @ T.sum(-2)[..., :, None])
    tens = const - hC1 @ T @ swap(hC2)
    return (tens * T).sum(-1).sum(-1)


def entropic_gromov_wasserstein(
    C1,
    C2,
    p=None,
    q=None,
    eps: float = 0.1,
    loss: str = "square",
    *,
    symmetric: bool | None = None,
    T0=None,
    max_iter: int = 1000,
    tol: float | None = None,
    inner_max_iter: int = 2000,
    inner_tol: float | None = None,
    log: bool = False,
):
    """Entropic GW coupling between ``(C1, p)`` and ``(C2, q)``.

    Solves (locally) ``min_T <L(C1, C2) (x) T, T> - eps H(T)`` s.t. ``T 1 = p``, ``T^T 1 = q``
    -- ``eps`` is the same entropy weight as POT's ``epsilon``.

    Args:
        C1: intra-source costs ``[..., n, n]``; C2: intra-target costs ``[..., m, m]``.
            Leading dims are a batch of independent problems (the same for both).
            Symmetric or not (non-symmetric costs use the exact gradient ``tens + tens_t``).
        p: source weights ``[..., n]`` or None (uniform); q: target weights ``[..., m]``.
        eps: entropic regularisation (units of the loss, e.g. squared cost units), > 0.
        loss: "square" (``(a - b)^2``) or "kl" (``a log(a / b) - a + b``, costs > 0).
        symmetric: treat C1 and C2 as symmetric; None tests it (as POT).
        T0: initial coupling ``[..., n, m]`` (default ``p q^T``).
        max_iter: outer iterations; tol: stop when ``||T_k - T_{k-1}||_F < tol`` (every
            problem of a batch); None: 1e-9 (float64), 1e-6 (torch float32 / half).
        inner_max_iter, inner_tol: budget and final L1 marginal tolerance of each inner
            Sinkhorn; None: 1e-9 (float64), 1e-5 (torch float32 / half).
        log: also return a dict: ``gw_dist`` (GW objective of T, same key as POT), ``n_iter``
            (outer), ``inner_iter`` (total Sinkhorn iterations), ``err`` (list of ``||dT||_F``),
            ``obj_hist`` / ``time_hist`` (objective of the iterate and seconds since start, per
            outer step), ``converged``, ``inner_err`` (L1 column-marginal error of T; rows are
            exact), ``f``, ``g`` (final potentials). A ``RuntimeWarning`` is issued when
            ``max_iter`` is hit or ``inner_err`` > max(1e-6, 10 x the final inner tolerance).

    Returns:
        ``T [..., n, m]`` (numpy float64, or torch on the inputs' device), and the log if asked.
        The torch engine runs under ``torch.no_grad()`` (use :func:`sinkhorn` for gradients).
    """
    loss = loss_name(loss)
    eps = check_eps(eps)
    if max_iter < 1 or inner_max_iter < 1:
        raise ValueError(
            f"max_iter, inner_max_iter: expected >= 1, found {max_iter}, {inner_max_iter}"
        )
    if any_torch(C1, C2, p, q, T0):
        from robopref.ot._torch_engine import entropic_gw_torch

        return entropic_gw_torch(
            C1, C2, p, q, eps, loss, symmetric=symmetric, T0=T0, max_iter=max_iter, tol=tol,
            inner_max_iter=inner_max_iter, inner_tol=inner_tol, log=log,
        )  # fmt: skip
    tol = 1e-9 if tol is None else float(tol)
    inner_tol = 1e-9 if inner_tol is None else float(inner_tol)
    C1 = np.ascontiguousarray(C1, dtype=np.float64)
    C2 = np.ascontiguousarray(C2, dtype=np.float64)
    C1, C2, p, q, batch = _prepare_numpy(C1, C2, p, q, loss)
    n, m = C1.shape[-1], C2.shape[-1]
    nb = int(np.prod(batch))
    C1, C2 = C1.reshape(nb, n, n), C2.reshape(nb, m, m)
    p, q = p.reshape(nb, n), q.reshape(nb, m)
    if symmetric is None:
        symmetric = _is_symmetric(C1, np) and _is_symmetric(C2, np)
    fC1, fC2, hC1, hC2 = transform_matrices(C1, C2, loss, np.log)
    constC = _const_c(fC1, fC2, p, q)
    hC2t = np.ascontiguousarray(np.swapaxes(hC2, -1, -2))
    if not symmetric:
        fC1t, fC2t, hC1t, hC2tt = transform_matrices(
            np.swapaxes(C1, -1, -2), np.swapaxes(C2, -1, -2), loss, np.log
        )
        constCt = _const_c(fC1t, fC2t, p, q)
        hC1t = np.ascontiguousarray(hC1t)
        hC2tt = np.ascontiguousarray(np.swapaxes(hC2tt, -1, -2))
    if T0 is None:
        T = p[:, :, None] * q[:, None, :]
    else:
        T = np.array(np.broadcast_to(np.asarray(T0, dtype=np.float64), (nb, n, m)))
    k = numba_kernels()
    single = nb == 1
    solve_one = k._sinkhorn_one if n * m >= _PARALLEL_MIN_SIZE else k._solve_seq
    run_batch = batch_kernel(k, nb, n, m)
    F, G = np.zeros((nb, n)), np.zeros((nb, m))
    n_iter_b, errs_b = np.zeros(nb, np.int64), np.zeros(nb)
    eps_b = np.full(nb, eps)

    deltas, obj_hist, time_hist = [], [], []
    # an inner L1 marginal error e moves T by up to e (Frobenius): keep it below the outer tol
    itol_floor = min(inner_tol, 0.1 * tol) if tol > 0 else inner_tol
    inner_total, inner_err = 0, np.inf
    delta_l1 = np.inf
    converged = False
    t0 = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        tens = constC - hC1 @ T @ hC2t
        if log:
            o = (tens * T).sum(axis=(1, 2))
            obj_hist.append(o.reshape(batch) if batch else float(o[0]))
            time_hist.append(time.perf_counter() - t0)
        grad = 2.0 * tens if symmetric else tens + (constCt - hC1t @ T @ hC2tt)
        itol = min(_INNER_LOOSE, max(itol_floor, _INNER_RATE * delta_l1))
        if it == max_iter:  # the returned coupling always has accurate marginals
            itol = itol_floor
        T_new = np.empty_like(T)
        if single:
            ni, inner_err = solve_one(
                p[0], q[0], grad[0], eps, F[0], G[0], T_new[0], inner_max_iter, itol, _BOUND
            )
        else:
            run_batch(
                p, q, grad, eps_b, F, G, T_new, inner_max_iter, itol, _BOUND, n_iter_b, errs_b
            )
            ni, inner_err = int(n_iter_b.max()), float(errs_b.max())
        inner_total += int(ni)
        diff = T_new - T
        delta = float(np.sqrt((diff * diff).sum(axis=(1, 2))).max())
        delta_l1 = float(np.abs(diff).sum(axis=(1, 2)).max())
        deltas.append(delta)
        T = T_new
        if delta < tol and itol <= itol_floor:
            converged = True
            break
    if not np.isfinite(T).all():
        raise FloatingPointError(
            "entropic_gromov_wasserstein: coupling is not finite; raise eps or check C1, C2"
        )
    if not converged and tol > 0:
        warnings.warn(
            f"entropic_gromov_wasserstein: max_iter={max_iter} reached, last ||dT||_F = "
            f"{deltas[-1]:.2e} > tol={tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    if inner_err > max(10 * itol_floor, _INNER_WARN):
        warnings.warn(
            f"entropic_gromov_wasserstein: inner Sinkhorn stopped at marginal error "
            f"{inner_err:.1e}; raise inner_max_iter or eps",
            RuntimeWarning,
            stacklevel=2,
        )
    T_out = T.reshape(batch + (n, m))
    if not log:
        return T_out
    obj = gw_objective(C1, C2, T, loss).reshape(batch)
    obj_hist.append(obj if batch else float(obj))
    time_hist.append(time.perf_counter() - t0)
    info = {
        "gw_dist": obj if batch else float(obj),
        "n_iter": it,
        "inner_iter": inner_total,
        "err": deltas,
        "obj_hist": obj_hist,
        "time_hist": time_hist,
        "converged": converged,
        "inner_err": inner_err,
        "f": F.reshape(batch + (n,)),
        "g": G.reshape(batch + (m,)),
    }
    return T_out, info


def entropic_gromov_wasserstein_batched(C1, C2, p=None, q=None, eps: float = 0.1, **kwargs):
    """Many GW problems at once: ``C1 [B, n, n]``, ``C2 [B, m, m]``, ``p [B, n]``, ``q [B, m]``.

    Same keywords as :func:`entropic_gromov_wasserstein`; returns ``T [B, n, m]``. On torch
    (e.g. CUDA) the batch is vectorised; on numpy the inner Sinkhorns run one per thread.
    """
    if getattr(C1, "ndim", None) != 3 or getattr(C2, "ndim", None) != 3:
        raise ValueError(
            f"C1, C2: expected shapes [B, n, n], [B, m, m], found "
            f"{tuple(np.shape(C1) if not any_torch(C1) else C1.shape)}, "
            f"{tuple(np.shape(C2) if not any_torch(C2) else C2.shape)}"
        )
    return entropic_gromov_wasserstein(C1, C2, p, q, eps, **kwargs)


def gromov_wasserstein(
    C1,
    C2,
    p=None,
    q=None,
    loss: str = "square",
    method: str = "entropic",
    eps: float = 0.1,
    log: bool = False,
    **kwargs,
):
    """GW coupling ``[n, m]`` by ``method``: "entropic" (this package, see
    :func:`entropic_gromov_wasserstein`) or "cg" (exact conditional gradient, POT's
    ``ot.gromov.gromov_wasserstein``; numpy or torch inputs, one problem, no ``eps``).
    ``kwargs`` go to the chosen solver. ``log`` returns ``(T, dict)`` with ``gw_dist``.
    """
    if method == "entropic":
        return entropic_gromov_wasserstein(C1, C2, p, q, eps, loss, log=log, **kwargs)
    if method != "cg":
        raise ValueError(f"method: expected 'entropic' or 'cg', found {method!r}")
    import ot  # POT: the reference implementation of exact (CG) GW

    loss = loss_name(loss)
    _check_gw_shapes(C1, C2)
    if C1.ndim != 2:
        raise shape_error("C1", "[n, n] (method='cg' solves one problem)", C1.shape)
    out = ot.gromov.gromov_wasserstein(C1, C2, p, q, loss_fun=f"{loss}_loss", log=True, **kwargs)
    T, info = out
    if log:
        return T, info
    return T


# ---------------------------------------------------------------------------------------------
def _check_gw_shapes(C1, C2) -> None:
    if C1.ndim < 2 or C1.shape[-1] != C1.shape[-2] or C1.shape[-1] == 0:
        raise shape_error("C1", "[..., n, n] (square, n >= 1)", C1.shape)
    if C2.ndim < 2 or C2.shape[-1] != C2.shape[-2] or C2.shape[-1] == 0:
        raise shape_error("C2", "[..., m, m] (square, m >= 1)", C2.shape)


def _is_symmetric(C, xp) -> bool:
    return bool(xp.allclose(C, C.swapaxes(-1, -2) if xp is np else C.transpose(-1, -2), atol=1e-10))


def _prepare_numpy(C1, C2, p, q, loss):
    _check_gw_shapes(C1, C2)
    if C1.shape[:-2] != C2.shape[:-2]:
        raise ValueError(
            f"C1, C2: batch dims must match, found {C1.shape[:-2]} and {C2.shape[:-2]}"
        )
    batch = C1.shape[:-2]
    n, m = C1.shape[-1], C2.shape[-1]
    check_finite("C1", C1, np.isfinite)
    check_finite("C2", C2, np.isfinite)
    if loss == "kl" and ((C1 < 0).any() or (C2 < 0).any()):
        raise ValueError("C1, C2: loss='kl' needs non-negative costs")
    p = np.full(batch + (n,), 1.0 / n) if p is None else np.asarray(p, dtype=np.float64)
    q = np.full(batch + (m,), 1.0 / m) if q is None else np.asarray(q, dtype=np.float64)
    if p.shape[-1:] != (n,):
        raise shape_error("p", f"[..., {n}]", p.shape)
    if q.shape[-1:] != (m,):
        raise shape_error("q", f"[..., {m}]", q.shape)
    p = np.ascontiguousarray(np.broadcast_to(p, batch + (n,)))
    q = np.ascontiguousarray(np.broadcast_to(q, batch + (m,)))
    check_finite("p", p, np.isfinite)
    check_finite("q", q, np.isfinite)
    q = np.ascontiguousarray(check_masses("p", p, "q", q, rtol=1e-6))
    return C1, C2, p, q, batch
