"""Gromov-Wasserstein: entropic (Peyre et al. 2016) on both engines, exact CG through POT.

Entropic GW iterates ``T <- Sinkhorn(p, q, grad(T), eps)`` from ``T0 = p q^T``, where
``grad(T) = 2 L(C1, C2) (x) T`` (``tens(T) + tens_t(T)`` for non-symmetric costs) -- the same
map, gradient scaling and stopping rule (Frobenius norm of the change of ``T``) as POT's
``ot.gromov.entropic_gromov_wasserstein(..., solver="PGD")``, so both converge to the same
stationary point of ``<L (x) T, T> - eps H(T)``. The tensor product uses the decomposition
``L(a, b) = f1(a) + f2(b) - h1(a) h2(b)``: ``L (x) T = constC - h1(C1) T h2(C2)^T`` (two matrix
products, BLAS). Speed comes from the inner Sinkhorn (potentials warm-started from the
previous outer step, tolerance following the outer progress) and, under the default stopping
rule on the numpy engine, from :func:`_accelerated_loop` (Anderson mixing of the outer map,
each tensor product used twice, float32 products of the small steps).
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
    keeps_torch_threads,
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
# default stopping rule: relative change of the objective over CHECK_EVERY outer iterations
_OBJ_TOL = 2e-7
CHECK_EVERY = 2
# mixed precision of the default rule: float32 tensor products (2.4x faster BLAS at n = 512)
# while the objective changes by more than this (relative, per check), for problems this large
_F32_UNTIL = 1e-6
_F32_MIN_SIZE = 128 * 128


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
    obj_tol: float | None = None,
    check_every: int | None = None,
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
        max_iter: outer iterations.
        tol: stop when ``||T_k - T_{k-1}||_F < tol`` (every problem of a batch), tested every
            outer iteration -- POT's quantity.
        obj_tol: stop when the objective changed by at most ``obj_tol`` (relative) over the last
            ``check_every`` outer iterations (every problem of a batch). Default stopping rule:
            when both ``tol`` and ``obj_tol`` are None, ``obj_tol`` = 2e-7 (float64) or 1e-5
            (torch float32 / half); when only ``tol`` is given only ``tol`` is used; when both
            are given the first one met stops. Without ``tol`` the numpy engine runs the
            accelerated loop (Anderson mixing; the objective rule also needs the residual to
            contract, see :func:`_obj_converged`). See ``docs/rooms/ot.md`` (items 12-13).
        check_every: outer iterations the objective change is measured over, >= 1; None: 1 on
            the numpy engine without ``tol`` (checked every step: it is free there), else 2.
        inner_max_iter, inner_tol: budget and final L1 marginal tolerance of each inner
            Sinkhorn; None: 1e-9 (float64), 1e-5 (torch float32 / half).
        log: also return a dict: ``gw_dist`` (GW objective of T, same key as POT), ``n_iter``
            (outer), ``inner_iter`` (total Sinkhorn iterations), ``err`` (list of ``||dT||_F``;
            accelerated loop: the residual ``||T_k - x_{k-1}||_F``, ``x`` the mixed point),
            ``obj_hist`` / ``time_hist`` (objective of the iterate entering each step --
            accelerated loop: of each step's output -- and seconds since start),
            ``converged``, ``inner_err`` (L1 column-marginal error of T; rows are
            exact), ``f``, ``g`` (final potentials). A ``RuntimeWarning`` is issued when
            ``max_iter`` is hit or ``inner_err`` > max(1e-6, 10 x the final inner tolerance).

    Returns:
        ``T [..., n, m]`` (numpy float64, or torch on the inputs' device), and the log if asked.
        The torch engine runs under ``torch.no_grad()`` (use :func:`sinkhorn` for gradients).
    """
    return _entropic_fgw(
        None, C1, C2, p, q, eps, 1.0, loss, symmetric=symmetric, T0=T0, max_iter=max_iter,
        tol=tol, obj_tol=obj_tol, check_every=check_every, inner_max_iter=inner_max_iter,
        inner_tol=inner_tol, log=log, name="entropic_gromov_wasserstein",
    )  # fmt: skip


def entropic_fused_gromov_wasserstein(
    M,
    C1,
    C2,
    p=None,
    q=None,
    eps: float = 0.1,
    alpha: float = 0.5,
    loss: str = "square",
    **kwargs,
):
    """Entropic fused GW (Vayer et al. 2019) between ``(C1, p)`` and ``(C2, q)`` with features.

    Solves (locally) ``min_T (1 - alpha) <M, T> + alpha <L(C1, C2) (x) T, T> - eps H(T)`` s.t.
    ``T 1 = p``, ``T^T 1 = q`` -- POT's ``ot.gromov.entropic_fused_gromov_wasserstein``
    convention: ``alpha`` weights the *structure* term; ``alpha = 1`` is
    :func:`entropic_gromov_wasserstein`, ``alpha = 0`` plain entropic OT on ``M``. Same mirror
    descent as GW with the gradient ``(1 - alpha) M + alpha * GW gradient`` (POT's).

    Args:
        M: cross-domain feature cost ``[..., n, m]`` (source item, target item), finite.
        C1, C2, p, q, eps, loss: as :func:`entropic_gromov_wasserstein`.
        alpha: trade-off in [0, 1].
        kwargs: the keywords of :func:`entropic_gromov_wasserstein` (``tol``, ``obj_tol``,
            ``max_iter``, ``T0``, ``log``, ...).

    Returns:
        ``T [..., n, m]`` and, with ``log=True``, the log of :func:`entropic_gromov_wasserstein`
        plus ``fgw_dist`` (the FGW objective without entropy, POT's key); ``gw_dist`` is then
        the unweighted structure term ``<L (x) T, T>``.
    """
    if M is None:
        raise ValueError("M: expected a feature cost [..., n, m], found None")
    return _entropic_fgw(M, C1, C2, p, q, eps, alpha, loss, **kwargs)


def _check_alpha(alpha) -> float:
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], found {alpha!r}") from None
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha: expected a number in [0, 1], found {alpha}")
    return alpha


def stopping_rule(tol, obj_tol, low_precision: bool) -> tuple[float | None, float | None]:
    """Resolve the two stopping tolerances (see :func:`entropic_gromov_wasserstein`)."""
    if tol is None and obj_tol is None:
        return None, (1e-5 if low_precision else _OBJ_TOL)
    for name, v in (("tol", tol), ("obj_tol", obj_tol)):
        if v is not None and not (float(v) >= 0.0):
            raise ValueError(f"{name}: expected a number >= 0, found {v}")
    return (None if tol is None else float(tol)), (None if obj_tol is None else float(obj_tol))


@keeps_torch_threads
def _entropic_fgw(
    M, C1, C2, p, q, eps, alpha, loss, *, symmetric=None, T0=None, max_iter=1000, tol=None,
    obj_tol=None, check_every=None, inner_max_iter=2000, inner_tol=None, log=False,
    name="entropic_fused_gromov_wasserstein",
):  # fmt: skip
    """Entropic (F)GW on either engine; ``M is None`` is plain GW (``alpha`` must be 1)."""
    loss = loss_name(loss)
    eps = check_eps(eps)
    alpha = _check_alpha(alpha)
    numpy_default = tol is None and not any_torch(M, C1, C2, p, q, T0)
    if check_every is None:  # every step where checking is free (numpy default loop)
        check_every = 1 if numpy_default else CHECK_EVERY
    if max_iter < 1 or inner_max_iter < 1 or check_every < 1:
        raise ValueError(
            f"max_iter, inner_max_iter, check_every: expected >= 1, found {max_iter}, "
            f"{inner_max_iter}, {check_every}"
        )
    if any_torch(M, C1, C2, p, q, T0):
        from robopref.ot._torch_engine import entropic_fgw_torch

        return entropic_fgw_torch(
            M, C1, C2, p, q, eps, alpha, loss, symmetric=symmetric, T0=T0, max_iter=max_iter,
            tol=tol, obj_tol=obj_tol, check_every=check_every, inner_max_iter=inner_max_iter,
            inner_tol=inner_tol, log=log, name=name,
        )  # fmt: skip
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
    feat = None if M is None or alpha == 1.0 else (1.0 - alpha) * M
    gw_on = alpha > 0.0

    itol_floor = _inner_floor(inner_tol, tol)
    if tol is None and gw_on:  # the default rule: accelerated loop (see _accelerated_loop)

        def solve(grad, itol):
            T_new = np.empty_like(grad)
            if single:
                ni, err = solve_one(
                    p[0], q[0], grad[0], eps, F[0], G[0], T_new[0], inner_max_iter, itol, _BOUND
                )
                return T_new, int(ni), float(err)
            run_batch(
                p, q, grad, eps_b, F, G, T_new, inner_max_iter, itol, _BOUND, n_iter_b, errs_b
            )
            return T_new, int(n_iter_b.max()), float(errs_b.max())

        pairs = [(constC, hC1, hC2t)] + ([] if symmetric else [(constCt, hC1t, hC2tt)])
        T, info = _accelerated_loop(
            solve, pairs, alpha, feat, T, T0 is None, p, q, max_iter, obj_tol, check_every,
            itol_floor, fC=(fC1, fC2), mixed=n * m >= _F32_MIN_SIZE, single=single, name=name,
        )  # fmt: skip
        T_out = T.reshape(batch + (n, m))
        if not log:
            return T_out
        gw, obj = info.pop("gw"), info.pop("obj")
        info["obj_hist"] = [o.reshape(batch) if batch else float(o[0]) for o in info["obj_hist"]]
        info.update(
            gw_dist=gw.reshape(batch) if batch else float(gw[0]),
            f=F.reshape(batch + (n,)),
            g=G.reshape(batch + (m,)),
        )
        if M is not None:
            info["fgw_dist"] = obj.reshape(batch) if batch else float(obj[0])
        return T_out, info

    deltas, obj_hist, time_hist = [], [], []
    inner_total, inner_err = 0, np.inf
    delta_l1 = np.inf
    stop = _Stop(tol, obj_tol, check_every, max_iter, mixed=gw_on and n * m >= _F32_MIN_SIZE)
    prod = _TensorProduct(single)
    t0 = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        if gw_on:
            low = stop.low_precision
            tens = constC - prod(hC1, T, hC2t, low)
            grad = 2.0 * tens if symmetric else tens + (constCt - prod(hC1t, T, hC2tt, low))
            if alpha != 1.0:
                grad = alpha * grad
            if feat is not None:
                grad = grad + feat
        else:
            grad = feat
        if log or stop.wants_objective(it):
            o = _fgw_value(tens if gw_on else None, feat, T, alpha)
            stop.record(it, o)
            if log:
                obj_hist.append(o.reshape(batch) if batch else float(o[0]))
                time_hist.append(time.perf_counter() - t0)
        itol = min(_INNER_LOOSE, max(itol_floor, _INNER_RATE * delta_l1))
        if stop.final_step(it):  # the returned coupling always has accurate marginals
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
        if stop.done(it, delta, itol <= itol_floor):
            break
    if not np.isfinite(T).all():
        raise FloatingPointError(f"{name}: coupling is not finite; raise eps or check C1, C2")
    _warn_end(name, stop, deltas, max_iter, inner_err, itol_floor)
    T_out = T.reshape(batch + (n, m))
    if not log:
        return T_out
    gw = gw_objective(C1, C2, T, loss)
    obj = _fgw_value(None, feat, T, alpha, gw=gw)
    obj_hist.append(obj.reshape(batch) if batch else float(obj[0]))
    time_hist.append(time.perf_counter() - t0)
    info = {
        "gw_dist": gw.reshape(batch) if batch else float(gw[0]),
        "n_iter": it,
        "inner_iter": inner_total,
        "err": deltas,
        "obj_hist": obj_hist,
        "time_hist": time_hist,
        "converged": stop.converged,
        "inner_err": inner_err,
        "f": F.reshape(batch + (n,)),
        "g": G.reshape(batch + (m,)),
    }
    if M is not None:
        info["fgw_dist"] = obj.reshape(batch) if batch else float(obj[0])
    return T_out, info


class _TensorProduct:
    """``A @ T @ B`` per problem: 2-D BLAS calls for one problem (numpy's stacked matmul was
    ~30 % slower at n = 512), float32 copies of ``A`` and ``B`` while ``low`` (see
    :class:`_Stop`)."""

    def __init__(self, single: bool):
        self.single = single
        self.f32: dict[int, np.ndarray] = {}

    def _low(self, x: np.ndarray) -> np.ndarray:
        key = id(x)
        if key not in self.f32:
            self.f32[key] = x.astype(np.float32)
        return self.f32[key]

    def __call__(self, A, T, B, low: bool) -> np.ndarray:
        if low:
            A, B, T = self._low(A), self._low(B), T.astype(np.float32)
        out = (A[0] @ T[0] @ B[0])[None] if self.single else A @ T @ B
        return out.astype(np.float64) if low else out


# Anderson acceleration of the outer map (default rule, numpy engine; docs/rooms/ot.md item 13)
_AA_MEMORY = 5  # past residuals kept
_AA_START = 3  # plain steps with a shrinking residual before mixing starts (and after a reset)
_AA_BUDGET = 256 * 2**20  # bytes of history at most (memory shrinks, or no mixing, above)
_ANCHOR_AT = 1e-5  # relative objective change at which mixed precision takes its exact anchor


def _accelerated_loop(
    solve, pairs, alpha, feat, T, rank_one, p, q, max_iter, obj_tol, check_every, itol_floor,
    *, fC, mixed, single, name,
):  # fmt: skip
    """Default-rule outer loop of the numpy engine: the same map ``T <- Sinkhorn(grad(T))`` as
    POT, with three changes that leave the fixed point alone.

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
    * Stopping: the relative change of the objective of the outputs over ``check_every`` steps
      and its geometric tail (as :class:`_Stop`) at most ``obj_tol``, tested every step, with
      a final inner Sinkhorn at ``itol_floor``; float32 products while the change is above
      ``_F32_UNTIL`` (``mixed``), float64 after.

    ``pairs``: ``[(constC, hC1, hC2t)]`` (symmetric: ``grad = 2 tens``) or two of them
    (``grad = tens + tens_t``), each ``[nb, ., .]``. ``solve(grad, itol)`` returns
    ``(T_new, inner_iter, inner_err)``. Returns ``T [nb, n, m]`` and a log dict.
    """
    nb, n, m = T.shape
    nm, s = n * m, len(pairs)
    k = numba_kernels()
    scale = alpha * (2.0 if s == 1 else 1.0)
    prod = _TensorProduct(single)
    # mixed precision (large problems): P(T_k) = P(T_{k-1}) + float32 product of T_k - T_{k-1},
    # from an exact start; one exact float64 product ("anchor") once the objective settles
    # clears the rounding of the large early moves; later differences are small, and so is
    # their float32 rounding. Without `mixed`, every product is float64.
    low = mixed  # not anchored yet: objective known to ~1e-6 only, the rule waits
    mem = min(_AA_MEMORY, _AA_BUDGET // (4 * nb * nm * (2 + s)))
    flat = lambda a: np.ascontiguousarray(a).reshape(nb, nm)  # noqa: E731
    constC = [flat(c) for c, _, _ in pairs]
    feat2 = np.empty((nb, 0)) if feat is None else flat(feat)

    def products(T, low):
        return [flat(prod(hA, T, hB, low)) for _, hA, hB in pairs]

    if mixed:
        D32 = np.empty((nb, nm), np.float32)
        h32 = [(hA.astype(np.float32), hB.astype(np.float32)) for _, hA, hB in pairs]

    def products32(D):
        D = D.reshape(nb, n, m)
        if single:
            return [(hA[0] @ D[0] @ hB[0])[None] for hA, hB in h32]
        return [hA @ D @ hB for hA, hB in h32]

    if rank_one:  # hA (p q^T) hB = (hA p)(q^T hB)
        P = [flat((hA @ p[:, :, None]) @ (q[:, None, :] @ hB)) for _, hA, hB in pairs]
    else:
        P = products(T, False)
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
        itol = min(_INNER_LOOSE, max(itol_floor, _INNER_RATE * rl1))
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
            P_new = products(T_new.reshape(nb, n, m), False)
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
                P_new = products(T_new.reshape(nb, n, m), False)
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
            if last is not None:
                np.subtract(r, last[0], out=dF[:, head], casting="same_kind")
                np.subtract(T_new, last[1], out=dZ[:, head, :nm], casting="same_kind")
                for j in range(s):
                    np.subtract(
                        P_new[j], last[2][j], out=dZ[:, head, (1 + j) * nm : (2 + j) * nm],
                        casting="same_kind",
                    )  # fmt: skip
                head = (head + 1) % mem
                cnt = np.where(dec, np.minimum(cnt + 1, mem), 0)
            last = (r, T_new, P_new)
            mix = (ndec >= _AA_START) & (cnt >= 1)
            if mix.any():
                x, P = _anderson(dF, dZ, r, T_new, P_new, cnt * mix, head)
        rn_prev = rn_b
        T = T_new
    else:
        T = T_new
    _warn_default_end(name, converged, max_iter, errs[-1], inner_err, itol_floor)
    if low:  # max_iter hit before the anchor: an exact objective for the log
        P = products(T.reshape(nb, n, m), False)
    # exact objective of T (as gw_objective: constC from T's own marginals, O(n^2 + m^2))
    T3 = T.reshape(nb, n, m)
    a, b = T3.sum(-1), T3.sum(-2)
    const = np.einsum("bi,bi->b", (fC[0] @ a[:, :, None])[..., 0], a) + np.einsum(
        "bj,bj->b", (fC[1] @ b[:, :, None])[..., 0], b
    )
    gw = const - np.einsum("bi,bi->b", P[0], T)
    obj = alpha * gw + (0.0 if feat is None else np.einsum("bi,bi->b", feat2, T))
    obj_hist[-1] = obj
    info = {
        "gw": gw,
        "obj": obj,
        "n_iter": it,
        "inner_iter": inner_total,
        "err": errs,
        "obj_hist": obj_hist,
        "time_hist": time_hist,
        "converged": converged,
        "inner_err": inner_err,
    }
    return T.reshape(nb, n, m), info


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
        warnings.warn(
            f"{name}: max_iter={max_iter} reached before the objective rule was met, last "
            f"residual {last_err:.2e}",
            RuntimeWarning,
            stacklevel=4,
        )
    if inner_err > max(10 * itol_floor, _INNER_WARN):
        warnings.warn(
            f"{name}: inner Sinkhorn stopped at marginal error {inner_err:.1e}; raise "
            "inner_max_iter or eps",
            RuntimeWarning,
            stacklevel=4,
        )


def _inner_floor(inner_tol: float, tol: float | None) -> float:
    """Final inner tolerance: with the ``||dT||_F`` rule an inner L1 marginal error e moves T by
    up to e (Frobenius), so it is kept below the outer tol."""
    if tol is not None and tol > 0:
        return min(inner_tol, 0.1 * tol)
    return inner_tol


def _fgw_value(tens, feat, T, alpha, gw=None):
    """FGW objective ``alpha <tens, T> + <(1 - alpha) M, T>`` per problem ``[nb]`` (numpy or
    torch); ``tens = L (x) T`` (or ``gw`` given directly)."""
    if gw is None:
        gw = 0.0 if tens is None else (tens * T).sum(-1).sum(-1)
    val = alpha * gw if alpha != 1.0 else gw
    if feat is not None:
        val = val + (feat * T).sum(-1).sum(-1)
    return val


class _Stop:
    """The outer stopping rule shared by both engines (see :func:`entropic_gromov_wasserstein`).

    ``tol``: ``||dT||_F < tol`` after an outer step. ``obj_tol``: the objective (of the iterate
    entering step ``k``) moved by <= ``obj_tol`` relative since step ``k - check_every``. Once a
    rule is met with a loose inner tolerance, one more step is taken at the final inner
    tolerance so that the returned coupling has accurate marginals.
    """

    def __init__(self, tol, obj_tol, check_every, max_iter, mixed: bool = False):
        self.tol, self.obj_tol, self.every, self.max_iter = tol, obj_tol, check_every, max_iter
        self.prev = None  # objective at the previous check
        self.prev_change = np.inf  # relative change between the two previous checks
        self.obj_ok = False
        # mixed precision (default rule only): float32 tensor products while the objective still
        # moves by more than _F32_UNTIL per check, float64 from then on (and for the last steps)
        self.low_precision = mixed and obj_tol is not None and tol is None
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
            if self.low_precision:
                if (change <= _F32_UNTIL).all():
                    self.low_precision = False  # the float64 phase starts its own window
                    self.prev, self.prev_change = None, np.inf
                    return
            else:
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


def _warn_end(name, stop, deltas, max_iter, inner_err, itol_floor, stacklevel=3) -> None:
    inner_err = float(inner_err.max()) if hasattr(inner_err, "max") else float(inner_err)
    if not stop.converged and (stop.obj_tol or stop.tol):
        rule = f"tol={stop.tol:.1e}" if stop.tol else f"obj_tol={stop.obj_tol:.1e}"
        warnings.warn(
            f"{name}: max_iter={max_iter} reached, last ||dT||_F = {deltas[-1]:.2e} ({rule})",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    if inner_err > max(10 * itol_floor, _INNER_WARN):
        warnings.warn(
            f"{name}: inner Sinkhorn stopped at marginal error {inner_err:.1e}; raise "
            "inner_max_iter or eps",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


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


def entropic_fused_gromov_wasserstein_batched(
    M, C1, C2, p=None, q=None, eps: float = 0.1, alpha: float = 0.5, **kwargs
):
    """Many FGW problems at once: ``M [B, n, m]``, ``C1 [B, n, n]``, ``C2 [B, m, m]``; same
    keywords as :func:`entropic_fused_gromov_wasserstein`; returns ``T [B, n, m]``."""
    if getattr(C1, "ndim", None) != 3 or getattr(C2, "ndim", None) != 3:
        raise ValueError(
            f"C1, C2: expected shapes [B, n, n], [B, m, m], found {tuple(C1.shape)}, "
            f"{tuple(C2.shape)}"
        )
    return entropic_fused_gromov_wasserstein(M, C1, C2, p, q, eps, alpha, **kwargs)


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


def fgw_objective(M, C1, C2, T, alpha: float = 0.5, loss: str = "square"):
    """FGW objective ``(1 - alpha) <M, T> + alpha sum L(C1_ik, C2_jl) T_ij T_kl`` (no entropy),
    shape ``[...]``; numpy or torch. Equals POT's ``fgw_dist``."""
    alpha = _check_alpha(alpha)
    gw = gw_objective(C1, C2, T, loss)
    if not any_torch(M, C1, C2, T):
        M, T = np.asarray(M, dtype=np.float64), np.asarray(T, dtype=np.float64)
    if tuple(M.shape[-2:]) != tuple(T.shape[-2:]):
        raise shape_error("M", f"[..., {T.shape[-2]}, {T.shape[-1]}] (as T)", M.shape)
    return (1.0 - alpha) * (M * T).sum(-1).sum(-1) + alpha * gw


def fused_gromov_wasserstein(
    M,
    C1,
    C2,
    p=None,
    q=None,
    alpha: float = 0.5,
    loss: str = "square",
    method: str = "entropic",
    eps: float = 0.1,
    log: bool = False,
    **kwargs,
):
    """FGW coupling ``[n, m]`` by ``method``: "entropic" (this package, see
    :func:`entropic_fused_gromov_wasserstein`) or "cg" (exact conditional gradient, POT's
    ``ot.gromov.fused_gromov_wasserstein``; one problem, no ``eps``). ``log`` returns
    ``(T, dict)`` with ``fgw_dist``.
    """
    if method == "entropic":
        return entropic_fused_gromov_wasserstein(
            M, C1, C2, p, q, eps, alpha, loss, log=log, **kwargs
        )
    if method != "cg":
        raise ValueError(f"method: expected 'entropic' or 'cg', found {method!r}")
    import ot  # POT: the reference implementation of exact (CG) FGW

    loss = loss_name(loss)
    alpha = _check_alpha(alpha)
    _check_gw_shapes(C1, C2)
    if C1.ndim != 2:
        raise shape_error("C1", "[n, n] (method='cg' solves one problem)", C1.shape)
    xp_finite = np.isfinite
    if any_torch(M, C1, C2):
        import torch

        xp_finite = torch.isfinite
    check_feature_cost(M, (), C1.shape[-1], C2.shape[-1], xp_finite)
    T, info = ot.gromov.fused_gromov_wasserstein(
        M, C1, C2, p, q, loss_fun=f"{loss}_loss", alpha=alpha, log=True, **kwargs
    )
    return (T, info) if log else T


# ---------------------------------------------------------------------------------------------
def _check_gw_shapes(C1, C2) -> None:
    if C1.ndim < 2 or C1.shape[-1] != C1.shape[-2] or C1.shape[-1] == 0:
        raise shape_error("C1", "[..., n, n] (square, n >= 1)", C1.shape)
    if C2.ndim < 2 or C2.shape[-1] != C2.shape[-2] or C2.shape[-1] == 0:
        raise shape_error("C2", "[..., m, m] (square, m >= 1)", C2.shape)


def _is_symmetric(C, xp) -> bool:
    Ct = C.swapaxes(-1, -2) if xp is np else C.transpose(-1, -2)
    if xp is np:  # numpy's allclose (POT's test) in one pass over a triangle: 10x cheaper
        C = np.ascontiguousarray(C, dtype=np.float64).reshape((-1,) + C.shape[-2:])
        return bool(numba_kernels()._is_symmetric_close(C, 1e-5, 1e-10))
    return bool(xp.allclose(C, Ct, atol=1e-10))


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
