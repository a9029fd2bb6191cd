"""Training of VLA policies: supervised fine-tuning (behaviour cloning on action tokens) and
Trajectory-wise Preference Optimisation (TPO, GRAPE) through the shared loss core.

TPO scores a trajectory by ``s = beta * sum_{t, d} [log pi(a_{t,d} | .) - log pi_ref(a_{t,d} | .)]``
(:func:`robopref.losses.log_ratio_scores` over the action tokens of all its steps) and minimises a
loss of :mod:`robopref.losses` over groups of trajectories with graded labels: a chosen/rejected
pair (labels ``[1, 0]``) gives GRAPE's TPO loss ``-log sigmoid(s_w - s_l)`` with ``"dpo"``;
ranked lists with ``"plackett_luce"``, ``"lipo_lambda"``, ... extend it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from robopref.losses import get_loss, log_ratio_scores
from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.model import (
    batch_token_logprobs,
    trainable_parameters,
    trajectory_observations,
)

Group = tuple[Sequence[int], Sequence[float]]
"""Trajectory indices ``[K]`` and graded labels ``[K]`` (higher = preferred)."""


def _progress(total: int, label: str, enabled: bool):
    from robopref.progress import bar

    return bar(total, label, unit="epoch", enabled=enabled)


def flatten_steps(policy: ActionTokenPolicy, trajectories: Sequence[Any]):
    """All steps of ``trajectories``: observations (dict of ``[N, ...]`` arrays), instructions
    ``[N]`` and action tokens ``[N, act_dim]``."""
    obs: dict[str, list[np.ndarray]] = {}
    instructions: list[str] = []
    tokens = []
    for i, traj in enumerate(trajectories):
        if not traj.instruction:
            raise ValueError(f"trajectories[{i}].instruction: expected a non-empty string")
        for key, arr in trajectory_observations(traj).items():
            obs.setdefault(key, []).append(np.asarray(arr))
        tokens.append(policy.action_tokenizer.encode(traj.actions))
        instructions += [traj.instruction] * len(traj.actions)
    return (
        {k: np.concatenate(v) for k, v in obs.items()},
        instructions,
        torch.as_tensor(np.concatenate(tokens)),
    )


class _Updater:
    """AdamW over the policy's trainable parameters, with optional gradient-norm clipping: the
    update step shared by SFT, TPO and step-level DPO."""

    def __init__(
        self,
        policy: ActionTokenPolicy,
        lr: float,
        weight_decay: float,
        max_grad_norm: float | None,
        who: str,
    ):
        self.params = list(trainable_parameters(policy).values())
        if not self.params:
            raise ValueError(f"{who}: the policy has no trainable parameters")
        self.optim = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.max_grad_norm = max_grad_norm

    def step(self, loss: torch.Tensor) -> None:
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optim.step()


def sft_train(
    policy: ActionTokenPolicy,
    trajectories: Sequence[Any],
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    fit_normalization: bool = True,
    writer: Any = None,
    progress: bool = False,
    label: str = "sft",
    steps: int | None = None,
) -> list[dict[str, float]]:
    """Behaviour cloning: minimise the cross-entropy of the demonstrated action tokens (under the
    constrained action-token distribution) over every step of ``trajectories``.

    Trains every parameter with ``requires_grad`` (the whole policy unless LoRA was applied).
    ``fit_normalization`` first sets the state standardisation from the demonstrations.
    ``steps``: exactly this many optimizer steps (epochs as needed, the last one cut short)
    instead of ``epochs``, e.g. to match another learner's number of updates.

    Returns:
        Per-epoch ``{"epoch", "loss" (nats per token), "token_accuracy" (greedy bin = demo bin),
        "steps" (optimizer steps so far)}``.
    """
    if steps is not None and steps <= 0:
        return []
    obs, instructions, tokens = flatten_steps(policy, trajectories)
    if fit_normalization:
        policy.fit_state_normalization(obs)
    updater = _Updater(policy, lr, weight_decay, max_grad_norm, "sft_train")
    rng = np.random.default_rng(seed)
    n = len(tokens)
    if steps is not None:
        epochs = -(-steps // -(-n // batch_size))
    history = []
    done = 0
    policy.train()
    with _progress(epochs, label, progress) as progress_bar:
        for epoch in range(epochs):
            order = rng.permutation(n)
            total_loss = total_acc = 0.0
            seen = 0
            for s in range(0, n, batch_size):
                if steps is not None and done == steps:
                    break
                idx = order[s : s + batch_size]
                batch_obs = policy.to_obs({k: v[idx] for k, v in obs.items()}, len(idx))
                batch_tokens = tokens[idx].to(policy.device)
                logits = policy.action_logits(
                    batch_obs, [instructions[i] for i in idx], batch_tokens[:, :-1]
                )
                bins = batch_tokens - policy.action_tokenizer.start
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), bins.flatten())
                updater.step(loss)
                done += 1
                seen += len(idx)
                total_loss += loss.item() * len(idx)
                total_acc += float((logits.argmax(-1) == bins).float().mean()) * len(idx)
            row = {
                "epoch": epoch,
                "loss": total_loss / seen,
                "token_accuracy": total_acc / seen,
                "steps": done,
            }
            history.append(row)
            if writer is not None:
                writer.add_scalar("sft/loss", row["loss"], epoch)
                writer.add_scalar("sft/token_accuracy", row["token_accuracy"], epoch)
            progress_bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
            progress_bar.update(1)
    policy.eval()
    return history


@torch.no_grad()
def reference_logprobs(
    policy: ActionTokenPolicy, trajectories: Sequence[Any], batch_size: int = 16
) -> list[torch.Tensor]:
    """Per-token log-probabilities ``[T_i * act_dim]`` of each trajectory under the reference
    (the policy with its adapters disabled, see :meth:`ActionTokenPolicy.reference`)."""
    out = []
    with policy.reference():
        for s in range(0, len(trajectories), batch_size):
            chunk = trajectories[s : s + batch_size]
            logp, mask = batch_token_logprobs(policy, chunk)
            out += [logp[i][mask[i]].cpu() for i in range(len(chunk))]
    return out


def length_normalized_scores(
    logp: torch.Tensor, ref_logp: torch.Tensor, token_mask: torch.Tensor, beta: float = 1.0
) -> torch.Tensor:
    """``s_k = beta * mean_t [log pi(a_t | .) - log pi_ref(a_t | .)]`` over the valid tokens of
    each item ``[B, K]`` (TRL's IPO and SimPO divide the summed log-ratio by the token count);
    an item without tokens scores 0. Inputs ``[B, K, T]`` as :func:`log_ratio_scores`."""
    summed = log_ratio_scores(logp, ref_logp, token_mask, beta=beta)
    return summed / token_mask.sum(-1).clamp(min=1).to(summed.dtype)


def chosen_nll(logp: torch.Tensor, token_mask: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The SFT anchor: mean over groups of the chosen item's negative log-likelihood per token.

    Args:
        logp: ``[B, K, T]`` per-token log-probabilities of the policy (nats).
        token_mask: ``[B, K, T]`` bool, valid tokens.
        chosen: ``[B]`` index of the chosen (best-labelled) item of each group.

    Returns:
        a scalar: ``mean_b [-sum_t logp[b, c_b, t] / n_tokens(b, c_b)]`` (nats per token).
    """
    idx = chosen.to(logp.device)[:, None, None].expand(-1, 1, logp.shape[-1])
    lp = logp.gather(1, idx).squeeze(1)  # [B, T]
    m = token_mask.gather(1, idx.to(token_mask.device)).squeeze(1)
    lp = torch.where(m, lp, lp.new_zeros(()))
    return (-(lp.sum(-1)) / m.sum(-1).clamp(min=1).to(lp.dtype)).mean()


def _group_tokens(
    policy: ActionTokenPolicy,
    trajectories: Sequence[Any],
    ref: Sequence[torch.Tensor],
    groups: Sequence[Group],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token ``logp`` and ``ref_logp`` ``[B, K, W]``, ``token_mask`` ``[B, K, W]``, labels
    ``[B, K]`` and item mask ``[B, K]`` of the groups (one forward pass per unique trajectory)."""
    unique = list(dict.fromkeys(int(i) for idx, _ in groups for i in idx))
    where = {t: j for j, t in enumerate(unique)}
    logp, mask = batch_token_logprobs(policy, [trajectories[t] for t in unique])
    K = max(len(idx) for idx, _ in groups)
    B, W = len(groups), logp.shape[1]
    dev = logp.device
    lp = logp.new_zeros((B, K, W))
    rf = logp.new_zeros((B, K, W))
    tm = torch.zeros((B, K, W), dtype=torch.bool, device=dev)
    labels = torch.zeros((B, K), device=dev)
    items = torch.zeros((B, K), dtype=torch.bool, device=dev)
    for b, (idx, lab) in enumerate(groups):
        for k, (t, y) in enumerate(zip(idx, lab, strict=True)):
            j = where[int(t)]
            lp[b, k] = logp[j]
            tm[b, k] = mask[j]
            r = ref[int(t)].to(dev)
            rf[b, k, : len(r)] = r
            labels[b, k] = float(y)
            items[b, k] = True
    return lp, rf, tm, labels, items


def _group_scores(
    policy: ActionTokenPolicy,
    trajectories: Sequence[Any],
    ref: Sequence[torch.Tensor],
    groups: Sequence[Group],
    beta: float,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores ``[B, K]`` (beta * summed or, with ``normalize``, per-token mean log-ratios),
    labels ``[B, K]`` and item mask ``[B, K]``."""
    lp, rf, tm, labels, items = _group_tokens(policy, trajectories, ref, groups)
    score = length_normalized_scores if normalize else log_ratio_scores
    return score(lp, rf, tm, beta=beta), labels, items


def pair_margins(
    policy: ActionTokenPolicy,
    trajectories: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    ref: Sequence[torch.Tensor] | None = None,
) -> np.ndarray:
    """Log-ratio margins ``[P]``: ``[log pi(w) - log pi_ref(w)] - [log pi(l) - log pi_ref(l)]``
    (nats) of each ``(chosen, rejected)`` pair under the current policy."""
    ref = ref if ref is not None else reference_logprobs(policy, trajectories)
    with torch.no_grad():
        scores, _, _ = _group_scores(
            policy, trajectories, ref, [((w, lo), (1.0, 0.0)) for w, lo in pairs], beta=1.0
        )
    return (scores[:, 0] - scores[:, 1]).cpu().numpy()


def _best_worst(labels: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``[B]`` of the best- and of the worst-labelled item of each group."""
    masked_hi = torch.where(items, labels, labels.new_full((), -np.inf))
    masked_lo = torch.where(items, labels, labels.new_full((), np.inf))
    return masked_hi.argmax(1), masked_lo.argmin(1)


def tpo_train(
    policy: ActionTokenPolicy,
    trajectories: Sequence[Any],
    groups: Sequence[Group],
    loss: str = "dpo",
    loss_options: dict[str, Any] | None = None,
    beta: float = 0.1,
    epochs: int = 1,
    batch_size: int = 4,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    ref: Sequence[torch.Tensor] | None = None,
    normalize: bool = False,
    sft_weight: float = 0.0,
    writer: Any = None,
    step_offset: int = 0,
    log_prefix: str = "tpo",
    progress: bool = False,
    label: str = "tpo",
) -> list[dict[str, float]]:
    """Trajectory-wise preference optimisation against the frozen reference.

    Args:
        trajectories: the rollouts (actions in [-1, 1], one instruction each).
        groups: ``(indices [K], labels [K])`` per preference item: a pair ``((w, l), (1, 0))``
            or a ranked list with graded labels.
        loss, loss_options: a loss of :mod:`robopref.losses` (``"dpo"`` = GRAPE's TPO).
        beta: DPO's beta (scales the log-ratio into the score).
        ref: reference per-token log-probabilities (default: computed with
            :func:`reference_logprobs`).
        normalize: score = beta * the *mean* per-token log-ratio (:func:`length_normalized_scores`)
            instead of the sum over the trajectory's ~T * act_dim tokens.
        sft_weight: adds ``sft_weight *`` :func:`chosen_nll` (the best-labelled trajectory's
            NLL per token) to the preference loss: an SFT anchor (as RPO does).

    Returns:
        Per-epoch ``{"epoch", "loss", "margin" (mean of (s_best - s_worst) / beta: nats, or nats
        per token when normalised), "accuracy" (fraction of groups whose best-labelled item has
        the highest score), "nll" (chosen NLL per token)}``.
    """
    if not groups:
        return []
    loss_fn: Callable = get_loss(loss, **(loss_options or {}))
    ref = ref if ref is not None else reference_logprobs(policy, trajectories)
    updater = _Updater(policy, lr, weight_decay, max_grad_norm, "tpo_train")
    rng = np.random.default_rng(seed)
    score_fn = length_normalized_scores if normalize else log_ratio_scores
    history = []
    policy.train()
    step = step_offset
    with _progress(epochs, label, progress) as progress_bar:
        for epoch in range(epochs):
            order = rng.permutation(len(groups))
            sums = {"loss": 0.0, "margin": 0.0, "accuracy": 0.0, "nll": 0.0}
            for s in range(0, len(groups), batch_size):
                batch = [groups[i] for i in order[s : s + batch_size]]
                lp, rf, tm, labels, items = _group_tokens(policy, trajectories, ref, batch)
                scores = score_fn(lp, rf, tm, beta=beta)
                best, worst = _best_worst(labels, items)
                nll = chosen_nll(lp, tm, best)
                value = loss_fn(scores, labels, items)
                if sft_weight:
                    value = value + sft_weight * nll
                updater.step(value)
                with torch.no_grad():
                    s_best = scores.gather(1, best[:, None]).squeeze(1)
                    s_worst = scores.gather(1, worst[:, None]).squeeze(1)
                    top = torch.where(items, scores, scores.new_full((), -np.inf)).argmax(1)
                n = len(batch)
                sums["loss"] += value.item() * n
                sums["margin"] += float((s_best - s_worst).sum()) / beta
                sums["accuracy"] += float((top == best).float().sum())
                sums["nll"] += nll.item() * n
                if writer is not None:
                    writer.add_scalar(f"{log_prefix}/loss", value.item(), step)
                step += 1
            row = {"epoch": epoch, **{k: v / len(groups) for k, v in sums.items()}}
            history.append(row)
            progress_bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
            progress_bar.update(1)
    policy.eval()
    return history


def step_logratios(
    policy: ActionTokenPolicy, trajectories: Sequence[Any], ref: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step log-ratios ``[N, T_max]`` (``sum_d log pi - log pi_ref`` over the step's
    ``act_dim`` tokens, nats; 0 on padding) and the step mask ``[N, T_max]``."""
    logp, mask = batch_token_logprobs(policy, trajectories)
    D = policy.act_dim
    rf = torch.zeros_like(logp)
    for i, r in enumerate(ref):
        rf[i, : len(r)] = r.to(logp.device)
    diff = torch.where(mask, logp - rf, logp.new_zeros(()))
    return diff.view(len(trajectories), -1, D).sum(-1), mask.view(len(trajectories), -1, D)[..., 0]


def step_dpo_train(
    policy: ActionTokenPolicy,
    trajectories: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    beta: float = 0.1,
    epochs: int = 1,
    batch_size: int = 4,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    ref: Sequence[torch.Tensor] | None = None,
    progress: bool = False,
    label: str = "step_dpo",
) -> list[dict[str, float]]:
    """Step-level DPO (a baseline for TPO): each ``(chosen, rejected)`` trajectory pair gives one
    preference per aligned time step ``t < min(T_w, T_l)``, ``-log sigmoid(beta * (r_w,t -
    r_l,t))`` with ``r_t`` the step's log-ratio (:func:`step_logratios`); the loss is the mean
    over all aligned steps of the batch (the ``"dpo"`` loss of :mod:`robopref.losses`).

    Returns per-epoch ``{"epoch", "loss", "accuracy" (fraction of aligned steps with r_w > r_l)}``.
    """
    if not pairs:
        return []
    loss_fn = get_loss("dpo")
    ref = ref if ref is not None else reference_logprobs(policy, trajectories)
    updater = _Updater(policy, lr, weight_decay, max_grad_norm, "step_dpo_train")
    rng = np.random.default_rng(seed)
    history = []
    policy.train()
    with _progress(epochs, label, progress) as progress_bar:
        for epoch in range(epochs):
            order = rng.permutation(len(pairs))
            total = acc = steps = 0.0
            for s in range(0, len(pairs), batch_size):
                batch = [pairs[i] for i in order[s : s + batch_size]]
                unique = list(dict.fromkeys(i for p in batch for i in p))
                where = {t: j for j, t in enumerate(unique)}
                r, m = step_logratios(
                    policy, [trajectories[t] for t in unique], [ref[t] for t in unique]
                )
                w = torch.tensor([where[a] for a, _ in batch])
                lo = torch.tensor([where[b] for _, b in batch])
                both = m[w] & m[lo]  # [P, T] aligned steps
                scores = beta * torch.stack([r[w][both], r[lo][both]], -1)  # [S, 2]
                labels = torch.tensor([1.0, 0.0]).expand_as(scores)
                value = loss_fn(scores, labels)
                updater.step(value)
                n = scores.shape[0]
                total += value.item() * n
                acc += float((scores[:, 0] > scores[:, 1]).float().sum())
                steps += n
            history.append({"epoch": epoch, "loss": total / steps, "accuracy": acc / steps})
            progress_bar.update(1)
    policy.eval()
    return history


def select_rejection_sampling(
    scores: np.ndarray,
    groups: Sequence,
    successes: np.ndarray,
    mode: str = "success",
    top_k: int = 1,
) -> list[int]:
    """The rollouts that rejection-sampling fine-tuning behaviour-clones, per group (task).

    ``mode="success"``: a group's successful rollouts, or its ``top_k`` best-scored ones when
    none succeeded; ``"best"``: its ``top_k`` best-scored rollouts. Ties keep the lower index.
    Returns indices, groups in order of first appearance, best first within a group.
    """
    scores = np.asarray(scores, dtype=np.float64)
    successes = np.asarray(successes, dtype=bool)
    groups = np.asarray(groups)
    if not (scores.shape == successes.shape == groups.shape) or scores.ndim != 1:
        raise ValueError(
            f"scores, successes, groups: expected equal shapes [N], found {scores.shape}, "
            f"{successes.shape}, {groups.shape}"
        )
    if mode not in ("success", "best"):
        raise ValueError(f"rejection_sampling.select: expected 'success' or 'best', found {mode!r}")
    out: list[int] = []
    for g in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        ok = idx[successes[idx]]
        out += (ok if mode == "success" and ok.size else idx[:top_k]).tolist()
    return [int(i) for i in out]
