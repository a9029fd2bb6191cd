"""Implicit Q-Learning (Kostrikov, Nair and Levine, ICLR 2022, arXiv 2110.06169) in PyTorch.

IQL never queries the Q-function on actions outside the dataset:

* value ``V(s)``: expectile regression towards ``min(Q1', Q2')(s, a)`` of the target critic,
  ``L_V = E[ |tau - 1(u < 0)| u^2 ]``, ``u = Q'(s, a) - V(s)`` (``tau`` = ``expectile``);
* twin critic ``Q1, Q2``: ``L_Q = E[ (Q_i(s, a) - r - gamma (1 - terminal) V(s'))^2 ]``,
  with a Polyak-averaged target copy (rate ``tau``);
* actor: advantage-weighted regression,
  ``L_pi = -E[ min(exp(beta (Q'(s, a) - V(s))), 100) log pi(a | s) ]``, ``beta`` = ``temperature``.

One step computes the three losses from the networks as they are at the start of the step
(as CORL's and d3rlpy's IQL do; the authors' JAX code updates ``V`` first and uses the new ``V``
in the actor and critic losses, one Adam step of lag apart). The three losses touch disjoint
parameters and the advantages and TD targets are detached, so their sum has the same gradients
as three separate backward passes: one backward pass and one fused Adam step (three parameter
groups, the actor's with its own learning-rate schedule) do the whole update. ``V(s)`` is
evaluated once (with gradient), ``V(s')`` once (without). The target critic is updated with one
``torch._foreach_lerp_``. The actor is a Gaussian with a tanh mean and a state-independent log
standard deviation clipped to ``[-5, 2]``; the deterministic action is the mean. Actor learning
rate: cosine decay to zero over ``config.steps`` (as the authors' ``opt_decay_schedule="cosine"``),
or constant. The optimiser is a :class:`~robopref.policies.offline.common.FusedAdam` (the fused
kernel without ``torch.optim.Adam.step``'s per-call bookkeeping). ``compile`` wraps the loss
computation (forward and backward) in ``torch.compile``: ``"auto"`` (the default) does so for
:meth:`train` runs of at least ``COMPILE_AUTO_MIN_STEPS`` steps, where the one-off compile time
is paid back, and falls back to eager with a warning if compiling fails; ``True`` always,
``False`` never (``docs/benchmarks.md``, IQL section).

Usage::

    buf = TransitionBuffer.from_dataset(dataset, reward_fn=reward_model.predict)
    agent = IQL(buf.obs_dim, buf.act_dim, IQLConfig(steps=100_000, checkpoint_dir="ckpt"))
    agent.train(buf)
    action = agent.act(obs)  # obs [obs_dim] -> action [act_dim] in [-1, 1]
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from robopref.policies.offline.common import (
    CHECKPOINT_NAME,
    Batch,
    GaussianPolicy,
    LearnerConfig,
    NonFiniteLossError,
    OfflineLearner,
    adam,
    adam_step,
    mlp,
)

__all__ = [
    "CHECKPOINT_NAME",
    "IQL",
    "IQLConfig",
    "GaussianPolicy",
    "NonFiniteLossError",
    "TwinQ",
    "expectile_loss",
    "mlp",
]


class IQLConfig(LearnerConfig):
    """IQL hyper-parameters. Defaults are the paper's (locomotion) except ``steps``."""

    expectile: float = Field(0.7, gt=0.0, lt=1.0)
    """Expectile of the value regression (0.5: the mean)."""
    temperature: float = Field(3.0, ge=0.0)
    """Beta of the advantage weights."""
    discount: float = Field(0.99, ge=0.0, le=1.0)
    """Discount of the critic's target."""
    tau: float = Field(0.005, gt=0.0, le=1.0)
    """Polyak rate of the target critic."""
    actor_lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule of the actor."""
    exp_adv_max: float = Field(100.0, gt=0.0)
    """Clip of exp(beta * A)."""
    compile: bool | Literal["auto"] = "auto"
    """torch.compile the loss computation (forward and backward): true, false, or "auto" =
    compiled in train() runs of at least COMPILE_AUTO_MIN_STEPS steps, where the one-off
    compile time is paid back (docs/benchmarks.md), eager otherwise and in update()."""


# Break-even of compile="auto" (docs/benchmarks.md, IQL section): compiling costs 26-53 s with
# a cold inductor cache and 4-27 s with a warm one on a 2-core CPU (more when it is loaded),
# and saves ~0.8-1.1 ms of each ~10 ms update on one thread: paid back after ~25k-65k updates
# cold, so only runs at least this long are compiled.
COMPILE_AUTO_MIN_STEPS = 50_000


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean asymmetric squared loss ``|expectile - 1(diff < 0)| * diff^2``.

    Args:
        diff: ``[B]`` residuals ``Q(s, a) - V(s)``.
        expectile: in ``(0, 1)``; 0.5 gives half the mean squared error.
    """
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.square()).mean()


class TwinQ(nn.Module):
    """Two Q-functions of ``[obs, act]`` (``[B, obs_dim + act_dim]``) -> two ``[B]``.

    Vectorised: each layer holds both networks' weights, ``[2, in, out]``, and runs as one
    ``baddbmm``, so the twin costs the dispatches of one network (measured +9 % updates/s of the
    whole IQL update on one CPU thread). Initialised like ``nn.Linear``
    (``U(-1/sqrt(in), 1/sqrt(in))`` for weights and biases), independently per network.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n: int = 2):
        super().__init__()
        dims = [obs_dim + act_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound)))

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(obs, act)`` or ``forward(obs_act)`` with the two already concatenated."""
        x = obs if act is None else torch.cat([obs, act], dim=-1)
        h = x.unsqueeze(0).expand(len(self.weights[0]), *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu_(h)
        q = h.squeeze(-1)
        return q[0], q[1]


class IQL(OfflineLearner):
    """Implicit Q-Learning agent for vector observations and actions in ``[-1, 1]``.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        config: hyper-parameters, logging and checkpointing (:class:`IQLConfig`).
    """

    NAME = "IQL"
    FORMAT = "robopref.iql/2"
    LOSSES = ("value_loss", "actor_loss", "critic_loss")
    config_cls = IQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: IQLConfig | None = None):
        super().__init__(obs_dim, act_dim, config)
        cfg: IQLConfig = self.config
        hidden = tuple(cfg.hidden)
        self.critic = TwinQ(obs_dim, act_dim, hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(obs_dim, hidden, 1).to(self.device)
        self.opt = adam(
            [
                {"params": list(self.value.parameters())},
                {"params": list(self.actor.parameters())},
                {"params": list(self.critic.parameters())},
            ],
            cfg.lr,
            cfg.fused_adam,
        )
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._losses = self._compute_losses
        self._compile_fallback = False  # True while an "auto" compile is untried
        if cfg.compile is True:
            self._losses = torch.compile(self._compute_losses)

    def _modules(self) -> dict:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "value": self.value,
            "opt": self.opt,
        }

    def _actor_lr(self) -> float:
        return self.opt.param_groups[1]["lr"]

    def _lr_schedule(self) -> None:
        cfg: IQLConfig = self.config
        if cfg.actor_lr_schedule == "cosine":
            frac = min(self.step, cfg.steps) / cfg.steps
            self.opt.param_groups[1]["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    def _compute_losses(
        self,
        obs: torch.Tensor,
        obs_act: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        terminal: torch.Tensor,
    ):
        cfg: IQLConfig = self.config
        with torch.no_grad():
            q_target = torch.min(*self.critic_target(obs_act))
            next_v = self.value(next_obs).squeeze(-1)
        # Value: expectile regression towards the target critic.
        v = self.value(obs).squeeze(-1)
        value_loss = expectile_loss(q_target - v, cfg.expectile)
        # Actor: advantage-weighted regression.
        adv = q_target - v.detach()
        weight = torch.exp(cfg.temperature * adv).clamp(max=cfg.exp_adv_max)
        actor_loss = -(weight * self.actor.log_prob(obs, act)).mean()
        # Critic: TD regression towards r + gamma * (1 - terminal) * V(s').
        target = reward + cfg.discount * (1.0 - terminal) * next_v
        q1, q2 = self.critic(obs_act)
        critic_loss = (q1 - target).square().mean() + (q2 - target).square().mean()
        stats = torch.stack([adv.mean(), q1.detach().mean(), v.detach().mean()])
        return value_loss, actor_loss, critic_loss, stats

    def _before_training(self, steps_to_run: int) -> None:
        cfg: IQLConfig = self.config
        if cfg.compile == "auto" and self._losses == self._compute_losses:
            if steps_to_run >= COMPILE_AUTO_MIN_STEPS:
                self._losses = torch.compile(self._compute_losses)
                self._compile_fallback = True

    def _forward_backward(self, batch: Batch):
        value_loss, actor_loss, critic_loss, stats = self._losses(
            batch.obs, batch.obs_act, batch.act, batch.next_obs, batch.reward, batch.terminal
        )
        self.opt.zero_grad(set_to_none=True)
        (value_loss + actor_loss + critic_loss).backward()
        return value_loss, actor_loss, critic_loss, stats

    def _step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._compile_fallback:
            # First compiled step of compile="auto": if torch.compile cannot work here (no C++
            # compiler, unsupported platform), say so once and train eagerly. Nothing has been
            # updated yet (the optimiser steps below), so the eager retry is the same step.
            self._compile_fallback = False
            try:
                out = self._forward_backward(batch)
            except Exception as exc:  # noqa: BLE001 - any compile failure means: run eagerly
                warnings.warn(
                    f"IQL: torch.compile failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); training eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._losses = self._compute_losses
                out = self._forward_backward(batch)
        else:
            out = self._forward_backward(batch)
        value_loss, actor_loss, critic_loss, stats = out
        adam_step(self.opt)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.config.tau)
        losses = torch.stack([value_loss.detach(), actor_loss.detach(), critic_loss.detach()])
        return losses, {"adv_mean": stats[0], "q_mean": stats[1], "v_mean": stats[2]}
