"""Numpy engine: exact low-rank structure of the GW cost matrices.

A squared-Euclidean structure ``C = a 1^T + 1 b^T - 2 X X^T`` of points in ``d`` dimensions has
rank at most ``d + 2``, and so does any matrix built from few features. Then ``C = U V`` (``U
[n, r]``, ``V [r, n]``) and the tensor product ``hC1 T hC2`` costs ``O(n m r)`` instead of
``O(n m (n + m))``. The factors are found from the matrix itself (no new argument): a
randomised range finder with ``_PROBE`` columns, accepted only if the factorisation reproduces
the matrix to ``_EXACT`` relative (on fresh random directions), i.e. to the rounding of float64
products -- the products, and so the fixed point, are those of the dense matrices. A full-rank matrix (plain
Euclidean distances, shortest paths) costs one ``n x _PROBE`` probe (~1 % of one dense product
at n = 512) and keeps the dense products.
"""

from __future__ import annotations

import numpy as np

_PROBE = 48  # random columns of the probe: ranks up to _PROBE - _MARGIN are detected
_MARGIN = 4  # singular values below the gap that must be (numerically) zero
_GAP = 1e-10  # a singular value below _GAP x the largest counts as zero
_EXACT = 1e-11  # accepted factorisation: ||(H - U V) w|| <= _EXACT ||H w|| on random w
_CHECK = 4  # random directions of that check
_MIN_N = 96  # smaller matrices: dense products are cheap, probing is not worth it


def factor(H: np.ndarray, *, max_rank: int | None = None, seed: int = 0):
    """``(U, V)`` with ``H = U @ V`` to ``_EXACT`` relative, or None when ``H`` is not of low
    rank (rank above ``max_rank``, default ``min(_PROBE - _MARGIN, n // 6)``)."""
    n, m = H.shape
    if min(n, m) < _MIN_N:
        return None
    if max_rank is None:
        max_rank = min(_PROBE - _MARGIN, min(n, m) // 6)
    k = min(max_rank + _MARGIN, min(n, m))
    # a fixed seed: the same matrix always gets the same factors (reproducible runs)
    omega = np.random.default_rng(seed).standard_normal((m, k + _CHECK))
    # QR, then the SVD of the small factor: the singular values of H @ omega at a fraction of
    # a full SVD's cost (this probe is paid by every full-rank call too)
    Y = H @ omega
    Q, R = np.linalg.qr(Y[:, :k])
    W, s, _ = np.linalg.svd(R)
    if s[0] == 0.0:
        return None
    r = int((s > _GAP * s[0]).sum())
    if r > max_rank:
        return None
    U = Q @ W[:, :r]
    V = U.T @ H
    # exactness, checked on independent random directions (as cheap as the probe, unlike
    # forming H - U V): a residual R != 0 shows in ||R w|| ~ ||R||_F for Gaussian w
    check = omega[:, k:]
    if np.linalg.norm(Y[:, k:] - U @ (V @ check)) > _EXACT * np.linalg.norm(Y[:, k:]):
        return None
    return U, np.ascontiguousarray(V)


def product(hA: np.ndarray, hB: np.ndarray, *, factors=None):
    """``T -> hA @ T @ hB`` for one problem (2-D arrays), through the low-rank factors of
    ``hA`` and/or ``hB`` where they have them. ``factors``: ``(fA, fB)`` as :func:`factor`
    returns them (None: probe now). Returns ``(fn, low_rank)``; ``low_rank`` is True when at
    least one side is factored (the product is then far cheaper than dense BLAS)."""
    fA, fB = (factor(hA), factor(hB)) if factors is None else factors
    if fA is not None and fB is not None:
        (UA, VA), (UB, VB) = fA, fB
        return (lambda T: UA @ (((VA @ T) @ UB) @ VB)), True
    if fA is not None:
        UA, VA = fA
        return (lambda T: UA @ ((VA @ T) @ hB)), True
    if fB is not None:
        UB, VB = fB
        return (lambda T: (hA @ (T @ UB)) @ VB), True
    return (lambda T: hA @ T @ hB), False
