"""Numba/numpy engine: Sinkhorn on numpy inputs (float64, one problem or a batch).

Stabilised scaling with absorption in the compiled kernels of :mod:`._numba_kernels`; a batch
runs one problem per thread when it is large enough. Called by :func:`robopref.ot.sinkhorn`
for numpy inputs; the GW solver of this engine (:mod:`._gromov`) reuses the kernel choice.
"""

from __future__ import annotations

import os

import numpy as np

from robopref.ot._common import (
    check_eps,
    check_finite,
    check_masses,
    keeps_torch_threads,
    shape_error,
    warn,
)
from robopref.ot._numba import numba_kernels

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
def sinkhorn_numpy(a, b, M, eps: float, *, max_iter=1000, tol=None, warm_start=None, log=False):
    """:func:`robopref.ot.sinkhorn` on numpy inputs (same arguments and returns)."""
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
        warn(
            f"sinkhorn: max_iter={max_iter} reached with marginal error {errs.max():.2e} > "
            f"tol={tol:.1e}; raise max_iter or eps"
        )
    if log:
        return P, {"f": f, "g": g, "n_iter": n_iter, "err": errs, "converged": converged}
    return P


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
