"""Torch engine: log-domain Sinkhorn (batched, differentiable) and batched entropic (F)GW.

Called by the public functions of :mod:`robopref.ot` for torch inputs; imports nothing of the
Numba/numpy engine. GW runs the outer loop shared with that engine
(:func:`robopref.ot._loop.plain_loop`) with this engine's product, inner Sinkhorn and step norms.

Every op is vectorised over leading batch dims, so one call solves many small problems on a GPU.
Sinkhorn is written in the log domain (``logsumexp``), which is stable for any ``eps`` and
differentiable by autograd through the iterations (the gradient of the plan w.r.t. ``M``, ``a``,
``b``). Convergence is checked every ``check_every`` iterations (one host sync each time).
"""

from __future__ import annotations

import time

import torch

from robopref.ot._common import (
    check_alpha,
    check_eps,
    check_feature_cost,
    check_finite,
    check_gw_shapes,
    check_masses,
    gradient_pairs,
    gw_objective,
    loss_name,
    shape_error,
    warn,
)
from robopref.ot._loop import (
    CHECK_EVERY,
    EngineOps,
    _Stop,
    check_budgets,
    fgw_value,
    inner_floor,
    loop_log,
    plain_loop,
    stopping_rule,
)

# Sinkhorn: the column error is synced to the host at iterations 2-4, then every this many
SINKHORN_CHECK_EVERY = 10


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    """log(x) with log(0) = -inf and a finite (zero) gradient there."""
    pos = x > 0
    return torch.where(pos, torch.log(torch.where(pos, x, torch.ones_like(x))), -torch.inf)


def _weights(name, x, like: torch.Tensor, batch, n):
    if x is None:
        return torch.full(batch + (n,), 1.0 / n, dtype=like.dtype, device=like.device)
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if x.shape[-1:] != (n,):
        raise shape_error(name, f"[..., {n}] matching the costs", x.shape)
    try:
        x = x.expand(batch + (n,))
    except RuntimeError:
        raise shape_error(name, f"{batch + (n,)} (batch dims of the costs)", x.shape) from None
    check_finite(name, x, torch.isfinite)
    return x


def _default_tol(tol, dtype, low_precision: float) -> float:
    if tol is not None:
        return float(tol)
    return 1e-9 if dtype == torch.float64 else low_precision


def _mass_rtol(dtype) -> float:
    return 1e-6 if dtype == torch.float64 else 1e-4


def _sinkhorn_loop(loga, logb, M, eps, f, g, max_iter, tol):
    """Log-domain iterations from potentials ``f, g``; returns ``(f, g, n_iter, err)``.

    ``tol`` is a float or a tensor of the batch shape; ``err`` (batch shape) is the L1 column
    violation of the returned plan, whose rows are exact. It comes for free from the column
    update: the plan of ``(f, g)`` has column sums ``b * exp((g - g_new) / eps)``.
    """
    b = logb.exp()
    err = torch.full(M.shape[:-2], float("inf"), dtype=M.dtype, device=M.device)
    for it in range(1, max_iter + 2):
        g_new = eps * logb - eps * torch.logsumexp((f[..., :, None] - M) / eps, dim=-2)
        if it > 1 and (it <= 4 or it % SINKHORN_CHECK_EVERY == 0 or it == max_iter + 1):
            with torch.no_grad():
                ratio = torch.expm1((g - g_new) / eps).abs()
                err = torch.where(b > 0, b * ratio, torch.zeros_like(b)).sum(-1)
                if bool((err <= tol).all()) or it == max_iter + 1:
                    return f, g, it - 1, err
        g = g_new
        f = eps * loga - eps * torch.logsumexp((g[..., None, :] - M) / eps, dim=-1)
    raise AssertionError("unreachable")  # pragma: no cover


def sinkhorn_torch(a, b, M, eps, *, max_iter=1000, tol=None, warm_start=None, log=False):
    """Torch version of :func:`robopref.ot.sinkhorn` (same arguments and returns)."""
    if not isinstance(M, torch.Tensor):
        like = a if isinstance(a, torch.Tensor) else b
        M = torch.as_tensor(M, dtype=like.dtype, device=like.device)
    if not M.is_floating_point():
        M = M.double()
    if M.ndim < 2 or M.shape[-1] == 0 or M.shape[-2] == 0:
        raise shape_error("M", "[..., n, m] with n, m >= 1", M.shape)
    eps = float(eps)
    if not eps > 0 or eps == float("inf"):
        raise ValueError(f"eps: expected a finite number > 0, found {eps}")
    tol = _default_tol(tol, M.dtype, 1e-5)
    batch, (n, m) = M.shape[:-2], M.shape[-2:]
    a = _weights("a", a, M, batch, n)
    b = _weights("b", b, M, batch, m)
    check_finite("M", M, torch.isfinite)
    check_masses("a", a.detach(), "b", b.detach(), rtol=_mass_rtol(M.dtype))
    b = b * (a.sum(-1) / b.sum(-1))[..., None]
    if warm_start is not None:
        f, g = (torch.as_tensor(x, dtype=M.dtype, device=M.device) for x in warm_start)
        f, g = f.expand(batch + (n,)), g.expand(batch + (m,))
    else:
        f = torch.zeros(batch + (n,), dtype=M.dtype, device=M.device)
        g = torch.zeros(batch + (m,), dtype=M.dtype, device=M.device)
    f, g, n_iter, err = _sinkhorn_loop(_safe_log(a), _safe_log(b), M, eps, f, g, max_iter, tol)
    P = torch.exp((f[..., :, None] + g[..., None, :] - M) / eps)
    if not bool(torch.isfinite(P).all()):
        raise FloatingPointError("sinkhorn: the plan is not finite; check M and eps")
    converged = err <= tol
    if not bool(converged.all()):
        warn(
            f"sinkhorn: max_iter={max_iter} reached with marginal error "
            f"{float(err.max()):.2e} > tol={tol:.1e}; raise max_iter or eps"
        )
    if log:
        return P, {"f": f, "g": g, "n_iter": n_iter, "err": err, "converged": converged}
    return P


def entropic_fgw_torch(
    M, C1, C2, p, q, eps, alpha, loss, *, symmetric=None, T0=None, max_iter=1000, tol=None,
    obj_tol=None, check_every=None, inner_max_iter=2000, inner_tol=None, log=False,
    name="entropic_fused_gromov_wasserstein",
):  # fmt: skip
    """:func:`robopref.ot.entropic_fused_gromov_wasserstein` on torch inputs (any device,
    vectorised over leading dims, under ``no_grad``); ``M`` None is plain GW (``alpha``
    1)."""
    loss, eps, alpha = loss_name(loss), check_eps(eps), check_alpha(alpha)
    if check_every is None:
        check_every = CHECK_EVERY
    check_budgets(max_iter, inner_max_iter, check_every)
    with torch.no_grad():  # a block, not a decorator: warnings then point at the caller
        return _entropic_fgw(
            M, C1, C2, p, q, eps, alpha, loss, symmetric=symmetric, T0=T0, max_iter=max_iter,
            tol=tol, obj_tol=obj_tol, check_every=check_every, inner_max_iter=inner_max_iter,
            inner_tol=inner_tol, log=log, name=name,
        )  # fmt: skip


def _entropic_fgw(
    M, C1, C2, p, q, eps, alpha, loss, *, symmetric, T0, max_iter, tol, obj_tol, check_every,
    inner_max_iter, inner_tol, log, name,
):  # fmt: skip
    like = next(x for x in (M, C1, C2, p, q, T0) if isinstance(x, torch.Tensor))
    dtype = like.dtype if like.is_floating_point() else torch.float64
    C1 = torch.as_tensor(C1, dtype=dtype, device=like.device)
    C2 = torch.as_tensor(C2, dtype=dtype, device=like.device)
    low = dtype != torch.float64
    tol, obj_tol = stopping_rule(tol, obj_tol, low_precision=low)
    inner_tol = _default_tol(inner_tol, dtype, 1e-5)
    check_gw_shapes(C1, C2)
    if C1.shape[:-2] != C2.shape[:-2]:
        raise ValueError(
            f"C1, C2: batch dims must match, found {tuple(C1.shape[:-2])} and "
            f"{tuple(C2.shape[:-2])}"
        )
    check_finite("C1", C1, torch.isfinite)
    check_finite("C2", C2, torch.isfinite)
    if loss == "kl" and (bool((C1 < 0).any()) or bool((C2 < 0).any())):
        raise ValueError("C1, C2: loss='kl' needs non-negative costs")
    batch, n, m = C1.shape[:-2], C1.shape[-1], C2.shape[-1]
    if M is not None:
        M = torch.as_tensor(M, dtype=dtype, device=C1.device)
        M = check_feature_cost(M, tuple(batch), n, m, torch.isfinite).expand(batch + (n, m))
    p = _weights("p", p, C1, batch, n)
    q = _weights("q", q, C1, batch, m)
    q = check_masses("p", p, "q", q, rtol=_mass_rtol(dtype))
    if symmetric is None:
        symmetric = bool(
            torch.allclose(C1, C1.transpose(-1, -2), atol=1e-10)
            and torch.allclose(C2, C2.transpose(-1, -2), atol=1e-10)
        )
    pairs, _ = gradient_pairs(C1, C2, p, q, loss, symmetric, lambda x: x.contiguous())
    T = p[..., :, None] * q[..., None, :] if T0 is None else torch.as_tensor(T0).to(C1)
    T = T.expand(batch + (n, m))
    loga, logb = _safe_log(p), _safe_log(q)
    pot = {
        "f": torch.zeros(batch + (n,), dtype=dtype, device=C1.device),
        "g": torch.zeros(batch + (m,), dtype=dtype, device=C1.device),
    }
    feat = None if M is None or alpha == 1.0 else (1.0 - alpha) * M

    def solve(grad, itol):
        """Inner Sinkhorn from the current potentials (kept for the next outer step)."""
        f, g, ni, err = _sinkhorn_loop(
            loga, logb, grad, eps, pot["f"], pot["g"], inner_max_iter, itol
        )
        pot["f"], pot["g"] = f, g
        return torch.exp((f[..., :, None] + g[..., None, :] - grad) / eps), ni, err

    # as the Numba engine, but never below what the dtype can resolve (float32: ~1e-5)
    itol_floor = max(inner_floor(inner_tol, tol), 100 * torch.finfo(dtype).eps)
    ops = EngineOps(
        product=lambda A, T, B: A @ T @ B,
        solve=solve,
        step=_step,
        host=lambda o: o.cpu(),
        isfinite=torch.isfinite,
    )
    stop = _Stop(tol, obj_tol, check_every, max_iter)
    res = plain_loop(ops, pairs, alpha, feat, T, stop, itol_floor, log=log, name=name)
    if not log:
        return res.T
    gw = gw_objective(C1, C2, res.T, loss)
    obj = fgw_value(None, feat, res.T, alpha, gw=gw)
    res.obj_hist.append(obj.cpu())
    res.time_hist.append(time.perf_counter() - res.t0)
    value = (lambda o: o) if batch else float
    return res.T, loop_log(res, gw, obj, value, fused=M is not None, f=pot["f"], g=pot["g"])


def _step(T_new, T):
    """Largest ``||dT||_F`` over the batch (a float: one host sync) and ``||dT||_1`` per
    problem (each problem's next inner tolerance)."""
    diff = T_new - T
    delta_l1 = diff.abs().sum((-1, -2))
    delta = float(diff.square().sum((-1, -2)).sqrt().max()) if diff.numel() else 0.0
    return delta, delta_l1
