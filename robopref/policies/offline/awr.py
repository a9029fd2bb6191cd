"""Advantage-weighted regression (Peng, Kumar, Zhang and Levine 2019, arXiv 1910.00177), offline.

Two networks, trained together from the start:

* value ``V(s)`` of the behaviour data under the (learned, relabelled) reward, by TD(0)
  regression: ``L_V = E[ (V(s) - y)^2 ]``, ``y = r + gamma (1 - terminal) V'(s')`` with a
  Polyak-averaged target copy ``V'`` (rate ``tau``);
* actor: weighted maximum likelihood of the dataset actions,
  ``L_pi = -E[ min(exp(A / beta), weight_max) log pi(a | s) ]`` with the one-step TD advantage
  ``A = y - V(s)`` (detached).

The advantage is the learned-reward TD advantage, not AWR's Monte-Carlo / TD(lambda) return:
Meta-World episodes end by a time limit, and a TD target bootstraps through the cut where a
Monte-Carlo return would treat it as the end of the task. Unlike IQL there is no Q-function, so
a step costs about half of an IQL step (two MLPs forward and backward instead of four); the
price is that ``A`` is a single-sample estimate (noisier weights). One backward pass over
``L_V + L_pi`` (disjoint parameters) and one fused Adam step per update, as in IQL.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field

from robopref.policies.offline.common import (
    Batch,
    LearnerConfig,
    OfflineLearner,
    adam,
    adam_step,
    mlp,
)


class AWRConfig(LearnerConfig):
    """AWR options (beyond :class:`~robopref.policies.offline.common.LearnerConfig`)."""

    beta: float = Field(1.0, gt=0.0)
    """Temperature: the weights are exp(A / beta)."""
    weight_max: float = Field(20.0, gt=0.0)
    """Clip of the weights (AWR's 20)."""
    discount: float = Field(0.99, ge=0.0, le=1.0)
    """Discount of the value target."""
    tau: float = Field(0.005, gt=0.0, le=1.0)
    """Polyak rate of the target value network."""


def awr_weights(advantage: torch.Tensor, beta: float, weight_max: float) -> torch.Tensor:
    """``min(exp(advantage / beta), weight_max)``, elementwise (``[B] -> [B]``)."""
    return torch.exp(advantage / beta).clamp(max=weight_max)


class AWR(OfflineLearner):
    """Offline AWR agent for vector observations and actions in ``[-1, 1]``.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        config: :class:`AWRConfig`.
    """

    NAME = "AWR"
    FORMAT = "robopref.awr/1"
    LOSSES = ("value_loss", "actor_loss")
    config_cls = AWRConfig

    def __init__(self, obs_dim: int, act_dim: int, config: AWRConfig | None = None):
        super().__init__(obs_dim, act_dim, config)
        cfg: AWRConfig = self.config
        self.value = mlp(obs_dim, tuple(cfg.hidden), 1).to(self.device)
        self.value_target = copy.deepcopy(self.value).requires_grad_(False)
        self.opt = adam(
            [{"params": list(self.value.parameters())}, {"params": list(self.actor.parameters())}],
            cfg.lr,
            cfg.fused_adam,
        )
        self._value_params = list(self.value.parameters())
        self._target_params = list(self.value_target.parameters())

    def _modules(self) -> dict:
        return {
            "actor": self.actor,
            "value": self.value,
            "value_target": self.value_target,
            "opt": self.opt,
        }

    def _step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: AWRConfig = self.config
        with torch.no_grad():
            next_v = self.value_target(batch.next_obs).squeeze(-1)
            target = batch.reward + cfg.discount * (1.0 - batch.terminal) * next_v
        v = self.value(batch.obs).squeeze(-1)
        value_loss = (v - target).square().mean()
        adv = target - v.detach()
        weight = awr_weights(adv, cfg.beta, cfg.weight_max)
        actor_loss = -(weight * self.actor.log_prob(batch.obs, batch.act)).mean()
        self.opt.zero_grad(set_to_none=True)
        (value_loss + actor_loss).backward()
        adam_step(self.opt)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._value_params, cfg.tau)
        losses = torch.stack([value_loss.detach(), actor_loss.detach()])
        return losses, {
            "adv_mean": adv.mean(),
            "weight_mean": weight.mean(),
            "v_mean": v.detach().mean(),
        }
