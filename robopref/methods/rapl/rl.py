"""The RL stage of the ``rapl`` recipe: SAC (or RLPD) on state observations, paid by one of the
compared rewards, evaluated by Meta-World's success flag.

A reward is an :class:`RLReward`: it installs itself on a training env (:meth:`RLReward.wrap`)
and pays the scene demos' transitions the same way (:meth:`RLReward.demo_rewards`, for
``rl.demos_in_buffer`` and RLPD's demo buffer). What every SAC run shares (the scene, the
horizon, the demos) is one :class:`RLSetup`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np

from robopref.envs import Episode, evaluate_on_task, make_env, run_episode
from robopref.envs.render import FrameRenderer, replay_frames
from robopref.envs.tasks import ScriptedPolicy
from robopref.methods.rapl.config import Config
from robopref.progress import step
from robopref.rewards import MLPReward
from robopref.rewards.ot_reward import OTReward

Transition = tuple[np.ndarray, np.ndarray, np.ndarray, float]  # (obs, next_obs, action, reward)


@dataclass
class RLSetup:
    """What every SAC run of one recipe run shares.

    Attributes:
        config: the recipe's config.
        horizon: episode length of the RL env.
        demos: demo videos ``[T', H, W, 3]`` the OT rewards match frames against.
        demo_episodes: the scene demos (states, actions) whose transitions go in the buffer
            (empty without ``rl.fixed_configuration``).
        demo_success: share of the scene demos that succeed (NaN without scene demos).
    """

    config: Config
    horizon: int
    demos: list[np.ndarray]
    demo_episodes: list[Episode] = field(default_factory=list)
    demo_success: float = float("nan")

    def make_env(self, reward: RLReward) -> gym.Env:
        """One training env: the RL scene (with ``rl.fixed_configuration``), paid by ``reward``."""
        from robopref.envs.wrappers import FixedConfigurationWrapper

        config = self.config
        env = make_env(config.task, seed=config.rl_scene, max_episode_steps=self.horizon)
        if config.rl.fixed_configuration:
            env = FixedConfigurationWrapper(env, config.rl_scene)
        return reward.wrap(env)

    def demo_transitions(self, reward: RLReward) -> list[Transition]:
        """The scene demos' transitions, paid by ``reward`` (for the replay or demo buffer)."""
        rl = self.config.rl
        if not (rl.demos_in_buffer or rl.algo == "rlpd"):
            return []
        out: list[Transition] = []
        for ep in self.demo_episodes:
            nxt = next_observations(ep)
            out += list(zip(ep.observations, nxt, ep.actions, reward.demo_rewards(self, ep, nxt)))
        return out


class RLReward(Protocol):
    """A reward SAC can be trained on."""

    def wrap(self, env: gym.Env) -> gym.Env:
        """``env`` paying this reward."""
        ...

    def demo_rewards(self, setup: RLSetup, episode: Episode, next_obs: np.ndarray) -> np.ndarray:
        """``[T]`` rewards of a scene demo's transitions."""
        ...


class GroundTruthReward:
    """Meta-World's own reward."""

    def wrap(self, env: gym.Env) -> gym.Env:
        return env

    def demo_rewards(self, setup: RLSetup, episode: Episode, next_obs: np.ndarray) -> np.ndarray:
        return episode.rewards


@dataclass
class OTRLReward:
    """The OT reward of rendered frames against the demos (``affine`` already set on ``ot``)."""

    ot: OTReward
    config: Config

    def wrap(self, env: gym.Env) -> gym.Env:
        from robopref.envs.wrappers import OTRewardWrapper

        return OTRewardWrapper(env, self.ot, self.config.render, mode=self.config.rl.mode)

    def demo_rewards(self, setup: RLSetup, episode: Episode, next_obs: np.ndarray) -> np.ndarray:
        # the demo's actions replayed through the wrapper: frames rendered *after* each action,
        # as online (the demo video's frames come before each action, so rewarding with them
        # would pay demo transitions one frame stride late)
        from robopref.envs.wrappers import replay_rewards

        env = setup.make_env(self)
        try:
            return replay_rewards(env, self.config.rl_scene, episode.actions, episode.observations)
        finally:
            env.close()


@dataclass
class StateRLReward:
    """An MLP reward of the state, mapped affinely: ``scale * model(obs) + shift``."""

    model: MLPReward
    scale: float
    shift: float

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.scale * self.model.predict(obs).astype(np.float64) + self.shift

    def wrap(self, env: gym.Env) -> gym.Env:
        from robopref.envs.wrappers import StateRewardWrapper

        return StateRewardWrapper(env, lambda obs: float(self(obs[None])[0]))

    def demo_rewards(self, setup: RLSetup, episode: Episode, next_obs: np.ndarray) -> np.ndarray:
        return self(next_obs)


def next_observations(ep: Episode) -> np.ndarray:
    """``[T, 39]`` the observation after each action of an episode."""
    return np.concatenate([ep.observations[1:], ep.final_observation[None]])


def scene_demos(config: Config, horizon: int) -> tuple[list[np.ndarray], float, list[Episode]]:
    """``num_demos`` scripted-expert videos ``[T', H, W, 3]`` of the RL scene (the first without
    action noise), the fraction of them that succeed, and their episodes (states, actions)."""
    scene = config.rl_scene
    env = make_env(config.task, seed=scene, max_episode_steps=horizon)
    policy = ScriptedPolicy(config.task)
    videos, successes, episodes = [], [], []
    with FrameRenderer(env, config.render) as renderer:
        for k in range(config.num_demos):
            noise = config.rl.demo_noise if k else 0.0
            ep = run_episode(
                env, policy, seed=scene, noise=noise, rng=np.random.default_rng([scene, k])
            )
            frames = replay_frames(env, renderer, scene, ep.actions)
            videos.append(frames[:: config.render.frame_stride])
            successes.append(bool(ep.successes.any()))
            episodes.append(ep)
    env.close()
    return videos, float(np.mean(successes)), episodes


def train_sac(
    setup: RLSetup, name: str, reward: RLReward, log_dir: Path, transitions: list[Transition]
) -> dict:
    """SAC on state observations paid by ``reward``; ``transitions`` go in the replay (or RLPD's
    demo) buffer before training. TensorBoard logs (SB3's, with the GT return and success of the
    training episodes) go to ``log_dir/sac_NAME_*``. Returns the RL row of this reward."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import CallbackList

    from robopref.envs.wrappers import OTRewardWrapper
    from robopref.policies.online.callbacks import GroundTruthLogger, OTRelabelCallback

    config, rl = setup.config, setup.config.rl
    env = setup.make_env(reward)
    gt_logger = GroundTruthLogger()
    callbacks = [gt_logger]
    if isinstance(env, OTRewardWrapper) and rl.mode == "episode":
        callbacks.insert(0, OTRelabelCallback())
    common = {"learning_starts": rl.learning_starts, "seed": config.seed, "device": config.device,
              "tensorboard_log": str(log_dir)}  # fmt: skip
    if rl.algo == "rlpd":
        from stable_baselines3.common.vec_env import DummyVecEnv

        from robopref.policies.online.rlpd import demo_buffer, make_rlpd_sac

        makers = [lambda: env] + [lambda: setup.make_env(reward)] * (rl.rlpd.num_envs - 1)
        demos = demo_buffer(transitions, env.observation_space, env.action_space)
        agent = make_rlpd_sac(DummyVecEnv(makers), demos, rl.rlpd, **common)
    else:
        agent = SAC("MlpPolicy", env, verbose=0, **common)
        for obs, next_obs, action, r in transitions:
            # done=False: demo episodes end by the time limit, which SAC bootstraps through
            agent.replay_buffer.add(obs[None], next_obs[None], action[None], np.array([r]),
                                    np.array([False]), [{}])  # fmt: skip
    started = time.time()
    agent.learn(rl.total_steps, callback=CallbackList(callbacks), tb_log_name=f"sac_{name}")
    train_seconds = time.time() - started
    env.close()
    last = slice(-20, None)  # the last 20 training episodes (stochastic policy), GT terms
    return {
        "reward": name,
        "seconds": time.time() - started,
        "train_seconds": train_seconds,
        "algo": rl.algo,
        "env_steps": int(agent.num_timesteps),
        "gradient_steps": int(agent._n_updates),
        "buffer_transitions": int(agent.replay_buffer.size()),
        **_evaluate_agent(setup, agent),
        "train_gt_return": float(np.mean(gt_logger.returns[last])) if gt_logger.returns else 0.0,
        "train_success": float(np.mean(gt_logger.successes[last])) if gt_logger.successes else 0.0,
    }


def _evaluate_agent(setup: RLSetup, agent) -> dict:
    config, rl = setup.config, setup.config.rl
    task, horizon = config.task, setup.horizon

    def policy(deterministic: bool):
        return lambda obs: agent.predict(obs, deterministic=deterministic)[0]

    if not rl.fixed_configuration:
        return evaluate_on_task(policy(True), task, rl.eval_episodes, seed=10_000 + config.seed,
                               max_episode_steps=horizon)  # fmt: skip
    scene = config.rl_scene
    res = evaluate_on_task(policy(True), task, 1, seed=scene, max_episode_steps=horizon)
    # the deterministic policy in one scene gives one episode; the sampled policy's success over
    # eval_episodes episodes of the scene says how reliably it got there
    sampled = [
        evaluate_on_task(policy(False), task, 1, seed=scene, max_episode_steps=horizon)
        for _ in range(rl.eval_episodes)
    ]
    res["sampled_success_rate"] = float(np.mean([s["success_rate"] for s in sampled]))
    res["sampled_episodes"] = len(sampled)
    return res


def run_sac(setup: RLSetup, name: str, reward: RLReward, log_dir: Path) -> dict:
    """One SAC run with a labelled progress line; its row carries ``demo_success``."""
    with step(f"rl[{name}] {setup.config.rl.total_steps} steps"):
        row = train_sac(setup, name, reward, log_dir, setup.demo_transitions(reward))
    return {**row, "demo_success": setup.demo_success}


def run_gt_rl(config: Config, log_dir: str | Path) -> dict:
    """The RL stage alone on Meta-World's GT reward, in the RL scene with its scripted demos (for
    ``rl.demos_in_buffer`` / ``rl.algo: rlpd``): no data, labels or learned rewards. A baseline
    for the learned rewards, and a check that the RL settings can solve the task at all."""
    horizon = config.rl.max_episode_steps or config.collect_config.max_episode_steps
    demos, demo_success, episodes = scene_demos(config, horizon)
    setup = RLSetup(config, horizon, demos, episodes, demo_success)
    gt = GroundTruthReward()
    transitions = [
        t
        for ep in episodes
        for t in zip(ep.observations, next_observations(ep), ep.actions, ep.rewards)
    ]
    row = train_sac(setup, "gt", gt, Path(log_dir), transitions)
    return {**row, "demo_success": demo_success, "task": config.task, "seed": config.seed}
