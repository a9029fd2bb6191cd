"""Numba/numpy engine: entropic (fused) Gromov-Wasserstein on numpy inputs.

The map is POT's PGD step ``T <- Sinkhorn(p, q, grad(T), eps)`` from ``T0 = p q^T`` (see
:mod:`._loop`), so both converge to the same stationary point of ``<L (x) T, T> - eps H(T)``.
The tensor product uses the decomposition ``L(a, b) = f1(a) + f2(b) - h1(a) h2(b)``:
``L (x) T = constC - h1(C1) T h2(C2)^T`` (two matrix products, BLAS, float64). The inner
Sinkhorns are the Numba kernels of :mod:`._sinkhorn` (potentials warm-started from the previous
outer step, tolerance following the outer progress).

Two outer loops: with an explicit ``tol`` (POT's ``||dT||_F`` rule), or for ``alpha = 0``, the
plain loop shared with the torch engine (:func:`robopref.ot._loop.plain_loop`); under the
default rule :func:`_accelerated_loop`, which needs what only this engine has (see its
docstring).
"""

from __future__ import annotations

import time

import numpy as np

from robopref.ot._common import (
    check_alpha,
    check_eps,
    check_feature_cost,
    check_finite,
    check_gw_shapes,
    check_masses,
    gradient_pairs,
    gw_objective,
    keeps_torch_threads,
    loss_name,
    shape_error,
    warn,
)
from robopref.ot._loop import (
    CHECK_EVERY,
    EngineOps,
    LoopResult,
    _Stop,
    check_budgets,
    fgw_value,
    inner_floor,
    inner_tolerance,
    loop_log,
    plain_loop,
    stopping_rule,
    warn_inner,
)
from robopref.ot._lowrank import product as lowrank_product
from robopref.ot._numba import numba_kernels
from robopref.ot._sinkhorn import _BOUND, _PARALLEL_MIN_SIZE, batch_kernel

# the default rule's products run in float32 (by differences, see _accelerated_loop) for
# problems at least this large: 2.4x faster BLAS at n = 512
_F32_MIN_SIZE = 128 * 128


@keeps_torch_threads
def entropic_fgw_numpy(
    M, C1, C2, p, q, eps, alpha, loss, *, symmetric=None, T0=None, max_iter=1000, tol=None,
    obj_tol=None, check_every=None, inner_max_iter=2000, inner_tol=None, log=False,
    name="entropic_fused_gromov_wasserstein",
):  # fmt: skip
    """:func:`robopref.ot.entropic_fused_gromov_wasserstein` on numpy inputs, batched over the
    leading dims; ``M`` None is plain GW (``alpha`` 1)."""
    loss, eps, alpha = loss_name(loss), check_eps(eps), check_alpha(alpha)
    if check_every is None:  # the default loop checks every step: it is free there
        check_every = 1 if tol is None else CHECK_EVERY
    check_budgets(max_iter, inner_max_iter, check_every)
    tol, obj_tol = stopping_rule(tol, obj_tol, low_precision=False)
    inner_tol = 1e-9 if inner_tol is None else float(inner_tol)
    C1 = np.ascontiguousarray(C1, dtype=np.float64)
    C2 = np.ascontiguousarray(C2, dtype=np.float64)
    C1, C2, p, q, batch = _prepare_numpy(C1, C2, p, q, loss)
    n, m = C1.shape[-1], C2.shape[-1]
    nb = int(np.prod(batch))
    if M is not None:
        M = check_feature_cost(np.asarray(M, dtype=np.float64), batch, n, m, np.isfinite)
        M = np.ascontiguousarray(np.broadcast_to(M, batch + (n, m))).reshape(nb, n, m)
    C1, C2 = C1.reshape(nb, n, n), C2.reshape(nb, m, m)
    p, q = p.reshape(nb, n), q.reshape(nb, m)
    if symmetric is None:
        symmetric = _is_symmetric(C1) and _is_symmetric(C2)
    pairs, fC = gradient_pairs(C1, C2, p, q, loss, symmetric, np.ascontiguousarray)
    # exact low-rank structure (e.g. squared-Euclidean costs): products in O(n m r)
    fast = None
    if nb == 1 and n * m >= _F32_MIN_SIZE:
        fast = {(id(hA), id(hB)): lowrank_product(hA[0], hB[0]) for _, hA, hB in pairs}
        fast = {key: fn for key, (fn, low) in fast.items() if low} or None
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
    feat = None if M is None or alpha == 1.0 else (1.0 - alpha) * M
    itol_floor = inner_floor(inner_tol, tol)

    def solve(grad, itol):
        """Inner Sinkhorn from the current potentials ``F, G`` (updated in place)."""
        T_new = np.empty_like(grad)
        if single:
            ni, err = solve_one(
                p[0], q[0], grad[0], eps, F[0], G[0], T_new[0], inner_max_iter, itol, _BOUND
            )
            return T_new, int(ni), float(err)
        run_batch(p, q, grad, eps_b, F, G, T_new, inner_max_iter, itol, _BOUND, n_iter_b, errs_b)
        return T_new, int(n_iter_b.max()), float(errs_b.max())

    def value(o):  # a per-problem objective as the log shows it
        return o.reshape(batch) if batch else float(o[0])

    if tol is None and alpha > 0.0:  # the default rule
        res, gw, obj = _accelerated_loop(
            solve, pairs, alpha, feat, T, T0 is None, p, q, max_iter, obj_tol, check_every,
            itol_floor, fC=fC, mixed=n * m >= _F32_MIN_SIZE and fast is None, single=single,
            name=name, fast=fast,
        )  # fmt: skip
        res.obj_hist = [value(o) for o in res.obj_hist]
    else:
        ops = EngineOps(
            product=_product(single, fast),
            solve=solve,
            step=_step,
            host=value,
            isfinite=np.isfinite,
        )
        stop = _Stop(tol, obj_tol, check_every, max_iter)
        res = plain_loop(ops, pairs, alpha, feat, T, stop, itol_floor, log=log, name=name)
        if log:
            gw = gw_objective(C1, C2, res.T, loss)
            obj = fgw_value(None, feat, res.T, alpha, gw=gw)
            res.obj_hist.append(value(obj))
            res.time_hist.append(time.perf_counter() - res.t0)
    T_out = res.T.reshape(batch + (n, m))
    if not log:
        return T_out
    f, g = F.reshape(batch + (n,)), G.reshape(batch + (m,))
    return T_out, loop_log(res, gw, obj, value, fused=M is not None, f=f, g=g)


def _product(single: bool, fast=None):
    """``A @ T @ B`` per problem: 2-D BLAS calls for one problem (numpy's stacked matmul was
    ~30 % slower at n = 512). ``fast``: ``{(id(A), id(B)): T -> A @ T @ B}`` for operands
    with exact low-rank factors (:mod:`._lowrank`)."""
    if fast:
        dense = _product(single)

        def prod(A, T, B):
            fn = fast.get((id(A), id(B)))
            return dense(A, T, B) if fn is None else fn(T[0])[None]

        return prod
    if single:
        return lambda A, T, B: (A[0] @ T[0] @ B[0])[None]
    return lambda A, T, B: A @ T @ B


def _step(T_new, T) -> tuple[float, float]:
    """Largest ``||dT||_F`` and largest ``||dT||_1`` over the batch (the Numba kernels take one
    inner tolerance for a whole batch)."""
    diff = T_new - T
    delta = float(np.sqrt((diff * diff).sum(axis=(1, 2))).max())
    return delta, float(np.abs(diff).sum(axis=(1, 2)).max())


# Anderson acceleration of the outer map (default rule; docs/rooms/ot.md item 13)
_AA_MEMORY = 5  # past residuals kept
_AA_START = 3  # plain steps with a shrinking residual before mixing starts (and after a reset)
# mixing starts only once a plain step contracted the residual by less than this factor: where
# the plain map contracts fast (eps 0.05: residual x 0.02-0.3 per step), an Anderson step (its
# history writes and least squares cost ~2 inner Sinkhorns at n = 512) gains no step
_AA_SLOW = 0.35
_AA_BUDGET = 256 * 2**20  # bytes of history at most (memory shrinks, or no mixing, above)
_ANCHOR_AT = 1e-5  # relative objective change at which mixed precision takes its exact anchor


def _accelerated_loop(
    solve, pairs, alpha, feat, T, rank_one, p, q, max_iter, obj_tol, check_every, itol_floor,
    *, fC, mixed, single, name, fast=None,
):  # fmt: skip
    """Default-rule outer loop of the numpy engine: the same map ``T <- Sinkhorn(grad(T))`` as
    POT, with three changes that leave the fixed point alone.

    Why a loop of its own rather than :func:`robopref.ot._loop.plain_loop` (which this engine
    runs with an explicit ``tol``, and the torch engine always): its state is the tensor
    products, not only ``T`` (they are mixed, updated by float32 differences and re-anchored),
    it judges each step's *output* and its residual rather than the iterate entering a step,
    and it steps through the Numba kernels ``_gw_grad`` / ``_gw_step_stats``. Putting that
    behind the plain loop's hooks would leave nothing shared but the ``for``.

    * The tensor product of each *output* coupling is computed once and serves twice: for the
      objective of that coupling (the stopping rule judges exactly what is returned, and the
      log's ``gw_dist`` needs no extra product) and for the next gradient. ``T0 = p q^T`` is
      rank one, so its product costs O(nm).
    * Anderson acceleration (type II, memory ``_AA_MEMORY``): ``grad`` is affine in ``T``, so
      the gradient at a mix ``sum_i c_i T_i`` (``sum c_i = 1``) is the same mix of the stored
      products -- extrapolation costs no extra product. Mixing starts only after
      ``_AA_START`` plain steps in a row shrank the residual ``||Sinkhorn(grad(x)) - x||_F``
      (a contracting phase: plain iterations escaping a saddle are left alone, so the
      iteration is not pulled to a fixed point that plain iterations would leave), and the
      history is dropped whenever a mixed step does not shrink it.
    * Stopping (:func:`_obj_converged`): the relative change of the objective of the outputs
      over ``check_every`` steps at most ``obj_tol`` and the residual contracting with little
      change still to come, tested every step, with a final inner Sinkhorn at ``itol_floor``.
    * Mixed precision (``mixed``, large problems): float32 products of the steps until the
      objective changes by <= ``_ANCHOR_AT`` per step, then one exact float64 product.

    ``pairs``: ``[(constC, hC1, hC2t)]`` (symmetric: ``grad = 2 tens``) or two of them
    (``grad = tens + tens_t``), each ``[nb, ., .]``. ``solve(grad, itol)`` returns
    ``(T_new, inner_iter, inner_err)``. Returns a :class:`LoopResult` (``T [nb, n, m]``,
    ``err``: the residuals, ``obj_hist``: the objective ``[nb]`` of each step's output) and
    the exact GW and (F)GW objectives ``[nb]`` of ``T``.
    """
    nb, n, m = T.shape
    nm, s = n * m, len(pairs)
    k = numba_kernels()
    scale = alpha * (2.0 if s == 1 else 1.0)
    prod = _product(single, fast)
    # mixed precision (large problems): P(T_k) = P(T_{k-1}) + float32 product of T_k - T_{k-1},
    # from an exact start; one exact float64 product ("anchor") once the objective settles
    # clears the rounding of the large early moves; later differences are small, and so is
    # their float32 rounding. Without `mixed`, every product is float64.
    low = mixed  # not anchored yet: objective known to ~1e-6 only, the rule waits
    mem = min(_AA_MEMORY, _AA_BUDGET // (4 * nb * nm * (2 + s)))
    flat = lambda a: np.ascontiguousarray(a).reshape(nb, nm)  # noqa: E731
    constC = [flat(c) for c, _, _ in pairs]
    feat2 = np.empty((nb, 0)) if feat is None else flat(feat)

    def products(T):
        return [flat(prod(hA, T, hB)) for _, hA, hB in pairs]

    if mixed:
        D32 = np.empty((nb, nm), np.float32)
        h_f32 = [(hA.astype(np.float32), hB.astype(np.float32)) for _, hA, hB in pairs]

    def products32(D):
        D = D.reshape(nb, n, m)
        if single:
            return [(hA[0] @ D[0] @ hB[0])[None] for hA, hB in h_f32]
        return [hA @ D @ hB for hA, hB in h_f32]

    if rank_one:  # hA (p q^T) hB = (hA p)(q^T hB)
        P = [flat((hA @ p[:, :, None]) @ (q[:, None, :] @ hB)) for _, hA, hB in pairs]
    else:
        P = products(T)
    x = Tp = flat(T)
    Pp = P
    # history of differences in float32: they shrink with the residual, so their rounding
    # does too (half the memory traffic of float64, which dominates a mixing step)
    dF = np.zeros((nb, mem, nm), np.float32) if mem >= 2 else None  # residual differences
    dZ = np.zeros((nb, mem, (1 + s) * nm), np.float32) if mem >= 2 else None  # outputs'
    # per problem (a batch mixes each problem as it would be mixed alone): history length,
    # plain contracting steps in a row, last residual norm; shared: ring position, previous
    # (r, T, P)
    cnt, ndec, rn_prev = np.zeros(nb, np.int64), np.zeros(nb, np.int64), np.full(nb, np.inf)
    slow = np.zeros(nb, bool)  # a contracting plain step was slow since the last reset
    head, last = 0, None
    # objective of each output [nb]; once anchored: relative change and residual per step [nb]
    objs, changes, rns = [], [], []
    obj_hist, time_hist, errs = [], [], []
    itol, rl1, inner_total, inner_err = np.inf, np.inf, 0, np.inf
    finish = converged = False
    grad = np.empty((nb, nm))
    stats = np.empty((nb, 5))
    t0 = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        if s == 1:
            k._gw_grad(constC[0], P[0], scale, feat2, grad)
        else:
            np.subtract(constC[0], P[0], out=grad)
            grad += constC[1]
            grad -= P[1]
            grad *= scale
            if feat is not None:
                grad += feat2
        itol = inner_tolerance(rl1, itol_floor)
        if finish or it == max_iter or (not low and changes and _near(changes, obj_tol)):
            itol = itol_floor
        T_new, ni, inner_err = solve(grad.reshape(nb, n, m), itol)
        inner_total += ni
        T_new = T_new.reshape(nb, nm)
        if mixed:
            np.subtract(T_new, Tp, out=D32, casting="same_kind")  # in float64, then rounded
            P_new = []
            for a, b in zip(Pp, products32(D32)):
                P_new.append(np.empty((nb, nm)))
                k._add_f32(a, b.reshape(nb, nm), P_new[-1])
        else:
            P_new = products(T_new.reshape(nb, n, m))
        r = np.empty((nb, nm))
        k._gw_step_stats(T_new, x, constC[0], P_new[0], feat2, r, stats)
        obj = alpha * (stats[:, 2] - stats[:, 3]) + stats[:, 4]
        rn_b = np.sqrt(stats[:, 0])
        rn, rl1 = float(rn_b.max()), float(stats[:, 1].max())
        errs.append(rn)
        obj_hist.append(obj)
        time_hist.append(time.perf_counter() - t0)
        objs.append(obj)
        if len(objs) > check_every:
            o_old = objs[-1 - check_every]
            change = np.abs(obj - o_old) / np.maximum(np.abs(obj), np.finfo(np.float64).tiny)
            if low and (change <= _ANCHOR_AT).all():
                # the anchor: exact products; the objective and the history start afresh
                # (the history holds differences, each exact to float32 rounding of a small
                # step, so it stays valid across the anchor)
                low, objs, changes, rns = False, [], [], []
                P_new = products(T_new.reshape(nb, n, m))
                obj = _output_objective(constC[0], P_new[0], T_new, alpha, feat)
                objs.append(obj)
            elif not low:
                changes.append(change)
                rns.append(rn_b)
                if _obj_converged(changes, rns, obj_tol):
                    if itol <= itol_floor:
                        converged = True
                    else:
                        finish = True  # one more step with an accurate inner Sinkhorn
        Tp, Pp = T_new, P_new
        if converged:
            T, P = T_new, P_new
            break
        # Anderson mixing of x (the point where the next gradient is taken)
        x, P = T_new, P_new
        if dF is not None:
            dec = rn_b < rn_prev  # not contracting: that problem's history restarts
            ndec = np.where(dec, ndec + 1, 0)
            slow = np.where(dec, slow | (rn_b >= _AA_SLOW * rn_prev), False)
            if last is not None and slow.any():
                np.subtract(r, last[0], out=dF[:, head], casting="same_kind")
                np.subtract(T_new, last[1], out=dZ[:, head, :nm], casting="same_kind")
                for j in range(s):
                    np.subtract(
                        P_new[j], last[2][j], out=dZ[:, head, (1 + j) * nm : (2 + j) * nm],
                        casting="same_kind",
                    )  # fmt: skip
                head = (head + 1) % mem
                cnt = np.where(dec, np.minimum(cnt + 1, mem), 0)
            else:
                cnt = np.where(dec, cnt, 0)
            last = (r, T_new, P_new)
            mix = (ndec >= _AA_START) & (cnt >= 1) & slow
            if mix.any():
                x, P = _anderson(dF, dZ, r, T_new, P_new, cnt * mix, head)
        rn_prev = rn_b
        T = T_new
    else:
        T = T_new
    _warn_default_end(name, converged, max_iter, errs[-1], inner_err, itol_floor)
    if low:  # max_iter hit before the anchor: an exact objective for the log
        P = products(T.reshape(nb, n, m))
    # exact objective of T (as gw_objective: constC from T's own marginals, O(n^2 + m^2))
    T3 = T.reshape(nb, n, m)
    a, b = T3.sum(-1), T3.sum(-2)
    const = np.einsum("bi,bi->b", (fC[0] @ a[:, :, None])[..., 0], a) + np.einsum(
        "bj,bj->b", (fC[1] @ b[:, :, None])[..., 0], b
    )
    gw = const - np.einsum("bi,bi->b", P[0], T)
    obj = alpha * gw + (0.0 if feat is None else np.einsum("bi,bi->b", feat2, T))
    obj_hist[-1] = obj
    res = LoopResult(T.reshape(nb, n, m), it, converged, inner_total, inner_err, errs, obj_hist)
    res.time_hist = time_hist
    return res, gw, obj


def _output_objective(constC, P, T, alpha, feat) -> np.ndarray:
    """``alpha <constC - P, T> + <feat, T>`` per problem ``[nb]`` (arrays ``[nb, nm]``)."""
    nb = T.shape[0]
    val = alpha * (np.einsum("bi,bi->b", constC, T) - np.einsum("bi,bi->b", P, T))
    if feat is not None:
        val = val + np.einsum("bi,bi->b", feat.reshape(nb, -1), T)
    return val


def _near(changes, obj_tol) -> bool:
    """The last objective change is within 10 x ``obj_tol``: time for accurate inner solves."""
    return bool((changes[-1] <= 10.0 * obj_tol).all())


def _obj_converged(changes, rns, obj_tol) -> bool:
    """Objective rule, per problem, on the relative objective changes ``changes`` and residual
    norms ``rns`` (``||T_k - x_{k-1}||_F``) of the steps so far (lists of ``[nb]``):

    * the last change is at most ``obj_tol``, and
    * the residual still contracts (``rho = rn_k / rn_{k-1} < 1``) and the change still to
      come, ``sens * rn_k * rho / (1 - rho)``, is at most ``obj_tol`` -- ``sens``: the largest
      objective change per unit residual over the last 3 steps. A single small change can be
      luck (mixed steps move the objective unevenly; a plateau moves it little while ``T``
      drifts); the residual says whether ``T`` has stopped. Or the residual is below POT's
      tolerance (1e-9), the rounding floor, where ``rho`` is noise.
    """
    if len(changes) < 2:
        return False
    c, rn = changes[-1], rns[-1]
    rho = rn / np.maximum(rns[-2], np.finfo(np.float64).tiny)
    sens = np.max([ch / np.maximum(r, np.finfo(np.float64).tiny) for ch, r in
                   zip(changes[-3:], rns[-3:])], axis=0)  # fmt: skip
    rest = np.where(rho < 1.0, sens * rn * rho / np.maximum(1.0 - rho, 1e-12), np.inf)
    return bool(((c <= obj_tol) & ((rest <= obj_tol) | (rn <= 1e-9))).all())


def _anderson(dF, dZ, r, T, P, cnt, head):
    """Type-II Anderson step per problem: ``(T, P) - gamma dZ`` with ``gamma = argmin ||r -
    gamma dF||`` over that problem's ``cnt[i]`` latest history entries (ring buffers ``dF [nb,
    mem, nm]``, ``dZ [nb, mem, (1+s) nm]`` float32, newest at ``head - 1``); ``cnt[i] = 0``:
    plain step. ``r, T [nb, nm]``, ``P``: s arrays ``[nb, nm]``. Returns the mixed ``x, P``.
    """
    nb, nm = T.shape
    mem = dF.shape[1]
    x, Pm = T.copy(), [a.copy() for a in P]
    for i in range(nb):
        c = int(cnt[i])
        if c == 0:
            continue
        # products over the whole ring (no gathered copies: memory traffic dominates here),
        # then the window of the c newest entries
        idx = (head - 1 - np.arange(c)) % mem
        A = (dF[i] @ dF[i].T).astype(np.float64)[np.ix_(idx, idx)]
        reg = 1e-10 * np.trace(A) + np.finfo(np.float64).tiny
        b = (dF[i] @ r[i].astype(np.float32)).astype(np.float64)[idx]
        gamma = np.zeros(mem, np.float32)
        gamma[idx] = np.linalg.solve(A + reg * np.eye(c), b)
        mix = gamma @ dZ[i]  # [(1 + s) nm]
        x[i] -= mix[:nm]
        for j, a in enumerate(Pm):
            a[i] -= mix[(1 + j) * nm : (2 + j) * nm]
    return x, Pm


def _warn_default_end(name, converged, max_iter, last_err, inner_err, itol_floor) -> None:
    if not converged:
        warn(
            f"{name}: max_iter={max_iter} reached before the objective rule was met, last "
            f"residual {last_err:.2e}"
        )
    warn_inner(name, inner_err, itol_floor)


def _is_symmetric(C) -> bool:
    """POT's test (``allclose(C, C.T, atol=1e-10)``) in one pass over a triangle: 10x cheaper."""
    C = np.ascontiguousarray(C, dtype=np.float64).reshape((-1,) + C.shape[-2:])
    return bool(numba_kernels()._is_symmetric_close(C, 1e-5, 1e-10))


def _prepare_numpy(C1, C2, p, q, loss):
    check_gw_shapes(C1, C2)
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
