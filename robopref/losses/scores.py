"""Item scores for the loss core: segment returns (reward models) and log-ratios (DPO family).

Both reduce a per-step quantity ``[B, K, T]`` to one score per item ``[B, K]``, ignoring the
steps (tokens) where the mask is ``False``; masked values may be anything, NaN included.
"""

from __future__ import annotations

import torch

from robopref.losses._common import _describe


def _check_steps(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(
            f"{name}: expected a float tensor of shape [B, K, T], found {_describe(x)}"
        )


def _step_mask(name: str, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or list(mask.shape) != list(like.shape):
        raise ValueError(
            f"{name}: expected a bool tensor of shape {list(like.shape)}, found {_describe(mask)}"
        )
    mask = mask.to(like.device)
    return mask if mask.dtype == torch.bool else mask != 0


def segment_return_scores(
    step_rewards: torch.Tensor, step_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Segment returns ``s_k = sum_t r_t`` (Christiano et al. 2017; PEBBLE), undiscounted.

    Args:
        step_rewards: ``[B, K, H]`` per-step rewards of K segments of (up to) H steps.
        step_mask: ``[B, K, H]`` bool, ``False`` for padding steps; ``None``: every step counts.

    Returns:
        ``[B, K]`` returns (reward units times steps).
    """
    _check_steps("step_rewards", step_rewards)
    step_mask = _step_mask("step_mask", step_mask, step_rewards)
    if step_mask is None:
        return step_rewards.sum(-1)
    return torch.where(step_mask, step_rewards, step_rewards.new_zeros(())).sum(-1)


def log_ratio_scores(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    beta: float = 1.0,
    *,
    average: bool = False,
) -> torch.Tensor:
    """DPO implicit reward ``s_k = beta * sum_t (log pi(a_t | .) - log pi_ref(a_t | .))``.

    With ``average=True`` the sum is divided by the item's number of valid tokens ``n_k``
    (``token_mask.sum(-1)``; ``T`` without a mask): ``s_k = beta * (1/n_k) sum_t (...)``, the
    length-normalised log-ratio of TRL's IPO (``DPOTrainer`` with ``loss_type="ipo"`` averages
    each completion's per-token log-probabilities, for the policy and the reference alike:
    ``get_batch_logps(..., average_log_prob=True)``, later ``all_logps / size_completion``).
    TRL's IPO value is therefore ``ipo_loss(log_ratio_scores(logp, ref, mask, average=True),
    labels, beta=beta)``. An item without a valid token (a padding item) gets 0.

    Args:
        logp: ``[B, K, T]`` per-token (per-action-token) log-probabilities of the policy, nats.
        ref_logp: ``[B, K, T]`` the same under the frozen reference policy.
        token_mask: ``[B, K, T]`` bool, ``False`` for prompt/padding tokens; ``None``: all count.
        beta: KL strength (DPO's beta); ``beta = 1`` gives the unscaled log-ratio that
            :func:`~robopref.losses.ipo_loss` expects by default.
        average: divide by the number of valid tokens of each item (nats per token).

    Returns:
        ``[B, K]`` scores, nats (per token with ``average``) times beta.
    """
    _check_steps("logp", logp)
    if not isinstance(ref_logp, torch.Tensor) or list(ref_logp.shape) != list(logp.shape):
        raise ValueError(
            f"ref_logp: expected a tensor of shape {list(logp.shape)} (the shape of logp), "
            f"found {_describe(ref_logp)}"
        )
    token_mask = _step_mask("token_mask", token_mask, logp)
    diff = logp - ref_logp.to(device=logp.device, dtype=logp.dtype)
    if token_mask is not None:
        diff = torch.where(token_mask, diff, diff.new_zeros(()))
    total = diff.sum(-1)
    if average:
        if token_mask is None:
            total = total / max(logp.shape[-1], 1)
        else:
            total = total / token_mask.sum(-1).clamp(min=1).to(total.dtype)
    return beta * total
