"""Optimal transport for robopref: Sinkhorn and entropic Gromov-Wasserstein, two engines.

One API, chosen by the type of the inputs:

* numpy in -> numpy out: Numba CPU engine (float64; kernels compiled once with ``cache=True``;
  call :func:`warmup` at program start to keep the one-time compile out of timed code -- the
  first use also logs how long it took on the ``robopref.ot`` logger).
* torch in -> torch out: torch engine (any device incl. CUDA, dtype of the inputs, vectorised
  over leading batch dims; :func:`sinkhorn` is differentiable through the plan).

POT (``import ot``) is the reference the tests compare against; ``eps`` has the meaning of POT's
``reg`` / ``epsilon`` (weight of the entropy, in cost units).

Shapes (``...`` = optional batch dims, independent problems):

``sinkhorn(a, b, M, eps, *, max_iter=1000, tol=1e-9, warm_start=None, log=False)``
    ``a [..., n]``, ``b [..., m]`` (None = uniform), ``M [..., n, m]`` -> plan ``P [..., n, m]``
    minimising ``<P, M> - eps H(P)`` with ``P 1 = a``, ``P^T 1 = b``. Stops when the L1
    column-marginal error <= ``tol``; ``warm_start=(f, g)`` dual potentials; ``log=True`` also
    returns ``{"f", "g", "n_iter", "err", "converged"}`` with ``P = exp((f + g - M) / eps)``.
``sinkhorn_batched(a, b, M, eps, **kw)``: same with ``M [B, n, m]`` required.
``sinkhorn_cost(a, b, M, eps, **kw)``: ``<P, M>``, shape ``[...]``.
``entropic_gromov_wasserstein(C1, C2, p=None, q=None, eps=0.1, loss="square", *, symmetric=None,
T0=None, max_iter=1000, tol=None, obj_tol=None, check_every=None, inner_max_iter=2000,
inner_tol=1e-9, log=False)``
    ``C1 [..., n, n]``, ``C2 [..., m, m]`` -> coupling ``T [..., n, m]``; the projected mirror
    descent of Peyre et al. (2016) exactly as POT's PGD solver (same fixed point), with
    warm-started, tolerance-controlled inner Sinkhorns. Default stop: relative change of the
    objective <= 2e-7 per step with a contracting residual, Anderson-mixed outer steps, float32
    products of small steps (numpy; torch: every 2 steps, plain steps); ``tol`` selects POT's
    ``||dT||_F`` rule. ``loss`` is "square" or "kl"; non-symmetric costs are handled. ``log`` adds ``gw_dist`` (objective), iteration counts and
    per-iteration history.
``entropic_gromov_wasserstein_batched(C1, C2, p, q, eps, **kw)``: ``C1 [B, n, n]`` etc.
``gromov_wasserstein(C1, C2, p=None, q=None, loss="square", method="entropic", eps=0.1,
log=False, **kw)``: ``method="cg"`` is exact conditional-gradient GW through POT.
``entropic_fused_gromov_wasserstein(M, C1, C2, p=None, q=None, eps=0.1, alpha=0.5, **kw)``
    Fused GW (Vayer et al. 2019): ``(1 - alpha) <M, T> + alpha GW - eps H(T)`` with a
    cross-domain feature cost ``M [..., n, m]``; POT's convention (alpha weights the structure:
    1 = GW, 0 = plain OT). ``..._batched`` and ``fused_gromov_wasserstein(..., method="cg")``
    (exact, POT) as for GW; ``fgw_objective(M, C1, C2, T, alpha)``.
``gw_objective(C1, C2, T, loss="square")``: ``sum L(C1_ik, C2_jl) T_ij T_kl`` (no entropy).
``warmup() -> float``: compile/load the Numba kernels now; returns seconds.

Layout (each layer imports only the ones below it; the two engines never import each other):

* public functions: :mod:`._dispatch` (re-exported here) picks the engine by the inputs;
* engines: Numba/numpy (:mod:`._sinkhorn`, :mod:`._gromov`, kernels in :mod:`._numba_kernels`
  loaded by :mod:`._numba`) and torch (:mod:`._torch_engine`);
* shared by both: input checks, the GW cost decomposition and objectives (:mod:`._common`), the
  stopping rules and the plain GW outer loop (:mod:`._loop`).

Errors: bad shapes, non-finite or negative inputs, unequal masses and ``eps <= 0`` raise
``ValueError`` naming the argument; a non-finite result raises ``FloatingPointError`` (never a
silent NaN); hitting ``max_iter`` before ``tol`` warns (``RuntimeWarning``).
"""

from robopref.ot._common import fgw_objective, gw_objective
from robopref.ot._dispatch import (
    entropic_fused_gromov_wasserstein,
    entropic_fused_gromov_wasserstein_batched,
    entropic_gromov_wasserstein,
    entropic_gromov_wasserstein_batched,
    fused_gromov_wasserstein,
    gromov_wasserstein,
    sinkhorn,
    sinkhorn_batched,
    sinkhorn_cost,
)
from robopref.ot._numba import warmup

__all__ = [
    "entropic_fused_gromov_wasserstein",
    "entropic_fused_gromov_wasserstein_batched",
    "entropic_gromov_wasserstein",
    "entropic_gromov_wasserstein_batched",
    "fgw_objective",
    "fused_gromov_wasserstein",
    "gromov_wasserstein",
    "gw_objective",
    "sinkhorn",
    "sinkhorn_batched",
    "sinkhorn_cost",
    "warmup",
]
