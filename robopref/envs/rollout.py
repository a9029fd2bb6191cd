"""Run one episode of a policy in a Meta-World env and return its arrays; evaluate a policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from robopref.envs.tasks import ACT_DIM, OBS_DIM, check_task, make_env
from robopref.progress import track

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class Episode:
    """Arrays of one episode of T steps (``observations[t]`` is the observation *before* action t).

    Attributes:
        observations: ``[T, 39]`` float32.
        actions: ``[T, 4]`` float32, the actions executed (after noise and clipping to [-1, 1]).
        rewards: ``[T]`` float64, Meta-World's dense reward (v2 reward functions, in [0, 10]).
        successes: ``[T]`` bool, the task's success flag after each step.
        dones: ``[T]`` bool, True at the last step only.
        terminated: whether the episode ended by termination (success) rather than the time limit.
        final_observation: ``[39]`` float32, the observation after the last action.
        rand_vec: the object/goal configuration of the episode (Meta-World's ``rand_vec``).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    successes: np.ndarray
    dones: np.ndarray
    terminated: bool
    final_observation: np.ndarray
    rand_vec: np.ndarray

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


def run_episode(
    env: gym.Env,
    policy: Policy | None,
    seed: int,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    obs_offset: np.ndarray | None = None,
) -> Episode:
    """Roll out one episode.

    Args:
        env: an env of :func:`make_env`.
        policy: ``obs [39] -> action [4]``; ``None`` draws uniform random actions in [-1, 1].
        seed: passed to ``env.reset(seed=seed)``; fixes the object/goal configuration.
        noise: standard deviation of Gaussian noise added to each action component (action units;
            the action range is [-1, 1]) before clipping.
        rng: generator of the noise and random actions (default: ``default_rng([seed, 1])``).
        obs_offset: ``[39]`` added to the observation the *policy* sees (not the stored one);
            used for goal-mismatched episodes.
    """
    rng = rng if rng is not None else np.random.default_rng([seed, 1])
    obs, info = env.reset(seed=seed)
    rand_vec = info["rand_vec"]
    observations, actions, rewards, successes = [], [], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        if policy is None:
            action = rng.uniform(-1.0, 1.0, size=ACT_DIM)
        else:
            action = np.asarray(policy(obs if obs_offset is None else obs + obs_offset), np.float64)
            if action.shape != (ACT_DIM,):
                raise ValueError(
                    f"policy output: field 'action': expected shape ({ACT_DIM},), found {action.shape}"
                )
            if noise > 0:
                action = action + noise * rng.standard_normal(ACT_DIM)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        successes.append(info["success"])
    T = len(actions)
    dones = np.zeros(T, dtype=bool)
    dones[-1] = True
    return Episode(
        observations=np.asarray(observations, dtype=np.float32).reshape(T, OBS_DIM),
        actions=np.asarray(actions, dtype=np.float32).reshape(T, ACT_DIM),
        rewards=np.asarray(rewards, dtype=np.float64),
        successes=np.asarray(successes, dtype=bool),
        dones=dones,
        terminated=bool(terminated),
        final_observation=np.asarray(obs, dtype=np.float32),
        rand_vec=np.asarray(rand_vec, dtype=np.float64),
    )


def evaluate_on_task(
    policy: Policy,
    task: str,
    num_episodes: int = 50,
    seed: int = 0,
    max_episode_steps: int = 200,
    goal_observable: bool = True,
    terminate_on_success: bool = False,
    label: str | None = None,
) -> dict[str, float]:
    """Success rate and returns of ``policy`` over ``num_episodes`` episodes of ``task``.

    Episode ``i`` is reset with seed ``seed + i`` (the same configurations for every policy
    evaluated with the same ``seed``). An episode counts as a success if the success flag is
    set at any step (Meta-World's convention). With a ``label`` (e.g. ``eval[pearl] 50
    episodes``) a progress bar counts the episodes.

    Returns:
        ``success_rate`` in [0, 1], ``mean_return`` (sum of dense rewards per episode),
        ``mean_length`` (steps per episode; ``max_episode_steps`` unless ``terminate_on_success``),
        ``mean_success_step`` (1-based step of the first success, averaged over successful
        episodes; NaN if none) and ``num_episodes``.
    """
    check_task(task)
    if num_episodes < 1:
        raise ValueError(f"num_episodes: expected >= 1, found {num_episodes}")
    env = make_env(
        task,
        seed=seed,
        max_episode_steps=max_episode_steps,
        goal_observable=goal_observable,
        terminate_on_success=terminate_on_success,
    )
    returns, lengths, success, first = [], [], [], []
    try:
        episodes = range(num_episodes)
        for i in track(episodes, label or "eval", unit="ep", enabled=label is not None):
            ep = run_episode(env, policy, seed=seed + i)
            returns.append(ep.episode_return)
            lengths.append(len(ep.actions))
            success.append(ep.successes.any())
            if ep.successes.any():
                first.append(int(np.argmax(ep.successes)) + 1)
    finally:
        env.close()
    return {
        "success_rate": float(np.mean(success)),
        "mean_return": float(np.mean(returns)),
        "mean_length": float(np.mean(lengths)),
        "mean_success_step": float(np.mean(first)) if first else float("nan"),
        "num_episodes": num_episodes,
    }
