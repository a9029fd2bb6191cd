"""Numba/numpy engine: loading the compiled kernels of :mod:`._numba_kernels`.

The kernels are imported on first use, not at ``import robopref.ot`` (importing numba and
loading the kernels takes about a second, compiling them the first time on a machine 10-30 s).
"""

from __future__ import annotations

import logging
import time

import numpy as np

logger = logging.getLogger("robopref.ot")

_KERNELS = None


def numba_kernels():
    """The Numba kernels module, loaded once (the first load is logged with its duration)."""
    global _KERNELS
    if _KERNELS is None:
        t0 = time.perf_counter()
        # imported here, not at the top: importing numba is what `import robopref.ot` avoids
        from robopref.ot import _numba_kernels

        _warm(_numba_kernels)
        _KERNELS = _numba_kernels
        dt = time.perf_counter() - t0
        msg = "robopref.ot: Numba kernels ready in %.1f s (compiled once, then loaded from cache)"
        (logger.warning if dt > 5.0 else logger.info)(msg, dt)
    return _KERNELS


def _warm(k) -> None:
    """Call each kernel once on a 2x2 problem so compilation never happens mid-benchmark."""
    a = np.full(2, 0.5)
    M = np.array([[0.0, 1.0], [1.0, 0.0]])
    f, g, K = np.zeros(2), np.zeros(2), np.empty((2, 2))
    k._solve_seq(a, a, M, 1.0, f, g, K, 10, 1e-9, 1e30)
    for kernel in (k._sinkhorn_batch, k._sinkhorn_batch_seq):
        kernel(
            a[None], a[None], M[None], np.ones(1), np.zeros((1, 2)), np.zeros((1, 2)),
            np.empty((1, 2, 2)), 10, 1e-9, 1e30, np.zeros(1, np.int64), np.zeros(1),
        )  # fmt: skip
    x = np.ones((1, 4))
    k._gw_grad(x, x, 2.0, x, np.empty((1, 4)))
    k._gw_step_stats(x, x, x, x, np.empty((1, 0)), np.empty((1, 4)), np.empty((1, 5)))
    k._add_f32(x, x.astype(np.float32), np.empty((1, 4)))
    k._is_symmetric_close(np.ones((1, 2, 2)), 1e-5, 1e-10)


def warmup() -> float:
    """Compile (first time on a machine, ~10-30 s) or load (later, <1 s) the Numba kernels.

    Call it at program start to keep compilation out of timed code. Returns the seconds taken.
    """
    t0 = time.perf_counter()
    numba_kernels()
    return time.perf_counter() - t0
