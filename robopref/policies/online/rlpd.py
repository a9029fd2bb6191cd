"""SAC with demonstrations used the RLPD way (Ball, Smith, Kostrikov and Levine 2023,
arXiv 2302.02948), on stable-baselines3.

RLPD's three ingredients, as options of SB3's SAC:

* **symmetric sampling**: every gradient step's batch is ``demo_fraction`` (RLPD: one half)
  demonstration transitions from a separate, fixed demo buffer and the rest online transitions
  (:class:`MixedReplayBuffer`); demos are never evicted and never outnumbered by online data;
* **LayerNorm critics**: a LayerNorm after every hidden linear layer of each Q-network
  (:class:`LayerNormSACPolicy`), which bounds Q-values extrapolated to out-of-data actions;
* **update-to-data ratio** ``utd`` > 1: ``utd`` gradient steps per environment transition
  (``gradient_steps = utd * num_envs`` per vector-env step).

Not RLPD's: the 10-critic ensemble with a random 2-critic minimum (SB3 takes the minimum over its
``n_critics``; kept at 2 here, since every critic costs CPU time per update).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from pydantic import Field
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from robopref.config import StrictModel


class RLPDConfig(StrictModel):
    """RLPD options (``rl.rlpd`` of the RAPL recipe)."""

    demo_fraction: float = Field(0.5, ge=0.0, lt=1.0)
    """Share of each batch drawn from the demos."""
    utd: int = Field(2, ge=1)
    """Gradient steps per environment transition."""
    layer_norm: bool = True
    """LayerNorm after every hidden layer of the critics."""
    num_envs: int = Field(1, ge=1)
    """Environments stepped together (DummyVecEnv)."""
    batch_size: int = Field(256, ge=2)
    """Transitions per gradient step (demos and online together)."""
    net_arch: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and the critics."""


def demo_buffer(transitions: Iterable[tuple], observation_space, action_space, device="cpu"):
    """A full SB3 ``ReplayBuffer`` holding exactly ``transitions`` (``(obs [D], next_obs [D],
    action [A], reward)`` tuples), ``done=False`` (demo episodes end by the time limit, which SAC
    bootstraps through)."""
    transitions = list(transitions)
    if not transitions:
        raise ValueError("rl.rlpd: needs demo transitions (rl.fixed_configuration: true)")
    buf = ReplayBuffer(len(transitions), observation_space, action_space, device=device)
    for obs, next_obs, action, reward in transitions:
        buf.add(np.asarray(obs)[None], np.asarray(next_obs)[None], np.asarray(action)[None],
                np.array([reward]), np.array([False]), [{}])  # fmt: skip
    return buf


class MixedReplayBuffer(ReplayBuffer):
    """SB3's online replay buffer whose ``sample(n)`` returns ``round(demo_fraction * n)``
    transitions of ``demo`` (uniformly, with replacement) followed by the rest from the online
    data. Pass ``demo`` and ``demo_fraction`` through SAC's ``replay_buffer_kwargs``."""

    def __init__(self, *args, demo=None, demo_fraction: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if demo is None or demo.size() == 0:
            raise ValueError("MixedReplayBuffer: demo buffer is empty")
        self.demo = demo
        self.demo_fraction = float(demo_fraction)

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
        n_demo = int(round(self.demo_fraction * batch_size))
        online = super().sample(batch_size - n_demo, env=env)
        if n_demo == 0:
            return online
        demo = self.demo.sample(n_demo, env=env)
        # discounts (n-step buffers only) are None in both halves
        return ReplayBufferSamples(
            *(None if d is None else torch.cat([d, o]) for d, o in zip(demo, online, strict=True))
        )


class LayerNormCritic(ContinuousCritic):
    """SB3's twin critic with ``Linear -> LayerNorm -> ReLU`` hidden layers, ..., ``Linear(1)``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        in_dim = kwargs["features_dim"] + get_action_dim(self.action_space)
        self.q_networks = []
        for idx in range(self.n_critics):
            layers = create_mlp(in_dim, 1, kwargs["net_arch"], kwargs["activation_fn"],
                                post_linear_modules=[nn.LayerNorm])  # fmt: skip
            q_net = nn.Sequential(*layers)
            self.add_module(f"qf{idx}", q_net)  # replaces the plain MLP of the same name
            self.q_networks.append(q_net)


class LayerNormSACPolicy(SACPolicy):
    """An SB3 ``SACPolicy`` whose critics (and their targets) are :class:`LayerNormCritic`."""

    def make_critic(self, features_extractor=None) -> ContinuousCritic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return LayerNormCritic(**kwargs).to(self.device)


def make_rlpd_sac(env, demos, cfg: RLPDConfig, *, learning_starts: int, seed: int,
                  device: str = "auto", tensorboard_log: str | None = None):  # fmt: skip
    """SB3 ``SAC`` on ``env`` (a VecEnv of ``cfg.num_envs`` envs, or one env when 1) with RLPD's
    sampling, critics and update-to-data ratio; ``demos`` is a :func:`demo_buffer`."""
    policy = LayerNormSACPolicy if cfg.layer_norm else "MlpPolicy"
    return SAC(
        policy,
        env,
        learning_starts=learning_starts,
        batch_size=cfg.batch_size,
        train_freq=1,  # every vector step: num_envs transitions
        gradient_steps=cfg.utd * cfg.num_envs,
        replay_buffer_class=MixedReplayBuffer,
        replay_buffer_kwargs={"demo": demos, "demo_fraction": cfg.demo_fraction},
        policy_kwargs={"net_arch": list(cfg.net_arch)},
        seed=seed,
        device=device,
        verbose=0,
        tensorboard_log=tensorboard_log,
    )
