"""A flat buffer of transitions ``(obs, act, reward, next_obs, terminal)`` for offline RL.

Built from a :class:`~robopref.data.TrajectoryDataset`. Two conventions matter:

* **Truncation is not termination.** Meta-World episodes end because a time limit is reached
  (``truncated``), never because the MDP reached an absorbing state. A time-limit end must not
  cut the bootstrap ``r + gamma * V(s')``: so every transition of a truncated trajectory has
  ``terminal = 0``. A ``Trajectory`` stores ``T`` observations for ``T`` actions, so the last step
  of a truncated trajectory has no next observation and is dropped: a truncated trajectory of
  length ``T`` yields ``T - 1`` transitions (as D4RL's ``qlearning_dataset`` does on timeouts).
* A trajectory whose ``metadata["terminated"]`` is true ended in a true terminal state after its
  last action: it yields ``T`` transitions, the last one with ``terminal = 1`` (its ``next_obs``
  is a copy of the last observation; it is never used because the bootstrap is masked).

Reward normalisation (``normalize_rewards="returns"``, the default) follows IQL's locomotion
setup and Preference Transformer's setup for learned rewards: every reward is multiplied by
``return_scale / (max_return - min_return)``, the returns being the sums of the (relabelled)
rewards over all ``T`` steps of each trajectory. IQL uses ``return_scale = 1000`` with 1000-step
D4RL episodes, PT uses ``max_episode_steps``; both equal the episode length, so by default
``return_scale`` is the length of the longest trajectory (500 for Meta-World). With this scale
the spread of per-step rewards is of order one whatever the scale of the reward model's output.
``reward_scale`` multiplies the rewards after normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robopref.data import DataValidationError, TrajectoryDataset

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TransitionBuffer:
    """``N`` transitions stored as float32 arrays.

    Attributes:
        obs: ``[N, obs_dim]`` observations.
        act: ``[N, act_dim]`` actions.
        reward: ``[N]`` rewards (after relabelling and normalisation).
        next_obs: ``[N, obs_dim]`` observations after the action.
        terminal: ``[N]`` 1.0 where ``next_obs`` is a true terminal state (no bootstrap), else 0.0.
        episode: ``[N]`` int64 index of the trajectory each transition comes from (default: all 0).
        episode_returns: ``[E]`` return of each trajectory, summed over all its ``T`` steps, on
            the same scale as ``reward`` (default: the sums of ``reward`` per episode). Used
            by return-filtered behaviour cloning to rank episodes.
    """

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminal: np.ndarray
    episode: np.ndarray | None = None
    episode_returns: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.float32)
        self.act = np.asarray(self.act, dtype=np.float32)
        self.reward = np.asarray(self.reward, dtype=np.float32)
        self.next_obs = np.asarray(self.next_obs, dtype=np.float32)
        self.terminal = np.asarray(self.terminal, dtype=np.float32)
        if self.episode is None:
            self.episode = np.zeros(len(self.obs), dtype=np.int64)
        self.episode = np.asarray(self.episode, dtype=np.int64)
        if self.episode_returns is None and self.episode.ndim == 1 and len(self.episode):
            if len(self.episode) == len(self.reward) and self.episode.min() >= 0:
                self.episode_returns = np.bincount(
                    self.episode, weights=self.reward.astype(np.float64)
                )
        if self.episode_returns is not None:
            self.episode_returns = np.asarray(self.episode_returns, dtype=np.float64)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`DataValidationError` naming the field whose shape is inconsistent."""
        n = len(self.obs)
        expected = {
            "obs": (2, f"[{n}, obs_dim]"),
            "act": (2, f"[{n}, act_dim]"),
            "reward": (1, f"[{n}]"),
            "next_obs": (2, f"[{n}, {self.obs.shape[-1] if self.obs.ndim == 2 else 'obs_dim'}]"),
            "terminal": (1, f"[{n}]"),
        }
        for name, (ndim, text) in expected.items():
            arr = getattr(self, name)
            if arr.ndim != ndim or len(arr) != n:
                raise DataValidationError(
                    f"TransitionBuffer: field '{name}': expected {text}, found shape {arr.shape}"
                )
        if self.next_obs.shape != self.obs.shape:
            raise DataValidationError(
                f"TransitionBuffer: field 'next_obs': expected shape {self.obs.shape}, "
                f"found {self.next_obs.shape}"
            )
        if n == 0:
            raise DataValidationError(
                "TransitionBuffer: field 'obs': expected N >= 1 transitions, found 0"
            )
        if self.episode.shape != (n,):
            raise DataValidationError(
                f"TransitionBuffer: field 'episode': expected [{n}], found shape {self.episode.shape}"
            )
        returns = self.episode_returns
        num_episodes = len(returns) if returns is not None and returns.ndim == 1 else 0
        if self.episode.min() < 0 or self.episode.max() >= num_episodes:
            raise DataValidationError(
                "TransitionBuffer: fields 'episode'/'episode_returns': expected episode indices "
                f"in [0, {num_episodes}), found [{self.episode.min()}, {self.episode.max()}]"
            )

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def act_dim(self) -> int:
        return self.act.shape[1]

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Return ``batch_size`` transitions drawn uniformly with replacement."""
        idx = rng.integers(0, len(self), size=batch_size)
        return {k: getattr(self, k)[idx] for k in ("obs", "act", "reward", "next_obs", "terminal")}

    @classmethod
    def from_dataset(
        cls,
        dataset: TrajectoryDataset,
        reward_fn: RewardFn | None = None,
        reward_scale: float = 1.0,
        normalize_rewards: Literal["none", "returns"] = "returns",
        return_scale: float | None = None,
        clip_actions: bool = True,
    ) -> TransitionBuffer:
        """Flatten a dataset of trajectories into transitions.

        Args:
            dataset: trajectories with vector observations (``Trajectory.state``, ``[T, obs_dim]``)
                and actions ``[T, act_dim]``.
            reward_fn: optional relabelling, ``reward_fn(obs [T, obs_dim], act [T, act_dim]) -> [T]``
                (e.g. a learned reward model's ``predict``); called once per trajectory. ``None``
                keeps ``Trajectory.rewards``.
            reward_scale: multiplies the rewards after normalisation.
            normalize_rewards: ``"returns"`` multiplies rewards by
                ``return_scale / (max_return - min_return)`` over the dataset's trajectories
                (IQL / Preference Transformer); ``"none"`` leaves them as they are. When all
                returns are equal the rewards are left unscaled.
            return_scale: the numerator of the normalisation; ``None`` = longest trajectory length.
            clip_actions: clip actions to ``[-1, 1]`` (the policy's action range; scripted
                policies with added noise can leave it).

        Returns:
            The buffer. A truncated trajectory of length ``T`` gives ``T - 1`` transitions, one
            with ``metadata["terminated"]`` true gives ``T`` (see the module docstring).
            ``episode`` is the trajectory's index in ``dataset``; ``episode_returns`` holds every
            trajectory's return over all ``T`` steps, scaled like the rewards.
        """
        if normalize_rewards not in ("none", "returns"):
            raise ValueError(
                f"normalize_rewards: expected 'none' or 'returns', found {normalize_rewards!r}"
            )
        if len(dataset) == 0:
            raise DataValidationError("TransitionBuffer.from_dataset: dataset has no trajectories")
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("obs", "act", "reward", "next_obs", "terminal", "episode")
        }
        returns = []
        for i, traj in enumerate(dataset):
            obs = np.asarray(traj.state, dtype=np.float64)
            act = np.asarray(traj.actions, dtype=np.float64)
            T = len(traj)
            if obs.ndim != 2:
                raise DataValidationError(
                    f"trajectory {i}: field 'state': expected [{T}, obs_dim], found shape {obs.shape}"
                )
            if reward_fn is None:
                rew = np.asarray(traj.rewards, dtype=np.float64)
            else:
                rew = np.asarray(reward_fn(obs, act), dtype=np.float64).reshape(-1)
                if rew.shape != (T,):
                    raise DataValidationError(
                        f"trajectory {i}: reward_fn output: expected shape ({T},), found {rew.shape}"
                    )
            returns.append(rew.sum())
            terminated = bool(traj.metadata.get("terminated", False))
            n = T if terminated else T - 1
            if n <= 0:
                continue
            next_obs = np.concatenate([obs[1:], obs[-1:]])[:n]
            terminal = np.zeros(n)
            if terminated:
                terminal[-1] = 1.0
            for key, arr in (
                ("obs", obs[:n]),
                ("act", act[:n]),
                ("reward", rew[:n]),
                ("next_obs", next_obs),
                ("terminal", terminal),
                ("episode", np.full(n, i, dtype=np.int64)),
            ):
                parts[key].append(arr)
        if not parts["obs"]:
            raise DataValidationError(
                "TransitionBuffer.from_dataset: no transitions (every trajectory has length <= 1)"
            )
        data = {k: np.concatenate(v) for k, v in parts.items()}
        factor = reward_scale
        if normalize_rewards == "returns":
            spread = max(returns) - min(returns)
            if spread > 0:
                scale = return_scale if return_scale is not None else max(len(t) for t in dataset)
                factor *= scale / spread
        data["reward"] = data["reward"] * factor
        data["episode_returns"] = np.asarray(returns) * factor
        if clip_actions:
            data["act"] = np.clip(data["act"], -1.0, 1.0)
        return cls(**data)
