"""Input checks shared by both engines, and the engine dispatch (numpy -> Numba, torch -> torch).

Nothing here imports torch or numba: a torch tensor is recognised by its type's module name, so
``import robopref.ot`` stays cheap.
"""

from __future__ import annotations

import functools
import logging
import sys
import time

import numpy as np

logger = logging.getLogger("robopref.ot")

_WARMED = False


def is_torch(x) -> bool:
    """True for a ``torch.Tensor`` (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def any_torch(*xs) -> bool:
    return any(x is not None and is_torch(x) for x in xs)


def shape_error(name: str, expected: str, found) -> ValueError:
    return ValueError(f"{name}: expected shape {expected}, found {tuple(found)}")


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not np.isfinite(eps) or eps <= 0.0:
        raise ValueError(f"eps: expected a finite number > 0, found {eps}")
    return eps


def check_finite(name: str, x, xp_isfinite) -> None:
    if not bool(xp_isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf (every entry must be finite)")


def check_masses(name_a: str, a, name_b: str, b, rtol: float):
    """Masses are >= 0, positive in total, and equal up to ``rtol`` (relative).

    Returns ``b`` rescaled to the exact mass of ``a`` (a rounding-level mismatch would otherwise
    keep the marginal error above ``tol`` for ever).
    """
    for name, x in ((name_a, a), (name_b, b)):
        if not bool((x >= 0).all()):
            raise ValueError(f"{name}: weights must be >= 0")
        if not bool((x.sum(-1) > 0).all()):
            raise ValueError(f"{name}: total mass must be > 0")
    sa, sb = a.sum(-1), b.sum(-1)
    gap = abs(sa - sb) / sa
    if not bool((gap <= rtol).all()):
        raise ValueError(
            f"{name_a} and {name_b} must carry the same total mass (balanced OT); "
            f"found {_head(sa)} vs {_head(sb)}"
        )
    return b * (sa / sb)[..., None]


def _head(x) -> list:
    """First three values of a numpy array or torch tensor (any device), for messages."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).ravel()[:3].tolist()


def keeps_torch_threads(fn):
    """Restore torch's intra-op thread count after ``fn`` (the Numba engine's entry points).

    Numba's OpenMP threading layer sets the calling thread's OpenMP thread count to Numba's own
    (all cores) on every parallel launch, and torch reads that same count for its intra-op
    threads: a process pinned to 1 torch thread (``num_threads: 1``, one process per seed)
    silently ran 2 after its first transfer and, on a busy machine, spent ~90 % of its time
    spinning in libgomp barriers (PEARL's filtered BC went from ~250 to 7 steps/s).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        torch = sys.modules.get("torch")  # never imported here: only restored if in use
        before = torch.get_num_threads() if torch is not None else None
        try:
            return fn(*args, **kwargs)
        finally:
            if torch is not None and torch.get_num_threads() != before:
                torch.set_num_threads(before)

    return wrapper


def numba_kernels():
    """Import the Numba kernels, logging once how long loading/compiling took."""
    global _WARMED
    if _WARMED:
        from robopref.ot import _numba_kernels

        return _numba_kernels
    t0 = time.perf_counter()
    from robopref.ot import _numba_kernels

    _WARMED = True
    _warm(_numba_kernels)
    dt = time.perf_counter() - t0
    msg = "robopref.ot: Numba kernels ready in %.1f s (compiled once, then loaded from cache)"
    (logger.warning if dt > 5.0 else logger.info)(msg, dt)
    return _numba_kernels


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
