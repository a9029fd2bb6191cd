"""Bottom of :mod:`robopref.ot`: input checks and GW preparation shared by both engines.

Everything here works on numpy arrays and torch tensors alike and imports neither torch nor
numba (a tensor is recognised by its type's module name, and only tensor methods are called on
it), so ``import robopref.ot`` stays cheap. Nothing here imports another module of the package.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

import numpy as np

LOSSES = ("square", "kl")
_LOSS_ALIASES = {"square": "square", "square_loss": "square", "kl": "kl", "kl_loss": "kl"}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def is_torch(x) -> bool:
    """True for a ``torch.Tensor`` (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def any_torch(*xs) -> bool:
    return any(x is not None and is_torch(x) for x in xs)


def warn(message: str) -> None:
    """``RuntimeWarning`` attributed to the first caller outside :mod:`robopref.ot` (the line
    that called the public function, whichever engine and loop raised it)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


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


# --- Gromov-Wasserstein: arguments, cost decomposition, objectives ----------------------------
def loss_name(loss: str) -> str:
    try:
        return _LOSS_ALIASES[loss]
    except KeyError:
        raise ValueError(f"loss: expected one of {LOSSES}, found {loss!r}") from None


def check_alpha(alpha) -> float:
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], found {alpha!r}") from None
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha: expected a number in [0, 1], found {alpha}")
    return alpha


def check_gw_shapes(C1, C2) -> None:
    if C1.ndim < 2 or C1.shape[-1] != C1.shape[-2] or C1.shape[-1] == 0:
        raise shape_error("C1", "[..., n, n] (square, n >= 1)", C1.shape)
    if C2.ndim < 2 or C2.shape[-1] != C2.shape[-2] or C2.shape[-1] == 0:
        raise shape_error("C2", "[..., m, m] (square, m >= 1)", C2.shape)


def check_feature_cost(M, batch: tuple, n: int, m: int, isfinite):
    """``M`` must be ``[..., n, m]`` (batch dims broadcastable to the costs') and finite."""
    shape = tuple(M.shape)
    if (
        len(shape) < 2
        or shape[-2:] != (n, m)
        or len(shape) - 2 > len(batch)
        or any(s not in (1, b) for s, b in zip(shape[:-2][::-1], batch[::-1]))
    ):
        raise ValueError(
            f"M: expected shape [..., n_source, n_target] = {batch + (n, m)} matching C1 "
            f"{batch + (n, n)} and C2 {batch + (m, m)}, found {shape}"
        )
    if not bool(isfinite(M).all()):
        raise ValueError(f"M: contains NaN or inf (shape {shape}; every entry must be finite)")
    return M


def _log(x):
    return np.log(x) if isinstance(x, np.ndarray) else x.log()


def _swap(x):
    """Transpose of the last two dims (numpy or torch)."""
    return x.swapaxes(-1, -2)


def transform_matrices(C1, C2, loss: str):
    """``f1(C1), f2(C2), h1(C1), h2(C2)`` with ``L(a, b) = f1(a) + f2(b) - h1(a) h2(b)``.

    square: ``(a - b)^2``; kl: ``a log(a / b) - a + b`` (1e-18 inside logs, as POT).
    """
    if loss == "square":
        return C1**2, C2**2, C1, 2.0 * C2
    return C1 * _log(C1 + 1e-18) - C1, C2, C1, _log(C2 + 1e-18)


def const_c(fC1, fC2, p, q):
    """``constC[..., i, j] = (f1(C1) p)_i + (f2(C2) q)_j``, shape ``[..., n, m]``."""
    return (fC1 @ p[..., :, None]) + _swap(fC2 @ q[..., :, None])


def gradient_pairs(C1, C2, p, q, loss: str, symmetric: bool, contiguous):
    """The pieces of the mirror-descent gradient, one ``(constC, hA, hB)`` per tensor product
    ``constC - hA @ T @ hB``: one pair for symmetric costs (``grad = 2 tens``), two otherwise
    (``grad = tens + tens_t``). Also returns ``(f1(C1), f2(C2))``. ``contiguous`` is the
    engine's copy to a contiguous layout (BLAS-friendly operands)."""
    fC1, fC2, hC1, hC2 = transform_matrices(C1, C2, loss)
    pairs = [(const_c(fC1, fC2, p, q), hC1, contiguous(_swap(hC2)))]
    if not symmetric:
        fC1t, fC2t, hC1t, hC2t = transform_matrices(_swap(C1), _swap(C2), loss)
        pairs.append((const_c(fC1t, fC2t, p, q), contiguous(hC1t), contiguous(_swap(hC2t))))
    return pairs, (fC1, fC2)


def gw_objective(C1, C2, T, loss: str = "square"):
    """GW objective ``sum_{ijkl} L(C1_ik, C2_jl) T_ij T_kl`` (no entropy term), shape ``[...]``.

    Args:
        C1: ``[..., n, n]``; C2: ``[..., m, m]``; T: coupling ``[..., n, m]`` (any non-negative
        matrix: its own marginals are used, so the value is exact even if ``T`` is not).
        loss: "square" or "kl".
    Works for numpy and torch inputs (returns the same kind). Equals POT's ``gwloss``.
    """
    loss = loss_name(loss)
    if not any_torch(C1, C2, T):
        C1, C2, T = (np.asarray(x, dtype=np.float64) for x in (C1, C2, T))
    check_gw_shapes(C1, C2)
    if T.shape[-2:] != (C1.shape[-1], C2.shape[-1]):
        raise shape_error("T", f"[..., {C1.shape[-1]}, {C2.shape[-1]}]", T.shape)
    fC1, fC2, hC1, hC2 = transform_matrices(C1, C2, loss)
    tens = const_c(fC1, fC2, T.sum(-1), T.sum(-2)) - hC1 @ T @ _swap(hC2)
    return (tens * T).sum(-1).sum(-1)


def fgw_objective(M, C1, C2, T, alpha: float = 0.5, loss: str = "square"):
    """FGW objective ``(1 - alpha) <M, T> + alpha sum L(C1_ik, C2_jl) T_ij T_kl`` (no entropy),
    shape ``[...]``; numpy or torch. Equals POT's ``fgw_dist``."""
    alpha = check_alpha(alpha)
    gw = gw_objective(C1, C2, T, loss)
    if not any_torch(M, C1, C2, T):
        M, T = np.asarray(M, dtype=np.float64), np.asarray(T, dtype=np.float64)
    if tuple(M.shape[-2:]) != tuple(T.shape[-2:]):
        raise shape_error("M", f"[..., {T.shape[-2]}, {T.shape[-1]}] (as T)", M.shape)
    return (1.0 - alpha) * (M * T).sum(-1).sum(-1) + alpha * gw
