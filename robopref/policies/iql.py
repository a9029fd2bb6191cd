"""Implicit Q-Learning (Kostrikov, Nair and Levine, ICLR 2022, arXiv 2110.06169) in PyTorch.

IQL never queries the Q-function on actions outside the dataset:

* value ``V(s)``: expectile regression towards ``min(Q1', Q2')(s, a)`` of the target critic,
  ``L_V = E[ |tau - 1(u < 0)| u^2 ]``, ``u = Q'(s, a) - V(s)`` (``tau`` = ``expectile``);
* twin critic ``Q1, Q2``: ``L_Q = E[ (Q_i(s, a) - r - gamma (1 - terminal) V(s'))^2 ]``,
  with a Polyak-averaged target copy (rate ``tau``);
* actor: advantage-weighted regression,
  ``L_pi = -E[ min(exp(beta (Q'(s, a) - V(s))), 100) log pi(a | s) ]``, ``beta`` = ``temperature``.

The update order per step follows the authors' code: value, actor (with the new value), critic
(with the new value), target. The actor is a Gaussian with a tanh mean and a state-independent
log standard deviation clipped to ``[-5, 2]`` (the authors' choice for locomotion and
Meta-World-like tasks); the deterministic action is the mean. Actor learning rate: cosine decay
to zero over ``config.steps`` (as the authors' ``opt_decay_schedule="cosine"``), or constant.

Usage::

    buf = TransitionBuffer.from_dataset(dataset, reward_fn=reward_model.predict)
    agent = IQL(buf.obs_dim, buf.act_dim, IQLConfig(steps=100_000, checkpoint_dir="ckpt"))
    agent.train(buf)
    action = agent.act(obs)  # obs [obs_dim] -> action [act_dim] in [-1, 1]
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from robopref.config import StrictModel
from robopref.data import DataValidationError
from robopref.policies.buffer import TransitionBuffer
from robopref.utils import atomic_path, resolve_device, seed_everything

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "robopref.iql/1"


class IQLConfig(StrictModel):
    """IQL hyper-parameters. Defaults are the paper's (locomotion) except ``steps``."""

    expectile: float = Field(0.7, gt=0.0, lt=1.0)
    temperature: float = Field(3.0, ge=0.0)  # beta of the advantage weights
    discount: float = Field(0.99, ge=0.0, le=1.0)
    tau: float = Field(0.005, gt=0.0, le=1.0)  # Polyak rate of the target critic
    lr: float = Field(3e-4, gt=0.0)  # Adam learning rate of actor, critic and value
    actor_lr_schedule: Literal["cosine", "constant"] = "cosine"
    exp_adv_max: float = Field(100.0, gt=0.0)  # clip of exp(beta * A)
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    hidden: tuple[int, ...] = (256, 256)
    batch_size: int = Field(256, ge=1)
    steps: int = Field(100_000, ge=1)  # total gradient steps (the paper uses 1M)
    seed: int = 0
    device: str = "auto"
    log_dir: str | None = None  # TensorBoard scalars when set
    log_every: int = Field(1000, ge=1)
    checkpoint_dir: str | None = None  # checkpoint + resume when set
    checkpoint_every: int = Field(10_000, ge=1)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean asymmetric squared loss ``|expectile - 1(diff < 0)| * diff^2``.

    Args:
        diff: ``[B]`` residuals ``Q(s, a) - V(s)``.
        expectile: in ``(0, 1)``; 0.5 gives half the mean squared error.
    """
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    """Two Q-functions ``Q_i(obs [B, obs_dim], act [B, act_dim]) -> [B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class GaussianPolicy(nn.Module):
    """``pi(a | s) = N(tanh(mlp(s)), exp(log_std)^2)``, diagonal, state-independent std."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], log_std_range=(-5.0, 2.0)
    ):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_range = log_std_range

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return mean ``[B, act_dim]`` in ``(-1, 1)`` and std ``[act_dim]``."""
        mean = torch.tanh(self.net(obs))
        std = self.log_std.clamp(*self.log_std_range).exp()
        return mean, std

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``log pi(act | obs)`` summed over action dimensions, ``[B]``."""
        mean, std = self(obs)
        return torch.distributions.Normal(mean, std).log_prob(act).sum(-1)


class IQL:
    """Implicit Q-Learning agent for vector observations and actions in ``[-1, 1]``.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        config: hyper-parameters, logging and checkpointing (:class:`IQLConfig`).
    """

    def __init__(self, obs_dim: int, act_dim: int, config: IQLConfig | None = None):
        self.config = cfg = config if config is not None else IQLConfig()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        torch.manual_seed(cfg.seed)
        hidden = tuple(cfg.hidden)
        self.actor = GaussianPolicy(
            obs_dim, act_dim, hidden, (cfg.log_std_min, cfg.log_std_max)
        ).to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(obs_dim, hidden, 1).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg.lr)
        # Separate CPU generators: batch indices and exploration noise are reproducible and
        # are saved in checkpoints, so a resumed run continues the same sample stream.
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.act_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action(s) for ``obs`` ``[obs_dim]`` or ``[N, obs_dim]``: ``[act_dim]`` or ``[N, act_dim]``.

        ``deterministic=True`` returns the policy mean; otherwise a Gaussian sample. Actions are
        clipped to ``[-1, 1]`` (float32).
        """
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"act: field 'obs': expected [{self.obs_dim}] or [N, {self.obs_dim}], found shape {obs.shape}"
            )
        x = torch.as_tensor(obs.reshape(-1, self.obs_dim), device=self.device)
        mean, std = self.actor(x)
        action = mean.cpu()
        if not deterministic:
            action = action + std.cpu() * torch.randn(action.shape, generator=self.act_gen)
        action = action.clamp(-1.0, 1.0).numpy()
        return action[0] if single else action

    __call__ = act

    # ---------------------------------------------------------------- training
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One IQL gradient step on a batch of tensors; returns detached statistics."""
        cfg = self.config
        obs, act, rew = batch["obs"], batch["act"], batch["reward"]
        next_obs, terminal = batch["next_obs"], batch["terminal"]
        with torch.no_grad():
            q_target = torch.min(*self.critic_target(obs, act))

        # Value: expectile regression towards the target critic.
        v = self.value(obs).squeeze(-1)
        value_loss = expectile_loss(q_target - v, cfg.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        # Actor: advantage-weighted regression with the updated value.
        with torch.no_grad():
            adv = q_target - self.value(obs).squeeze(-1)
            weight = torch.exp(cfg.temperature * adv).clamp(max=cfg.exp_adv_max)
            next_v = self.value(next_obs).squeeze(-1)
        actor_loss = -(weight * self.actor.log_prob(obs, act)).mean()
        if cfg.actor_lr_schedule == "cosine":
            frac = min(self.step, cfg.steps) / cfg.steps
            for group in self.actor_opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Critic: TD regression towards r + gamma * (1 - terminal) * V(s').
        target = rew + cfg.discount * (1.0 - terminal) * next_v
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, cfg.tau)
        self.step += 1
        return {
            "value_loss": value_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "adv_mean": adv.mean(),
            "q_mean": q1.detach().mean(),
            "v_mean": v.detach().mean(),
        }

    def train(
        self, buffer: TransitionBuffer, steps: int | None = None, progress: bool = True
    ) -> dict:
        """Train until ``steps`` total gradient steps (default ``config.steps``) are done.

        When ``config.checkpoint_dir`` holds a checkpoint further on than this agent, training
        resumes from it (networks, optimisers, sampling generator, step); a checkpoint is written
        every ``config.checkpoint_every`` steps and at the end. ``steps`` counts from zero, not
        from the resume point, so an interrupted run restarted with the same call finishes
        exactly where an uninterrupted one would. Returns the last step's
        statistics as floats (``value_loss``, ``actor_loss``, ``critic_loss``, ``adv_mean``,
        ``q_mean``, ``v_mean``) plus ``step``.
        """
        cfg = self.config
        steps = cfg.steps if steps is None else int(steps)
        if buffer.obs_dim != self.obs_dim or buffer.act_dim != self.act_dim:
            raise DataValidationError(
                f"IQL.train: buffer 'obs'/'act': expected dims ({self.obs_dim}, {self.act_dim}), "
                f"found ({buffer.obs_dim}, {buffer.act_dim})"
            )
        ckpt = Path(cfg.checkpoint_dir) / CHECKPOINT_NAME if cfg.checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if state.get("step", 0) > self.step:  # never roll an agent back to an older state
                self._load_state(state)
        data = {
            k: torch.as_tensor(getattr(buffer, k), device=self.device)
            for k in ("obs", "act", "reward", "next_obs", "terminal")
        }
        writer = None
        if cfg.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.log_dir, purge_step=self.step + 1 if self.step else None)
        from tqdm.auto import tqdm

        stats: dict[str, torch.Tensor] = {}
        bar = tqdm(total=steps, initial=min(self.step, steps), desc="IQL", disable=not progress)
        try:
            while self.step < steps:
                idx = torch.randint(0, len(buffer), (cfg.batch_size,), generator=self.sample_gen)
                idx = idx.to(self.device)
                stats = self.update({k: v[idx] for k, v in data.items()})
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == steps:
                    values = {k: float(v) for k, v in stats.items()}
                    bar.set_postfix(
                        {k: f"{values[k]:.3g}" for k in ("value_loss", "critic_loss", "actor_loss")}
                    )
                    if writer is not None:
                        for k, v in values.items():
                            writer.add_scalar(f"iql/{k}", v, self.step)
                        writer.add_scalar(
                            "iql/actor_lr", self.actor_opt.param_groups[0]["lr"], self.step
                        )
                if ckpt is not None and (
                    self.step % cfg.checkpoint_every == 0 or self.step == steps
                ):
                    self.save(ckpt)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        out = {k: float(v) for k, v in stats.items()}
        out["step"] = self.step
        return out

    # ------------------------------------------------------------- save/load
    def state_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": self.config.model_dump(mode="json"),
            "step": self.step,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "value": self.value.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "sample_gen": self.sample_gen.get_state(),
            "act_gen": self.act_gen.get_state(),
        }

    def _load_state(self, state: dict) -> None:
        if state.get("format") != _FORMAT:
            raise ValueError(
                f"IQL checkpoint: field 'format': expected {_FORMAT!r}, found {state.get('format')!r}"
            )
        if (state["obs_dim"], state["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"IQL checkpoint: fields 'obs_dim'/'act_dim': expected ({self.obs_dim}, {self.act_dim}), "
                f"found ({state['obs_dim']}, {state['act_dim']})"
            )
        for name in (
            "actor",
            "critic",
            "critic_target",
            "value",
            "actor_opt",
            "critic_opt",
            "value_opt",
        ):
            getattr(self, name).load_state_dict(state[name])
        self.sample_gen.set_state(state["sample_gen"])
        self.act_gen.set_state(state["act_gen"])
        self.step = int(state["step"])

    def save(self, path: str | Path) -> None:
        """Write networks, optimisers, generators, step and config to ``path``, atomically."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> IQL:
        """Rebuild an agent saved by :meth:`save`; ``device`` overrides the saved config's."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = IQLConfig.model_validate(state["config"])
        if device is not None:
            config = config.model_copy(update={"device": device})
        agent = cls(state["obs_dim"], state["act_dim"], config)
        agent._load_state(state)
        return agent
