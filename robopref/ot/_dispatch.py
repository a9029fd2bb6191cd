"""Top of :mod:`robopref.ot`: the public functions, each choosing the engine by its inputs.

numpy inputs go to the Numba/numpy engine (:mod:`._sinkhorn`, :mod:`._gromov`), torch inputs
(any device) to the torch engine (:mod:`._torch_engine`), ``method="cg"`` to POT. The
functions here check only what decides the engine; each engine checks its own inputs.
"""

from __future__ import annotations

import numpy as np

from robopref.ot._common import (
    any_torch,
    check_alpha,
    check_feature_cost,
    check_gw_shapes,
    loss_name,
    shape_error,
)
from robopref.ot._gromov import entropic_fgw_numpy
from robopref.ot._sinkhorn import sinkhorn_numpy


def _torch_engine():
    """The torch engine, imported on first use: ``import robopref.ot`` must not import torch
    (seconds, and numpy users never need it)."""
    from robopref.ot import _torch_engine

    return _torch_engine


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
    solve = _torch_engine().sinkhorn_torch if any_torch(a, b, M) else sinkhorn_numpy
    return solve(a, b, M, eps, max_iter=max_iter, tol=tol, warm_start=warm_start, log=log)


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
            contract, see :func:`robopref.ot._gromov._obj_converged`). See
            ``docs/rooms/ot.md`` (items 12-13).
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


def _entropic_fgw(M, C1, C2, p, q, eps, alpha, loss, **kwargs):
    """Entropic (F)GW on the engine of the inputs; ``M is None`` is plain GW."""
    if any_torch(M, C1, C2, p, q, kwargs.get("T0")):
        return _torch_engine().entropic_fgw_torch(M, C1, C2, p, q, eps, alpha, loss, **kwargs)
    return entropic_fgw_numpy(M, C1, C2, p, q, eps, alpha, loss, **kwargs)


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
    check_gw_shapes(C1, C2)
    if C1.ndim != 2:
        raise shape_error("C1", "[n, n] (method='cg' solves one problem)", C1.shape)
    out = ot.gromov.gromov_wasserstein(C1, C2, p, q, loss_fun=f"{loss}_loss", log=True, **kwargs)
    T, info = out
    if log:
        return T, info
    return T


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
    alpha = check_alpha(alpha)
    check_gw_shapes(C1, C2)
    if C1.ndim != 2:
        raise shape_error("C1", "[n, n] (method='cg' solves one problem)", C1.shape)
    isfinite = (lambda x: x.isfinite()) if any_torch(M, C1, C2) else np.isfinite
    check_feature_cost(M, (), C1.shape[-1], C2.shape[-1], isfinite)
    T, info = ot.gromov.fused_gromov_wasserstein(
        M, C1, C2, p, q, loss_fun=f"{loss}_loss", alpha=alpha, log=True, **kwargs
    )
    return (T, info) if log else T
