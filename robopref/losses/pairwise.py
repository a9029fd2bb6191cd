"""Pairwise preference losses: Bradley-Terry / DPO, hinge / SLiC and IPO.

Every loss takes ``scores [B, K]``, graded ``labels [B, K]`` and ``mask [B, K]`` (see
:mod:`robopref.losses._common`) and sums a per-pair term over the *preferred pairs* of each list,
``P_b = {(i, j): psi_i > psi_j, both valid}``; tied pairs and padding items contribute nothing.
With ``d_ij = s_i - s_j``:

========================  ===================================================================
``pairwise_logistic``     ``log(1 + exp(-d_ij))`` = ``softplus(-d_ij)`` (Bradley-Terry 1952;
                          Christiano et al. 2017; DPO, Rafailov et al. 2023, with
                          ``s = beta * log-ratio``)
``pairwise_hinge``        ``max(0, margin - d_ij)`` (SLiC-HF, Zhao et al. 2023; Rax
                          ``pairwise_hinge_loss``)
``ipo``                   ``(d_ij - 1 / (2 beta))^2`` (IPO, Azar et al. 2023; TRL
                          ``loss_type="ipo"`` on token-averaged log-ratios)
========================  ===================================================================

Reduction (``reduction=``): ``"mean"`` (default) divides the sum of the terms over every
preferred pair of the batch by the number of such pairs (pooled over the batch, as Rax's
``reduce_fn=jnp.mean``; 0 when the batch holds no preferred pair), so for K = 2 it is the usual
mean over the batch; ``"sum"`` is that sum; ``"none"`` gives ``[B]`` per-list sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robopref.losses._common import (
    Reduction,
    check_inputs,
    check_reduction,
    preferred_pairs,
    reduce_pairs,
)


def pairwise_logistic_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    soft: bool = False,
    bias: float = 1.0,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    """Bradley-Terry / DPO loss ``sum_{psi_i > psi_j} log(1 + exp(-(s_i - s_j)))``.

    Args:
        scores: ``[B, K]`` item scores (reward: segment return; DPO: ``beta * log-ratio``).
        labels: ``[B, K]`` graded labels. With ``soft=True`` (K = 2 only): ``labels[:, 0] = y =
            P(item 0 preferred)`` and ``labels[:, 1] = 1 - y``.
        mask: ``[B, K]`` bool or ``None``.
        soft: soft pair labels: the cross-entropy ``-y log sig(d) - (1 - y) log sig(-d)`` with
            ``d = s_0 - s_1`` for every pair whose two items are valid (a tie ``y = 0.5`` then
            contributes ``log 2`` at ``d = 0``, unlike a graded tie, which is skipped).
        bias: conservative weight lambda of the dispreferred item: the pair term becomes
            ``log(1 + exp(-(s_i - lambda s_j)))`` = ``-log(e^{s_i} / (e^{s_i} + e^{lambda s_j}))``
            (CPL's biased Bradley-Terry, Hejna et al. 2024; 1 is the plain loss). With soft
            labels each direction is biased: ``-y log sig(s_0 - lambda s_1) - (1 - y) log
            sig(s_1 - lambda s_0)``.
        reduction: ``"mean"`` over preferred pairs (soft: over valid pairs), ``"sum"``,
            ``"none"`` (``[B]``).
        check_finite: raise ``ValueError`` naming the list and item when a valid score or
            label is NaN or infinite (default; one host sync per call).

    Returns:
        Scalar loss (``[B]`` for ``reduction="none"``), in nats.
    """
    check_reduction(reduction)
    s, y, m = check_inputs(scores, labels, mask, "pairwise_logistic_loss", check_finite)
    if not soft:
        d, valid = preferred_pairs(s, y, m)
        if bias != 1.0:
            B, K = s.shape
            d = (s[:, :, None] - bias * s[:, None, :]).reshape(B, K * K)
        return reduce_pairs(F.softplus(-d), valid, reduction)
    if s.shape[1] != 2:
        raise ValueError(f"labels: soft pair labels need K = 2 items, found K = {s.shape[1]}")
    valid = m[:, 0] & m[:, 1]
    p, q = y[:, 0], y[:, 1]
    if bool((valid & ((p < 0) | (p > 1) | ((p + q - 1).abs() > 1e-4))).any()):
        raise ValueError(
            "labels: soft pair labels must be probabilities with labels[:, 0] in [0, 1] and "
            "labels[:, 1] = 1 - labels[:, 0]; found values outside that"
        )
    d01 = s[:, :1] - bias * s[:, 1:]
    d10 = s[:, 1:] - bias * s[:, :1]
    terms = p[:, None] * F.softplus(-d01) + (1 - p[:, None]) * F.softplus(-d10)
    return reduce_pairs(terms, valid[:, None], reduction)


def pairwise_hinge_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    margin: float = 1.0,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    """SLiC / pairwise hinge loss ``sum_{psi_i > psi_j} max(0, margin - (s_i - s_j))``.

    Args:
        scores, labels, mask: see :func:`pairwise_logistic_loss`.
        margin: required score gap delta (SLiC-HF uses 1).
        reduction: ``"mean"`` over preferred pairs, ``"sum"``, ``"none"`` (``[B]``).
        check_finite: raise ``ValueError`` naming the list and item when a valid score or
            label is NaN or infinite (default; one host sync per call).
    """
    check_reduction(reduction)
    s, y, m = check_inputs(scores, labels, mask, "pairwise_hinge_loss", check_finite)
    d, valid = preferred_pairs(s, y, m)
    return reduce_pairs(F.relu(margin - d), valid, reduction)


def ipo_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    scores_include_beta: bool = False,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    """IPO loss ``sum_{psi_i > psi_j} (h_i - h_j - 1 / (2 beta))^2`` (Azar et al. 2023).

    ``h`` is the *unscaled* log-ratio ``log pi - log pi_ref`` of each item, as in TRL's
    ``loss_type="ipo"`` (``(logits - 1 / (2 beta))^2`` with ``logits`` free of beta). TRL
    length-normalises ``h`` (the mean over the completion's tokens, not the sum): its value is
    this loss on ``log_ratio_scores(logp, ref_logp, mask, average=True)``; on summed
    log-ratios it is the paper's IPO on sequence log-ratios, which differs from TRL's whenever
    the completions differ in length.

    Args:
        scores, labels, mask: see :func:`pairwise_logistic_loss`.
        beta: IPO's regularisation strength (target gap ``1 / (2 beta)``), > 0.
        scores_include_beta: ``False`` (default): ``scores`` are ``h`` (e.g.
            ``log_ratio_scores(..., beta=1)``). ``True``: ``scores = beta * h`` (e.g. the DPO-style
            scores of ``log_ratio_scores(..., beta=beta)``) and are divided by ``beta`` first, so
            that both settings give the same value for the same scores' ``h``.
        reduction: ``"mean"`` over preferred pairs, ``"sum"``, ``"none"`` (``[B]``).
        check_finite: raise ``ValueError`` naming the list and item when a valid score or
            label is NaN or infinite (default; one host sync per call).
    """
    check_reduction(reduction)
    if not beta > 0:
        raise ValueError(f"beta: expected a positive number, found {beta}")
    s, y, m = check_inputs(scores, labels, mask, "ipo_loss", check_finite)
    d, valid = preferred_pairs(s, y, m)
    if scores_include_beta:
        d = d / beta
    return reduce_pairs((d - 1.0 / (2.0 * beta)) ** 2, valid, reduction)
