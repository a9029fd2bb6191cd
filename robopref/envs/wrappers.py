"""Learned-reward wrappers: the OT visual reward of RAPL for an RL agent on state observations.

The OT feature-matching reward (:class:`robopref.rewards.ot_reward.OTReward`) is a function of
the *whole* video of an episode: the plan matches every rollout frame with every demo frame.
:class:`OTRewardWrapper` renders a frame after each step (every ``frame_stride``-th step and the
last one; :class:`robopref.envs.render.FrameRenderer`), embeds it once, and offers two ways to
turn the episode-level reward into per-step rewards:

* ``mode="episode"`` (RAPL/ROT's choice; off-policy agents): steps return 0 until the episode
  ends; the last step computes the OT rewards of the full video, returns the last transition's
  reward and puts the rewards of every transition in ``info["ot_rewards"]`` ``[T]``.
  :class:`OTRelabelCallback` (stable-baselines3) then overwrites the rewards of the episode's
  transitions in the replay buffer before the next gradient step, so the agent learns from
  exactly the full-episode OT rewards.
* ``mode="prefix"`` (any agent, e.g. PPO): each rendered step computes the OT rewards of the
  video so far and returns the reward of its newest frame (an online approximation; costs one
  Sinkhorn per rendered step against each demo).

Frames are rendered after each action, so transition t is rewarded by the frame showing its
result. With ``frame_stride = s`` a rendered frame also rewards the ``s - 1`` transitions before
it (held). ``info["gt_reward"]`` always carries the environment's own reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from robopref.envs.render import FrameRenderer, RenderConfig


class OTRewardWrapper(gym.Wrapper):
    """Replace the env reward by the OT visual reward of ``reward``.

    Args:
        env: a Meta-World env of :func:`robopref.envs.make_env` (state observations for the agent).
        reward: an :class:`~robopref.rewards.ot_reward.OTReward` (``embed`` and
            ``reward_from_embeddings``) built with the same camera and image size.
        render: :class:`RenderConfig` of the reward's frames.
        mode: ``"episode"`` or ``"prefix"`` (see the module docstring).
    """

    def __init__(
        self,
        env: gym.Env,
        reward: Any,
        render: RenderConfig | None = None,
        mode: Literal["episode", "prefix"] = "episode",
    ) -> None:
        super().__init__(env)
        if mode not in ("episode", "prefix"):
            raise ValueError(f"mode: expected 'episode' or 'prefix', found {mode!r}")
        self.reward_model = reward
        self.mode = mode
        self.renderer = FrameRenderer(env, render)
        self.stride = self.renderer.config.frame_stride
        self._emb: list[np.ndarray] = []  # embeddings of the rendered frames
        self._frame_of_step: list[int] = []  # index in _emb of the frame rewarding transition t
        self._last_reward = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._emb, self._frame_of_step, self._last_reward = [], [], 0.0
        return obs, info

    def _embed_current(self) -> None:
        frame = self.renderer.render()
        self._emb.append(np.asarray(self.reward_model.embed(frame[None]))[0].astype(np.float64))

    def episode_rewards(self) -> np.ndarray:
        """Per-transition OT rewards ``[t]`` of the episode so far (full-video plan)."""
        if not self._emb:
            return np.zeros(0)
        per_frame = self.reward_model.reward_from_embeddings(np.stack(self._emb))
        return per_frame[np.asarray(self._frame_of_step)]

    def step(self, action):
        obs, gt_reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        self._frame_of_step.append(-1)
        render_now = len(self._frame_of_step) % self.stride == 0 or done
        if render_now:
            self._embed_current()
            k = len(self._emb) - 1
            # this frame rewards its transition and the held ones since the previous frame
            for i in range(len(self._frame_of_step) - 1, -1, -1):
                if self._frame_of_step[i] != -1:
                    break
                self._frame_of_step[i] = k
        info = dict(info, gt_reward=float(gt_reward))
        if self.mode == "prefix":
            if render_now:
                self._last_reward = float(
                    self.reward_model.reward_from_embeddings(np.stack(self._emb))[-1]
                )
            reward = self._last_reward
        else:
            reward = 0.0
            if done:
                rewards = self.episode_rewards()
                info["ot_rewards"] = rewards
                reward = float(rewards[-1])
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.renderer.close()
        super().close()


def replay_rewards(
    env: gym.Env,
    seed: int,
    actions: np.ndarray,
    observations: np.ndarray | None = None,
    atol: float = 1e-4,
) -> np.ndarray:
    """The rewards ``[T]`` that ``env`` (a reward wrapper such as :class:`OTRewardWrapper` or
    :class:`StateRewardWrapper`, or a plain env) pays for ``actions [T, A]`` replayed from
    ``env.reset(seed=seed)``: what an agent would have been paid online for the same transitions
    (e.g. to reward demonstrations put in a replay buffer). With :class:`OTRewardWrapper` in
    ``mode="episode"`` these are the full-episode OT rewards (``info["ot_rewards"]`` of the last
    step), so the episode must end at the last action.

    ``observations [T, D]``, when given, are compared with the replayed ones (before each
    action); a difference above ``atol`` raises ``ValueError`` (not a replay of that episode).
    """
    actions = np.asarray(actions)
    obs, _ = env.reset(seed=int(seed))
    rewards, done, info = [], False, {}
    for t, action in enumerate(actions):
        if done:
            raise ValueError(
                f"replay (seed {seed}): the episode ended at step {t} of {len(actions)}"
            )
        if observations is not None and np.abs(obs - observations[t]).max() > atol:
            raise ValueError(
                f"replay (seed {seed}): observation at step {t}: expected the stored one, found a "
                f"difference of {np.abs(obs - observations[t]).max():.2e} > atol={atol}"
            )
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(float(reward))
        done = terminated or truncated
    if "ot_rewards" in info:
        return np.asarray(info["ot_rewards"], dtype=np.float64)
    if isinstance(env, OTRewardWrapper) and env.mode == "episode":
        raise ValueError(
            f"replay (seed {seed}): expected the episode to end at its last action "
            f"({len(actions)} steps) to get its OT rewards, found it still running"
        )
    return np.asarray(rewards, dtype=np.float64)


class StateRewardWrapper(gym.Wrapper):
    """Replace the env reward by ``reward_fn(next_obs [39]) -> float`` (e.g. a learned RLHF reward
    on states); ``info["gt_reward"]`` keeps the env's reward."""

    def __init__(self, env: gym.Env, reward_fn: Callable[[np.ndarray], float]) -> None:
        super().__init__(env)
        self.reward_fn = reward_fn

    def step(self, action):
        obs, gt_reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, gt_reward=float(gt_reward))
        return obs, float(self.reward_fn(obs)), terminated, truncated, info


class FixedConfigurationWrapper(gym.Wrapper):
    """Every ``reset`` starts from the configuration (object and goal positions) of
    ``reset(seed=configuration_seed)``, whatever seed the caller passes: one scene, as in RAPL's
    and ROT's RL experiments, where the reward compares the agent's video with demos of that
    scene (a goal the camera barely shows cannot be rewarded from pixels otherwise)."""

    def __init__(self, env: gym.Env, configuration_seed: int) -> None:
        super().__init__(env)
        self.configuration_seed = int(configuration_seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.env.reset(seed=self.configuration_seed, options=options)
