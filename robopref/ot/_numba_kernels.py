"""Numba kernels for the CPU engine: stabilised Sinkhorn (single and batched).

All kernels take float64, C-contiguous arrays and are compiled once with ``cache=True`` (the
compiled code is stored next to this file, so only the very first call on a machine pays the
compile time). Signatures: ``_solve_seq`` (one problem, one thread), ``_sinkhorn_batch`` (many
problems, one per thread), ``_sinkhorn_batch_seq`` (small batches, one thread) and, compiled only
when first used, ``_sinkhorn_one`` (one problem, O(nm) passes split over threads; opt-in through
the environment variable ``ROBOPREF_OT_ROW_PARALLEL_MIN``, see ``_sinkhorn.py``).

Algorithm (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized
transport problems", Alg. 2): the dual potentials ``f [n]``, ``g [m]`` (cost units) are kept in
the log domain and *absorbed* into a kernel ``K_ij = exp((f_i + g_j - M_ij) / eps)``. Between
two absorptions, plain Sinkhorn scalings ``u, v`` (close to 1) run on ``K`` with two
matrix-vector products per iteration. An absorption is a full log-domain Sinkhorn iteration
(log-sum-exp over columns, then over rows), so no row or column of ``K`` can underflow to zero,
whatever ``eps``. Absorptions happen at the start (rows only: one exp per entry), when a
scaling leaves [1/bound, bound], or when a column sum underflows (then a full log-domain step).
With warm-started potentials (entropic GW) one absorption per solve is typical.

Convergence is measured as the L1 violation of the column marginal after the row update
(rows are exact at that point): ``sum_j |sum_i P_ij - b_j|``. It costs nothing extra because
``K^T u`` is needed for the next update anyway.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_EXP_FLOOR = -700.0  # exp(-700) ~ 1e-304: below this an entry is set to exactly 0 (no subnormals)
_BLOCK = 64  # column block for the parallel K^T u and column log-sum-exp
# Let LLVM reorder sums (SIMD reductions in the matrix-vector products) but keep IEEE inf/NaN
# semantics: zero masses are carried as -inf potentials.
_FM = {"reassoc", "contract"}


# --------------------------------------------------------------------------------------------
# sequential building blocks (used by the batch kernel, one problem per thread)
# --------------------------------------------------------------------------------------------
@njit(cache=True, fastmath=_FM)
def _absorb_seq(a, b, M, eps, f, g, K):  # pragma: no cover - compiled
    """One log-domain iteration (g then f) and rebuild ``K = exp((f+g-M)/eps)`` (rows sum to a)."""
    n, m = M.shape
    colmax = np.full(m, -np.inf)
    for i in range(n):
        fi = f[i]
        if fi == -np.inf:
            continue
        for j in range(m):
            x = fi - M[i, j]
            if x > colmax[j]:
                colmax[j] = x
    colsum = np.zeros(m)
    for i in range(n):
        fi = f[i]
        if fi == -np.inf:
            continue
        for j in range(m):
            x = (fi - M[i, j] - colmax[j]) / eps
            if x > _EXP_FLOOR:
                colsum[j] += np.exp(x)
    for j in range(m):
        if b[j] > 0.0:
            g[j] = eps * np.log(b[j]) - colmax[j] - eps * np.log(colsum[j])
        else:
            g[j] = -np.inf
    for i in range(n):
        _absorb_row(a, M, eps, f, g, K, i)


@njit(cache=True, inline="always", fastmath=_FM)
def _absorb_row(a, M, eps, f, g, K, i):  # pragma: no cover - compiled
    m = M.shape[1]
    if a[i] <= 0.0:
        f[i] = -np.inf
        for j in range(m):
            K[i, j] = 0.0
        return
    mx = -np.inf
    for j in range(m):
        x = g[j] - M[i, j]
        if x > mx:
            mx = x
    s = 0.0
    for j in range(m):
        x = (g[j] - M[i, j] - mx) / eps
        e = np.exp(x) if x > _EXP_FLOOR else 0.0
        K[i, j] = e
        s += e
    f[i] = eps * np.log(a[i]) - mx - eps * np.log(s)
    scale = a[i] / s
    for j in range(m):
        K[i, j] *= scale


@njit(cache=True, fastmath=_FM)
def _solve_seq(a, b, M, eps, f, g, K, max_iter, tol, bound):  # pragma: no cover - compiled
    """Solve one problem sequentially. On exit ``K`` holds the plan, ``f, g`` the potentials.

    Returns ``(n_iter, err)``; ``err`` is the L1 column-marginal violation of the plan.
    """
    n, m = M.shape
    u = np.empty(n)
    v = np.empty(m)
    ktu = np.empty(m)
    kv = np.empty(n)
    total = 0
    err = np.inf
    full = False  # first pass: rows only (1 exp per entry); full log-domain step if needed
    while True:
        if full:
            _absorb_seq(a, b, M, eps, f, g, K)
        else:
            for i in range(n):
                _absorb_row(a, M, eps, f, g, K, i)
        full = True
        total += 1
        for i in range(n):
            u[i] = 1.0 if a[i] > 0.0 else 0.0
        for j in range(m):
            v[j] = 1.0 if b[j] > 0.0 else 0.0
        status = 1  # 0 converged, 1 out of iterations, 2 absorb needed
        while True:
            # ktu = K^T u (rows of the plan are exact here)
            for j in range(m):
                ktu[j] = 0.0
            for i in range(n):
                ui = u[i]
                if ui != 0.0:
                    for j in range(m):
                        ktu[j] += ui * K[i, j]
            err = 0.0
            for j in range(m):
                err += abs(v[j] * ktu[j] - b[j])
            if err <= tol:
                status = 0
                break
            if total >= max_iter:
                break
            if _update(b, ktu, v, bound) or _matvec_update_seq(a, K, v, kv, u, bound):
                status = 2
                break
            total += 1
        # fold the scalings into the potentials; the plan is u_i K_ij v_j
        for i in range(n):
            if u[i] > 0.0:
                f[i] += eps * np.log(u[i])
        for j in range(m):
            if v[j] > 0.0:
                g[j] += eps * np.log(v[j])
        if status != 2:
            break
    for i in range(n):
        for j in range(m):
            K[i, j] *= u[i] * v[j]
    return total, err


@njit(cache=True, inline="always", fastmath=_FM)
def _update(b, ktu, v, bound):  # pragma: no cover - compiled
    """v = b / ktu in place; True if an absorption is needed (underflow or scaling too large)."""
    lo = 1.0 / bound
    for j in range(b.shape[0]):
        if b[j] > 0.0:
            if ktu[j] <= 0.0:
                return True
            vj = b[j] / ktu[j]
            if vj > bound or vj < lo:
                return True
            v[j] = vj
    return False


@njit(cache=True, inline="always", fastmath=_FM)
def _matvec_update_seq(a, K, v, kv, u, bound):  # pragma: no cover - compiled
    n, m = K.shape
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += K[i, j] * v[j]
        kv[i] = s
    return _update(a, kv, u, bound)


@njit(cache=True, parallel=True, fastmath=_FM)
def _sinkhorn_batch(A, B, Ms, eps, F, G, P, max_iter, tol, bound, n_iter, errs):  # pragma: no cover
    """Many problems ``Ms [nb, n, m]`` in parallel (one per thread). Plans are written to ``P``."""
    for k in prange(Ms.shape[0]):
        it, e = _solve_seq(A[k], B[k], Ms[k], eps[k], F[k], G[k], P[k], max_iter, tol, bound)
        n_iter[k] = it
        errs[k] = e


@njit(cache=True, fastmath=_FM)
def _sinkhorn_batch_seq(
    A, B, Ms, eps, F, G, P, max_iter, tol, bound, n_iter, errs
):  # pragma: no cover
    """:func:`_sinkhorn_batch` in one thread (small batches: no thread start-up cost)."""
    for k in range(Ms.shape[0]):
        it, e = _solve_seq(A[k], B[k], Ms[k], eps[k], F[k], G[k], P[k], max_iter, tol, bound)
        n_iter[k] = it
        errs[k] = e


# --------------------------------------------------------------------------------------------
# one large problem: rows (and column blocks) in parallel
# --------------------------------------------------------------------------------------------
@njit(cache=True, parallel=True, fastmath=_FM)
def _absorb_par(a, b, M, eps, f, g, K):  # pragma: no cover - compiled
    n, m = M.shape
    nblk = (m + _BLOCK - 1) // _BLOCK
    for blk in prange(nblk):
        j0 = blk * _BLOCK
        j1 = min(m, j0 + _BLOCK)
        cmax = np.full(j1 - j0, -np.inf)
        for i in range(n):
            fi = f[i]
            if fi == -np.inf:
                continue
            for j in range(j0, j1):
                x = fi - M[i, j]
                if x > cmax[j - j0]:
                    cmax[j - j0] = x
        csum = np.zeros(j1 - j0)
        for i in range(n):
            fi = f[i]
            if fi == -np.inf:
                continue
            for j in range(j0, j1):
                x = (fi - M[i, j] - cmax[j - j0]) / eps
                if x > _EXP_FLOOR:
                    csum[j - j0] += np.exp(x)
        for j in range(j0, j1):
            if b[j] > 0.0:
                g[j] = eps * np.log(b[j]) - cmax[j - j0] - eps * np.log(csum[j - j0])
            else:
                g[j] = -np.inf
    for i in prange(n):
        _absorb_row(a, M, eps, f, g, K, i)


@njit(cache=True, parallel=True, fastmath=_FM)
def _absorb_rows_par(a, M, eps, f, g, K):  # pragma: no cover - compiled
    for i in prange(M.shape[0]):
        _absorb_row(a, M, eps, f, g, K, i)


@njit(cache=True, parallel=True, fastmath=_FM)
def _ktu_par(K, u, out):  # pragma: no cover - compiled
    n, m = K.shape
    nblk = (m + _BLOCK - 1) // _BLOCK
    for blk in prange(nblk):
        j0 = blk * _BLOCK
        j1 = min(m, j0 + _BLOCK)
        for j in range(j0, j1):
            out[j] = 0.0
        for i in range(n):
            ui = u[i]
            if ui != 0.0:
                for j in range(j0, j1):
                    out[j] += ui * K[i, j]


@njit(cache=True, parallel=True, fastmath=_FM)
def _kv_par(K, v, out):  # pragma: no cover - compiled
    n, m = K.shape
    for i in prange(n):
        s = 0.0
        for j in range(m):
            s += K[i, j] * v[j]
        out[i] = s


@njit(cache=True, parallel=True, fastmath=_FM)
def _scale_plan_par(K, u, v):  # pragma: no cover - compiled
    n, m = K.shape
    for i in prange(n):
        ui = u[i]
        for j in range(m):
            K[i, j] *= ui * v[j]


@njit(cache=True, fastmath=_FM)
def _sinkhorn_one(a, b, M, eps, f, g, K, max_iter, tol, bound):  # pragma: no cover - compiled
    """Same as :func:`_solve_seq` with the O(nm) passes split over threads."""
    n, m = M.shape
    u = np.empty(n)
    v = np.empty(m)
    ktu = np.empty(m)
    kv = np.empty(n)
    total = 0
    err = np.inf
    full = False
    while True:
        if full:
            _absorb_par(a, b, M, eps, f, g, K)
        else:
            _absorb_rows_par(a, M, eps, f, g, K)
        full = True
        total += 1
        for i in range(n):
            u[i] = 1.0 if a[i] > 0.0 else 0.0
        for j in range(m):
            v[j] = 1.0 if b[j] > 0.0 else 0.0
        status = 1
        while True:
            _ktu_par(K, u, ktu)
            err = 0.0
            for j in range(m):
                err += abs(v[j] * ktu[j] - b[j])
            if err <= tol:
                status = 0
                break
            if total >= max_iter:
                break
            if _update(b, ktu, v, bound):
                status = 2
                break
            _kv_par(K, v, kv)
            if _update(a, kv, u, bound):
                status = 2
                break
            total += 1
        for i in range(n):
            if u[i] > 0.0:
                f[i] += eps * np.log(u[i])
        for j in range(m):
            if v[j] > 0.0:
                g[j] += eps * np.log(v[j])
        if status != 2:
            break
    _scale_plan_par(K, u, v)
    return total, err


# --------------------------------------------------------------------------------------------
# entropic GW, default rule: the O(nm) work of one outer step in one pass each
# --------------------------------------------------------------------------------------------
@njit(cache=True, fastmath=_FM)
def _gw_grad(constC, P, scale, feat, out):  # pragma: no cover - compiled
    """``out = scale (constC - P) + feat`` (``feat`` of size 0: none); arrays ``[nb, nm]``."""
    nb, nm = out.shape
    has_feat = feat.shape[1] == nm
    for b in range(nb):
        for i in range(nm):
            v = scale * (constC[b, i] - P[b, i])
            if has_feat:
                v += feat[b, i]
            out[b, i] = v


@njit(cache=True, fastmath=_FM)
def _gw_step_stats(T, x, constC, P, feat, r, stats):  # pragma: no cover - compiled
    """``r = T - x`` and, per problem, ``stats = [sum r^2, sum |r|, <constC, T>, <P, T>,
    <feat, T>]`` (``feat`` of size 0: 0). Arrays ``[nb, nm]``, ``stats [nb, 5]``."""
    nb, nm = T.shape
    has_feat = feat.shape[1] == nm
    for b in range(nb):
        s2 = 0.0
        s1 = 0.0
        sc = 0.0
        sp = 0.0
        sf = 0.0
        for i in range(nm):
            t = T[b, i]
            d = t - x[b, i]
            r[b, i] = d
            s2 += d * d
            s1 += abs(d)
            sc += constC[b, i] * t
            sp += P[b, i] * t
            if has_feat:
                sf += feat[b, i] * t
        stats[b, 0] = s2
        stats[b, 1] = s1
        stats[b, 2] = sc
        stats[b, 3] = sp
        stats[b, 4] = sf


@njit(cache=True, fastmath=_FM)
def _add_f32(a, b, out):  # pragma: no cover - compiled
    """``out = a + b`` with ``a`` float64 and ``b`` float32, shape ``[nb, nm]`` (one pass)."""
    nb, nm = a.shape
    for k in range(nb):
        for i in range(nm):
            out[k, i] = a[k, i] + b[k, i]


@njit(cache=True)
def _is_symmetric_close(C, rtol, atol):  # pragma: no cover - compiled
    """``numpy.allclose(C, C^T, rtol, atol)`` for ``C [nb, n, n]`` (finite), one triangle."""
    nb, n, _ = C.shape
    for k in range(nb):
        for i in range(n):
            for j in range(i + 1, n):
                a = C[k, i, j]
                b = C[k, j, i]
                d = abs(a - b)
                if d > atol + rtol * abs(b) or d > atol + rtol * abs(a):
                    return False
    return True
