"""Entropic optimal transport (Sinkhorn), one API for two engines.

numpy inputs run on the Numba CPU engine and return numpy; torch inputs run on the torch engine
(any device, differentiable) and return torch. See :mod:`robopref.ot` for the conventions.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from robopref.ot._common import (
    any_torch,
    check_eps,
    check_finite,
    check_masses,
    keeps_torch_threads,
    numba_kernels,
    shape_error,
)

# One problem with n * m at least this large uses the row-parallel kernel. It starts the thread
# pool twice per iteration; on the shared 2-core machine this was 3-100x slower than one thread
# for n = 512 ... 2048 (docs/rooms/ot.md), so by default it is off up to n = m = 4096. Set the
# environment variable ROBOPREF_OT_ROW_PARALLEL_MIN (cost entries) to opt in on a many-core box.
_PARALLEL_MIN_SIZE = int(os.environ.get("ROBOPREF_OT_ROW_PARALLEL_MIN", 4096 * 4096 + 1))
# a batch with at least this many cost entries in total runs one problem per thread
_PARALLEL_BATCH_MIN_SIZE = 1 << 16
# scalings are absorbed into the potentials once they leave [1/_BOUND, _BOUND]
_BOUND = 1e30


@keeps_torch_threads
def sinkhorn(
    a,
    b,
    M,
    eps: float,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    warm_start=None,
    log: bool = False,
):
    """Entropic OT plan ``P = argmin <P, M> - eps H(P)`` s.t. ``P 1 = a``, ``P^T 1 = b``.

    Args:
        a: source weights ``[..., n]`` (>= 0) or None for uniform ``1/n``.
        b: target weights ``[..., m]`` (>= 0, same total mass as ``a``) or None for uniform.
        M: cost matrix ``[..., n, m]``; leading dims are independent problems (a batch).
        eps: entropic regularisation (cost units), > 0. Same meaning as POT's ``reg``.
        max_iter: maximum number of Sinkhorn iterations (one iteration = one column and one
            row update; a log-domain stabilisation step counts as one iteration).
        tol: stop when the L1 violation of the column marginal ``sum_j |P^T 1 - b|_j`` is
            <= tol (the row marginal is exact on return). None: 1e-9 (float64), 1e-5 (torch
            float32 / half inputs).
        warm_start: optional dual potentials ``(f [..., n], g [..., m])`` in cost units, e.g.
            ``log["f"], log["g"]`` of a previous call on a similar problem.
        log: also return a dict with ``f``, ``g`` (potentials: ``P_ij = exp((f_i + g_j -
            M_ij) / eps)``), ``n_iter``, ``err`` (final marginal violation) and ``converged``.

    Returns:
        ``P [..., n, m]`` (numpy float64 for numpy inputs; torch for torch inputs, same dtype
        and device, differentiable w.r.t. ``a``, ``b``, ``M``), and the log dict if ``log``.

    Raises:
        ValueError: bad shapes, negative or non-finite weights/costs, unequal masses, eps <= 0.
        FloatingPointError: the plan came out non-finite (never returned silently).

    A ``RuntimeWarning`` is issued if ``max_iter`` was reached before ``tol``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter: expected >= 1, found {max_iter}")
    if any_torch(a, b, M):
        from robopref.ot._torch_engine import sinkhorn_torch

        return sinkhorn_torch(
            a, b, M, eps, max_iter=max_iter, tol=tol, warm_start=warm_start, log=log
        )
    eps = check_eps(eps)
    tol = 1e-9 if tol is None else float(tol)
    M = np.ascontiguousarray(M, dtype=np.float64)
    if M.ndim < 2:
        raise shape_error("M", "[..., n, m]", M.shape)
    batch, (n, m) = M.shape[:-2], M.shape[-2:]
    if n == 0 or m == 0:
        raise shape_error("M", "[..., n, m] with n, m >= 1", M.shape)
    a = _weights("a", a, batch, n)
    b = _weights("b", b, batch, m)
    check_finite("M", M, np.isfinite)
    b = np.ascontiguousarray(check_masses("a", a, "b", b, rtol=1e-6))
    if warm_start is not None:
        f, g = warm_start
        f = np.array(np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape))
        g = np.array(np.broadcast_to(np.asarray(g, dtype=np.float64), b.shape))
    else:
        f = np.zeros(a.shape)
        g = np.zeros(b.shape)

    k = numba_kernels()
    if batch == ():
        solve = k._sinkhorn_one if n * m >= _PARALLEL_MIN_SIZE else k._solve_seq
        P = np.empty((n, m))
        it, err = solve(a, b, M, eps, f, g, P, int(max_iter), float(tol), _BOUND)
        n_iter, errs = np.array(it), np.array(err)
    else:
        nb = int(np.prod(batch))
        A, B, Ms = a.reshape(nb, n), b.reshape(nb, m), M.reshape(nb, n, m)
        F, G = f.reshape(nb, n), g.reshape(nb, m)
        P = np.empty((nb, n, m))
        n_iter, errs = np.zeros(nb, np.int64), np.zeros(nb)
        batch_kernel(k, nb, n, m)(
            A, B, Ms, np.full(nb, eps), F, G, P, int(max_iter), float(tol), _BOUND, n_iter, errs
        )
        P, f, g = P.reshape(M.shape), F.reshape(a.shape), G.reshape(b.shape)
        n_iter, errs = n_iter.reshape(batch), errs.reshape(batch)
    if not np.isfinite(P).all():
        raise FloatingPointError("sinkhorn: the plan is not finite; check M and eps")
    converged = errs <= tol
    if not converged.all():
        warnings.warn(
            f"sinkhorn: max_iter={max_iter} reached with marginal error {errs.max():.2e} > "
            f"tol={tol:.1e}; raise max_iter or eps",
            RuntimeWarning,
            stacklevel=2,
        )
    if log:
        return P, {"f": f, "g": g, "n_iter": n_iter, "err": errs, "converged": converged}
    return P


def sinkhorn_batched(a, b, M, eps: float, **kwargs):
    """Many independent problems at once: ``M [B, n, m]``, ``a [B, n]``, ``b [B, m]``.

    Same keywords and returns as :func:`sinkhorn` (plans ``[B, n, m]``). The Numba engine
    solves one problem per thread; the torch engine vectorises over the batch.
    ``a`` / ``b`` may also be ``[n]`` / ``[m]`` (shared by all problems) or None (uniform).
    """
    ndim = getattr(M, "ndim", np.ndim(M))
    if ndim != 3:
        raise shape_error("M", "[B, n, m]", np.shape(M) if not any_torch(M) else M.shape)
    return sinkhorn(a, b, M, eps, **kwargs)


def sinkhorn_cost(a, b, M, eps: float, **kwargs):
    """Transport cost ``<P, M>`` of the Sinkhorn plan, shape ``[...]`` (batch dims of ``M``)."""
    P = sinkhorn(a, b, M, eps, **kwargs)
    return (P * M).sum(-1).sum(-1)


def batch_kernel(k, nb: int, n: int, m: int):
    """The batched Numba kernel to use: threads only when the batch is worth their start-up."""
    if nb > 1 and nb * n * m >= _PARALLEL_BATCH_MIN_SIZE:
        return k._sinkhorn_batch
    return k._sinkhorn_batch_seq


def _weights(name: str, x, batch: tuple, n: int) -> np.ndarray:
    if x is None:
        return np.full(batch + (n,), 1.0 / n)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1:] != (n,):
        raise shape_error(name, f"[..., {n}] matching M", x.shape)
    try:
        x = np.broadcast_to(x, batch + (n,))
    except ValueError:
        raise shape_error(name, f"{batch + (n,)} (batch dims of M)", x.shape) from None
    x = np.ascontiguousarray(x)
    check_finite(name, x, np.isfinite)
    return x
