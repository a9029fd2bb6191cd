"""Listwise preference losses: ListNet, Plackett-Luce / ListMLE (DPO-PL) and LiPO-lambda.

Inputs as in :mod:`robopref.losses.pairwise`: ``scores [B, K]``, graded ``labels [B, K]``
(higher = preferred, equal = tie), ``mask [B, K]`` bool or ``None``. Padding items are removed
exactly: a list with a masked item gives the same value as the list without it.

========================  ===================================================================
``listnet``               ``-sum_k p_k log softmax(s)_k``, ``p_k = psi_k / sum_j psi_j``
                          (Cao et al. 2007; Rax ``softmax_loss``; LiPO's "softmax" baseline)
``plackett_luce``         ``-sum_k log(exp(s_pi(k)) / sum_{j>=k} exp(s_pi(j)))``, pi = label
                          order (ListMLE, Xia et al. 2008; DPO-PL, Rafailov et al. 2023 App. A)
``lipo_lambda``           ``sum_{psi_i > psi_j} Delta_ij log(1 + exp(-(s_i - s_j)))``, DCG lambda
                          weights (LiPO-lambda, Liu et al. 2024 Eq. 8; Rax
                          ``pairwise_logistic_loss`` + ``dcg_lambdaweight``)
========================  ===================================================================

Reductions: ``listnet`` and ``plackett_luce`` average per-list losses over the lists that carry
a preference signal (``"mean"``), or sum them (``"sum"``), or return them (``"none"``, ``[B]``).
``lipo_lambda`` is a weighted pairwise loss and reduces like the pairwise losses: the mean over
every preferred pair of the batch, pooled (Rax's ``jnp.mean``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from robopref.losses._common import (
    Reduction,
    check_inputs,
    check_reduction,
    preferred_pairs,
    reduce_lists,
    reduce_pairs,
)


def listnet_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    """ListNet / softmax cross-entropy ``-sum_k (psi_k / sum_j psi_j) log softmax(s)_k``.

    The target distribution normalises the (non-negative) labels over the valid items; a list
    whose valid labels are all 0 gets the uniform target (as Rax). The softmax runs over valid
    items only. The loss is a cross-entropy, so it is >= 0 (its minimum is the target's entropy,
    not 0).

    Args:
        scores: ``[B, K]`` item scores.
        labels: ``[B, K]`` non-negative graded labels (e.g. LiPO's mean win probabilities).
        mask: ``[B, K]`` bool or ``None``.
        reduction: ``"mean"`` over lists with >= 2 valid items, ``"sum"``, ``"none"`` (``[B]``).
        check_finite: raise ``ValueError`` naming the list and item when a valid score or
            label is NaN or infinite (default; one host sync per call).
    """
    check_reduction(reduction)
    s, y, m = check_inputs(scores, labels, mask, "listnet_loss", check_finite)
    if bool((y < 0).any()):
        raise ValueError(
            "labels: ListNet needs non-negative labels (a target distribution), found < 0"
        )
    n = m.sum(1, keepdim=True)
    total = y.sum(1, keepdim=True)
    uniform = m.to(s.dtype) / n.clamp(min=1).to(s.dtype)
    p = torch.where(total > 0, y / torch.where(total > 0, total, torch.ones_like(total)), uniform)
    # Lists with no valid item: treat every slot as valid so that log-softmax stays finite; they
    # are then dropped (p = 0 there and the list is not counted).
    m_eff = m | (n == 0)
    logp = s - torch.logsumexp(s.masked_fill(~m_eff, -math.inf), dim=1, keepdim=True)
    per_list = -torch.where(m, p * logp, s.new_zeros(())).sum(1)
    return reduce_lists(per_list, n.squeeze(1) >= 2, reduction)


def plackett_luce_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    ties: Literal["ignore", "breslow"] = "ignore",
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of the label order (ListMLE, DPO-PL).

    Written per item: ``sum_i [logsumexp_{j in R_i} s_j - s_i]`` over valid items i, where the
    "risk set" R_i holds i and the items ranked below it. Without ties this is exactly
    ``-sum_k log(exp(s_pi(k)) / sum_{j>=k} exp(s_pi(j)))`` with pi the label order.

    Ties (the PL likelihood is defined for strict orders only):
        ``"ignore"`` (default): ``R_i = {i} + {j: psi_j < psi_i}``; tied items do not compete,
            so a tie carries no signal, exactly as in the pairwise losses (an all-tied list gives
            0 and is not counted), and the loss is invariant to the order of tied items.
        ``"breslow"``: ``R_i = {j: psi_j <= psi_i}`` (Breslow's approximation of the Cox partial
            likelihood): tied items compete with each other, pushing their scores together.

    Args:
        scores, labels, mask: ``[B, K]`` (see module docstring).
        ties: ``"ignore"`` or ``"breslow"``.
        reduction: ``"mean"`` over lists that carry a signal (``"ignore"``: at least one
            preferred pair; ``"breslow"``: >= 2 valid items), ``"sum"``, ``"none"`` (``[B]``).
        check_finite: raise ``ValueError`` naming the list and item when a valid score or
            label is NaN or infinite (default; one host sync per call).
    """
    check_reduction(reduction)
    if ties not in ("ignore", "breslow"):
        raise ValueError(f"ties: expected 'ignore' or 'breslow', found {ties!r}")
    s, y, m = check_inputs(scores, labels, mask, "plackett_luce_loss", check_finite)
    K = s.shape[1]
    below = y[:, None, :] < y[:, :, None] if ties == "ignore" else y[:, None, :] <= y[:, :, None]
    eye = torch.eye(K, dtype=torch.bool, device=s.device)
    risk = (below & m[:, None, :]) | eye  # [B, i, j]: j in R_i
    s_j = s[:, None, :].expand(-1, K, -1)
    lse = torch.logsumexp(s_j.masked_fill(~risk, -math.inf), dim=2)  # [B, K]
    per_list = torch.where(m, lse - s, s.new_zeros(())).sum(1)
    if ties == "ignore":
        counted = preferred_pairs(s, y, m)[1].any(1)
    else:
        counted = m.sum(1) >= 2
    return reduce_lists(per_list, counted, reduction)


def lambda_weights(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    normalize: bool = False,
    scale_by_list_size: bool = True,
    log_base: float = 2.0,
    check_finite: bool = True,
) -> torch.Tensor:
    """DCG lambda weights ``Delta [B, K, K]`` of LiPO-lambda (no gradient).

    ``Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|`` with gain ``G = 2^psi - 1``,
    discount ``D(tau) = log_base(1 + tau)`` and ``tau`` the 1-based rank of the item by the
    model's current scores among the valid items (ties in scores keep the order of appearance,
    as Rax's ``sort_ranks``). ``normalize`` divides the gains by the list's ideal DCG
    ``sum_k G_(k) / D(k)`` (gains sorted in decreasing order; lists whose ideal DCG is <= 0 are
    left unnormalised). ``scale_by_list_size`` multiplies by the number of valid items of the list
    (Rax multiplies by the padded list size K; the two agree without padding, and the valid
    count keeps padding exactly neutral). Entries for masked items are 0. ``check_finite``: as
    in the losses (a NaN/inf valid score or label raises ``ValueError``).
    """
    s, y, m = check_inputs(scores, labels, mask, "lambda_weights", check_finite)
    return _lambda_grid(s, m, *_lambda_parts(s, y, m, normalize, scale_by_list_size, log_base))


@torch.no_grad()
def _lambda_grid(
    s: torch.Tensor,
    m: torch.Tensor,
    gain: torch.Tensor,
    discount: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """``Delta [B, K, K]`` from gains, discounts ``[B, K]`` and per-list scale ``[B]``."""
    delta = (gain[:, :, None] - gain[:, None, :]).abs() * (
        discount[:, :, None] - discount[:, None, :]
    ).abs()
    delta = delta * scale[:, None, None]
    both = m[:, :, None] & m[:, None, :]
    return torch.where(both, delta, s.new_zeros(()))


@torch.no_grad()
def _lambda_parts(
    s: torch.Tensor,
    y: torch.Tensor,
    m: torch.Tensor,
    normalize: bool,
    scale_by_list_size: bool,
    log_base: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gains ``[B, K]``, discounts ``1/D(tau)`` ``[B, K]`` and scale ``[B]`` of the lambda weights
    (inputs already checked by ``check_inputs``)."""
    if not log_base > 1:
        raise ValueError(f"log_base: expected a number > 1, found {log_base}")
    s = s.detach()
    B, K = s.shape
    # 1-based ranks by score among valid items; a stable sort keeps tied scores in order of
    # appearance (Rax's sort_ranks) and puts padding last.
    order = torch.sort(s.masked_fill(~m, -math.inf), dim=1, descending=True, stable=True).indices
    positions = torch.arange(1, K + 1, device=s.device, dtype=s.dtype).expand(B, K)
    rank = torch.empty_like(positions).scatter_(1, order, positions)
    ln_base = math.log(log_base)
    discount = ln_base / torch.log1p(rank)  # 1 / log_base(1 + rank)
    gain = torch.where(m, torch.exp2(y) - 1, s.new_zeros(()))
    if normalize:
        sorted_gain = gain.masked_fill(~m, -math.inf).sort(dim=1, descending=True).values
        ideal_terms = sorted_gain * ln_base / torch.log1p(positions)
        ideal = torch.where(torch.isfinite(sorted_gain), ideal_terms, s.new_zeros(())).sum(1)
        gain = gain / torch.where(ideal > 0, ideal, torch.ones_like(ideal))[:, None]
    scale = m.sum(1).to(s.dtype) if scale_by_list_size else s.new_ones(B)
    return gain, discount, scale


def lipo_lambda_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    normalize: bool = False,
    scale_by_list_size: bool = True,
    log_base: float = 2.0,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    """LiPO-lambda ``sum_{psi_i > psi_j} Delta_ij log(1 + exp(-(s_i - s_j)))`` (Liu et al. 2024).

    ``Delta`` are the DCG lambda weights of :func:`lambda_weights`, computed from the detached
    scores (no gradient flows through them). The defaults reproduce the authors' Rax setup,
    ``rax.pairwise_logistic_loss(lambdaweight_fn=rax.dcg_lambdaweight, reduce_fn=jnp.mean)``:
    weights times the list size, no ideal-DCG normalisation, mean over the preferred pairs of
    the batch (pooled). For K = 2 with labels (1, 0) every weight is
    ``2 * (1 - 1 / log2(3)) = 0.7381``, so the loss is that constant times DPO's.

    Args:
        scores, labels, mask: ``[B, K]`` (see module docstring).
        normalize: divide gains by the ideal DCG of each list (NDCG lambda weights).
        scale_by_list_size: multiply the weights by the number of valid items (Rax: by K).
        log_base: base of the discount logarithm (2 in LiPO and Rax).
        reduction: ``"mean"`` over preferred pairs, ``"sum"``, ``"none"`` (``[B]``).
        check_finite: raise ``ValueError`` naming the list and item when a valid score or
            label is NaN or infinite (default; one host sync per call).
    """
    check_reduction(reduction)
    s, y, m = check_inputs(scores, labels, mask, "lipo_lambda_loss", check_finite)
    delta = _lambda_grid(s, m, *_lambda_parts(s, y, m, normalize, scale_by_list_size, log_base))
    d, valid = preferred_pairs(s, y, m)
    return reduce_pairs(delta.flatten(1) * F.softplus(-d), valid, reduction)
