"""Bottom of :mod:`robopref.ot`, next to :mod:`._common`: the stopping rules of entropic (F)GW
and the plain outer loop that both engines run.

The outer loop is the projected mirror descent of Peyre et al. (2016) exactly as POT's PGD
solver: ``T <- Sinkhorn(p, q, grad(T), eps)`` with ``grad(T) = alpha (tens(T) + tens_t(T)) +
(1 - alpha) M`` (``2 tens(T)`` for symmetric costs), ``tens(T) = constC - hA @ T @ hB``.
:func:`plain_loop` is written once for both engines: an engine hands it its tensor product, its
inner Sinkhorn and its step norms (:class:`EngineOps`). The numpy engine's default rule runs a
different loop (Anderson-mixed, :func:`robopref.ot._gromov._accelerated_loop`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robopref.ot._common import warn

# inner tolerance while T still moves: inner_tol_k = clip(_INNER_RATE * |T_k - T_{k-1}|_1, ...)
_INNER_RATE = 1e-2
_INNER_LOOSE = 1e-4
# warn when the last inner Sinkhorn ends with an L1 marginal error above this (and 10 x its tol)
_INNER_WARN = 1e-6
# default stopping rule: relative change of the objective over CHECK_EVERY outer iterations
_OBJ_TOL = 2e-7
CHECK_EVERY = 2


def stopping_rule(tol, obj_tol, low_precision: bool) -> tuple[float | None, float | None]:
    """Resolve the two stopping tolerances (see :func:`robopref.ot.entropic_gromov_wasserstein`)."""
    if tol is None and obj_tol is None:
        return None, (1e-5 if low_precision else _OBJ_TOL)
    for name, v in (("tol", tol), ("obj_tol", obj_tol)):
        if v is not None and not (float(v) >= 0.0):
            raise ValueError(f"{name}: expected a number >= 0, found {v}")
    return (None if tol is None else float(tol)), (None if obj_tol is None else float(obj_tol))


def check_budgets(max_iter: int, inner_max_iter: int, check_every: int) -> None:
    if max_iter < 1 or inner_max_iter < 1 or check_every < 1:
        raise ValueError(
            f"max_iter, inner_max_iter, check_every: expected >= 1, found {max_iter}, "
            f"{inner_max_iter}, {check_every}"
        )


def inner_floor(inner_tol: float, tol: float | None) -> float:
    """Final inner tolerance: with the ``||dT||_F`` rule an inner L1 marginal error e moves T by
    up to e (Frobenius), so it is kept below the outer tol."""
    if tol is not None and tol > 0:
        return min(inner_tol, 0.1 * tol)
    return inner_tol


def inner_tolerance(step_l1, floor: float):
    """Inner Sinkhorn tolerance of the next outer step, ``clip(_INNER_RATE * step_l1, floor,
    _INNER_LOOSE)``: loose while ``T`` still moves, the floor near the fixed point. ``step_l1``
    is a float (one tolerance for a whole batch: the Numba kernels take one) or a tensor (one
    per problem: the torch engine)."""
    if isinstance(step_l1, float):
        return min(_INNER_LOOSE, max(floor, _INNER_RATE * step_l1))
    return (_INNER_RATE * step_l1).clamp(min=floor, max=_INNER_LOOSE)


def fgw_value(tens, feat, T, alpha, gw=None):
    """FGW objective ``alpha <tens, T> + <(1 - alpha) M, T>`` per problem ``[nb]`` (numpy or
    torch); ``tens = L (x) T`` (or ``gw`` given directly)."""
    if gw is None:
        gw = 0.0 if tens is None else (tens * T).sum(-1).sum(-1)
    val = alpha * gw if alpha != 1.0 else gw
    if feat is not None:
        val = val + (feat * T).sum(-1).sum(-1)
    return val


class _Stop:
    """The outer stopping rule of :func:`plain_loop`.

    ``tol``: ``||dT||_F < tol`` after an outer step. ``obj_tol``: the objective (of the iterate
    entering step ``k``) moved by <= ``obj_tol`` relative since step ``k - check_every``, and
    the geometric tail estimated from the last two changes is as small. Once a rule is met with
    a loose inner tolerance, one more step is taken at the final inner tolerance so that the
    returned coupling has accurate marginals.
    """

    def __init__(self, tol, obj_tol, check_every, max_iter):
        self.tol, self.obj_tol, self.every, self.max_iter = tol, obj_tol, check_every, max_iter
        self.prev = None  # objective at the previous check
        self.prev_change = np.inf  # relative change between the two previous checks
        self.obj_ok = False
        self.finish = False  # a rule was met: next step at the final inner tolerance, then stop
        self.converged = False

    def wants_objective(self, it: int) -> bool:
        return self.obj_tol is not None and (it - 1) % self.every == 0

    def record(self, it: int, obj) -> None:
        if self.obj_tol is None or (it - 1) % self.every != 0:
            return
        o = np.asarray(obj.cpu() if hasattr(obj, "cpu") else obj, dtype=np.float64)
        if self.prev is not None:
            change = np.abs(o - self.prev) / np.maximum(np.abs(o), np.finfo(np.float64).tiny)
            # remaining change if the objective keeps converging at the observed rate
            # r = change / previous change (geometric tail r / (1 - r)); slow, sublinear
            # phases (r -> 1) therefore keep iterating even when one window moved little
            r = change / np.where(self.prev_change > 0, self.prev_change, np.inf)
            tail = np.where(r < 1.0, change * r / np.maximum(1.0 - r, 1e-12), np.inf)
            self.obj_ok = bool(((change <= self.obj_tol) & (tail <= self.obj_tol)).all())
            self.prev_change = change
        self.prev = o

    def final_step(self, it: int) -> bool:
        return self.finish or it == self.max_iter

    def done(self, it: int, delta: float, tight: bool) -> bool:
        met = self.obj_ok or (self.tol is not None and delta < self.tol)
        if met and (tight or self.finish):
            self.converged = True
            return True
        if met:
            self.finish = True
        return False


def warn_inner(name: str, inner_err, itol_floor: float) -> None:
    """Warn when the last inner Sinkhorn ended far from its tolerance (harmless at ~1e-8)."""
    inner_err = float(inner_err.max()) if hasattr(inner_err, "max") else float(inner_err)
    if inner_err > max(10 * itol_floor, _INNER_WARN):
        warn(
            f"{name}: inner Sinkhorn stopped at marginal error {inner_err:.1e}; raise "
            "inner_max_iter or eps"
        )


@dataclass
class EngineOps:
    """What :func:`plain_loop` needs from an engine.

    ``product(A, T, B)``: ``A @ T @ B`` per problem. ``solve(grad, itol)``: the inner Sinkhorn
    (warm-started from the engine's potentials) -> ``(T_new, inner_iter, inner_err)``.
    ``step(T_new, T)``: ``(max ||dT||_F as a float, L1 norm of dT for`` :func:`inner_tolerance`
    ``)``. ``host(obj)``: a per-problem objective as it goes into the log. ``isfinite``:
    the engine's elementwise test.
    """

    product: Callable
    solve: Callable
    step: Callable
    host: Callable
    isfinite: Callable


@dataclass
class LoopResult:
    T: Any
    n_iter: int
    converged: bool
    inner_iter: int
    inner_err: Any
    err: list = field(default_factory=list)  # ||dT||_F of each step (max over the batch)
    obj_hist: list = field(default_factory=list)
    time_hist: list = field(default_factory=list)
    t0: float = 0.0  # perf_counter at the start (time_hist is relative to it)


def plain_loop(
    ops: EngineOps, pairs, alpha: float, feat, T, stop: _Stop, itol_floor: float, *, log: bool,
    name: str,
) -> LoopResult:  # fmt: skip
    """Outer mirror-descent loop, POT's map, stopped by ``stop``; both engines run it.

    ``pairs``: ``[(constC, hA, hB)]`` (symmetric costs, ``grad = 2 tens``) or two of them
    (``grad = tens + tens_t``), see :func:`robopref.ot._common.gradient_pairs`; ``feat`` is
    ``(1 - alpha) M`` or None. With ``log``, ``obj_hist`` holds the objective of the iterate
    entering each step and, last, that of the returned coupling (added by the caller).
    """
    res = LoopResult(T, 0, False, 0, np.inf)
    step_l1 = np.inf
    t0 = time.perf_counter()
    it = 0
    for it in range(1, stop.max_iter + 1):
        tens = None
        if alpha > 0.0:
            constC, hA, hB = pairs[0]
            tens = constC - ops.product(hA, T, hB)
            if len(pairs) == 1:
                grad = 2.0 * tens
            else:
                constCt, hAt, hBt = pairs[1]
                grad = tens + (constCt - ops.product(hAt, T, hBt))
            if alpha != 1.0:
                grad = alpha * grad
            if feat is not None:
                grad = grad + feat
        else:
            grad = feat
        if log or stop.wants_objective(it):
            o = fgw_value(tens, feat, T, alpha)
            stop.record(it, o)
            if log:
                res.obj_hist.append(ops.host(o))
                res.time_hist.append(time.perf_counter() - t0)
        itol = itol_floor if stop.final_step(it) else inner_tolerance(step_l1, itol_floor)
        T_new, ni, res.inner_err = ops.solve(grad, itol)
        res.inner_iter += ni
        delta, step_l1 = ops.step(T_new, T)
        res.err.append(delta)
        T = T_new
        tight = itol <= itol_floor
        if stop.done(it, delta, bool(tight.all()) if hasattr(tight, "all") else tight):
            break
    if not bool(ops.isfinite(T).all()):
        raise FloatingPointError(f"{name}: coupling is not finite; raise eps or check C1, C2")
    if not stop.converged and (stop.obj_tol or stop.tol):
        rule = f"tol={stop.tol:.1e}" if stop.tol else f"obj_tol={stop.obj_tol:.1e}"
        warn(
            f"{name}: max_iter={stop.max_iter} reached, last ||dT||_F = {res.err[-1]:.2e} ({rule})"
        )
    warn_inner(name, res.inner_err, itol_floor)
    res.T, res.n_iter, res.converged = T, it, stop.converged
    res.t0 = t0
    return res


def loop_log(res: LoopResult, gw, obj, value: Callable, *, fused: bool, f, g) -> dict:
    """The log of an entropic (F)GW run (keys as POT's where they exist: ``gw_dist``,
    ``fgw_dist``); ``value`` formats a per-problem objective (a float for one problem)."""
    info = {
        "gw_dist": value(gw),
        "n_iter": res.n_iter,
        "inner_iter": res.inner_iter,
        "err": res.err,
        "obj_hist": res.obj_hist,
        "time_hist": res.time_hist,
        "converged": res.converged,
        "inner_err": res.inner_err,
        "f": f,
        "g": g,
    }
    if fused:
        info["fgw_dist"] = value(obj)
    return info
