"""What every tokenised-action policy shares: the constrained action distribution.

A policy (the tiny LM behind an observation encoder, :class:`~robopref.policies.vla.VLAPolicy`,
or a Hugging Face vision-language model, :class:`~robopref.policies.vla.VLMPolicy`) implements
three things: :meth:`ActionTokenPolicy.to_obs` (observations -> tensors on its device),
:meth:`ActionTokenPolicy.action_logits` (logits over the ``n_bins`` action tokens for each action
dimension, teacher-forced on the previous action tokens) and :meth:`_reference_context` (the
policy with its adapters disabled). Everything the trainers call is built on them here:
``log pi(a | o, q)`` (:meth:`action_token_logprobs`), decoding (:meth:`predict_tokens`) and
:meth:`act`. The distribution over an action dimension is the softmax of the model's logits
restricted to the action ids, so other tokens can never be emitted, and the log-probabilities the
trainers see are those of the distribution rollouts sample from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from robopref.policies.vla.tokenizer import ActionTokenizer


class ActionTokenPolicy(nn.Module):
    """Observation + instruction -> ``act_dim`` action tokens (see the module docstring).

    Attributes set by subclasses: ``act_dim``, ``action_tokenizer`` (:class:`ActionTokenizer`),
    ``lora_settings`` (None until LoRA adapters are added) and ``action_bounds`` (None, or
    per-dimension ``(low, high)`` arrays that :meth:`act` maps the [-1, 1] tokens' actions onto).
    """

    act_dim: int
    action_tokenizer: ActionTokenizer
    lora_settings: dict[str, Any] | None = None
    action_bounds: tuple[np.ndarray, np.ndarray] | None = None

    # ---- what a policy implements ------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def obs_mode(self) -> str:
        raise NotImplementedError

    def to_obs(self, obs: Any, n: int | None = None) -> dict[str, torch.Tensor]:
        """Observations of ``n`` steps -> a dict of tensors on the policy's device."""
        raise NotImplementedError

    def action_logits(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: Sequence[str],
        prev_tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Logits over the ``n_bins`` action tokens ``[N, k + 1, n_bins]`` for action dimensions
        ``0..k``, given the first ``k`` action tokens ``prev_tokens`` ``[N, k]`` (ids)."""
        raise NotImplementedError

    def _reference_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def fit_state_normalization(self, obs: Mapping[str, np.ndarray]) -> None:
        """Fit input standardisation on demonstration observations (nothing by default)."""

    # ---- shared -------------------------------------------------------------------------------
    def action_token_logprobs(
        self, obs: Mapping[str, torch.Tensor], instructions: Sequence[str], tokens: torch.Tensor
    ) -> torch.Tensor:
        """``[N, D]`` log-probabilities (nats) of the action tokens ``tokens`` ``[N, D]`` under the
        constrained (action-token) distribution, teacher-forced in one forward pass."""
        tokens = tokens.to(self.device)
        if tokens.dim() != 2 or tokens.shape[1] != self.act_dim:
            raise ValueError(
                f"tokens: expected shape [N, {self.act_dim}], found {list(tokens.shape)}"
            )
        logits = self.action_logits(obs, instructions, tokens[:, :-1])
        bins = tokens - self.action_tokenizer.start
        return torch.log_softmax(logits, -1).gather(-1, bins[..., None]).squeeze(-1)

    def _pick(self, logits: torch.Tensor, greedy: bool, temperature: float, generator: Any):
        """Bins ``[N]`` from the last action-token logits ``[N, n_bins]``."""
        if greedy or temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, -1)
        if generator is not None and generator.device != probs.device:
            probs = probs.cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)

    @torch.no_grad()
    def predict_tokens(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: Sequence[str],
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Autoregressive decoding of ``act_dim`` action tokens ``[N, D]`` (ids), greedy or
        sampled at ``temperature`` from the action-token distribution."""
        n = len(instructions)
        tokens = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        for _ in range(self.act_dim):
            logits = self.action_logits(obs, instructions, tokens)[:, -1]
            bins = self._pick(logits, greedy, temperature, generator)
            tokens = torch.cat([tokens, bins[:, None] + self.action_tokenizer.start], 1)
        return tokens

    def act(
        self,
        obs: Any,
        instructions: Sequence[str] | str,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Actions ``[N, act_dim]`` float32 for a batch of observations (bin centres in [-1, 1],
        mapped onto ``action_bounds`` when the policy has them). One observation (e.g. one camera
        frame ``[H, W, 3]``) with one instruction string gives one action ``[act_dim]``."""
        single = isinstance(instructions, str)
        if single:
            obs = (
                {k: np.asarray(v)[None] for k, v in obs.items()}
                if isinstance(obs, Mapping)
                else np.asarray(obs)[None]
            )
            instructions = [instructions]
        was_training = self.training
        self.eval()
        tokens = self.predict_tokens(
            self.to_obs(obs, len(instructions)), instructions, greedy, temperature, generator
        )
        self.train(was_training)
        actions = self.action_tokenizer.decode(tokens.cpu().numpy())
        if self.action_bounds is not None:
            low, high = self.action_bounds
            actions = (low + (actions + 1) / 2 * (high - low)).astype(np.float32)
        return actions[0] if single else actions

    @contextlib.contextmanager
    def reference(self) -> Iterator[ActionTokenPolicy]:
        """Within this block the policy is its reference: the same module with its LoRA adapters
        disabled (and whatever else the policy swaps back, see :meth:`_reference_context`)."""
        with self._reference_context():
            yield self
