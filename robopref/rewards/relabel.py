"""Learned rewards into a dataset: each step's reward under a saved reward model.

:func:`relabel_dataset` returns a copy of a dataset whose ``rewards`` are the model's, with the
recorded rewards kept as ``Trajectory.extras["original_rewards"]`` (when the source recorded
any) and ``metadata["reward_source"]`` saying where the rewards came from. With ``normalise``
(what ``robopref relabel`` writes) the rewards are z-scored and the raw ones kept as
``extras["learned_reward_raw"]``. The exporters write such a dataset's rewards as LeRobot's
``next.reward`` (the original as ``next.original_reward``, the raw learned reward as
``robopref.learned_reward_raw``) or robomimic's ``rewards`` (the others under ``extras/``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data import DataValidationError, TrajectoryDataset
from robopref.rewards.models import RewardModel, load_reward


def load_reward_checkpoint(path: str | os.PathLike) -> RewardModel:
    """The reward model saved at ``path``; anything else is one :class:`DataValidationError`."""
    p = Path(path)
    if not p.is_file():
        raise DataValidationError(f"{path}: --reward: expected a reward checkpoint file, found "
                                  f"{'a folder' if p.is_dir() else 'nothing'}")  # fmt: skip
    try:
        return load_reward(p)
    except Exception as e:  # torch.load raises many kinds for a file that is not a checkpoint
        raise DataValidationError(
            f"{path}: --reward: expected a reward checkpoint (robopref train-reward), found "
            f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        ) from e


def relabel_dataset(
    dataset: TrajectoryDataset,
    model: RewardModel,
    source: str = "",
    obs_key: str = "state",
    normalise: bool = False,
    batch_size: int = 65536,
) -> TrajectoryDataset:
    """A copy of ``dataset`` with the per-step rewards of ``model`` (see the module docstring).

    The model reads each trajectory's ``obs_key`` observation (``[T, obs_dim]``, or frames
    ``[T, H, W, 3]`` for an image reward, scored in batches) and, unless
    it is a state-only reward, its ``actions``. With ``normalise`` the rewards are z-scored
    over every step of the data set (``(raw - mean) / std``, the raw ones kept as
    ``extras["learned_reward_raw"]``, mean and std in ``metadata["reward_source"]``), so that
    offline learners see the same scale whatever the reward model's. Raises
    :class:`DataValidationError` naming the checkpoint when the dataset's sizes are not the
    model's.
    """
    raw = step_rewards(model, dataset, obs_key, source, batch_size)
    flat = np.concatenate(raw) if raw else np.zeros(0)
    mean, std = (float(flat.mean()), float(flat.std())) if len(flat) else (0.0, 1.0)
    scale = std if std > 1e-12 else 1.0  # a constant reward stays constant (zero)
    # a file relabelled before holds learned rewards: its originals are only the kept ones
    learned_before = dataset.metadata.get("reward_source", {}).get("kind") == "learned"
    recorded = dataset.metadata.get("rewards_recorded", True) is not False and not learned_before
    trajectories = []
    for t, r in zip(dataset, raw):
        extras = {k: v for k, v in t.extras.items() if k != "learned_reward_raw"}
        if recorded and "original_rewards" not in extras:
            extras["original_rewards"] = t.rewards
        rewards = r
        if normalise:
            extras["learned_reward_raw"] = r
            rewards = (r - mean) / scale
        trajectories.append(dataclasses.replace(t, rewards=rewards, extras=extras))
    metadata: dict[str, Any] = dict(dataset.metadata)
    metadata.pop("rewards_recorded", None)
    metadata["reward_source"] = {
        "kind": "learned",
        "checkpoint": source,
        "model_class": type(model).__name__,
        "obs_key": obs_key,
        "obs_dim": model.obs_dim,
        "obs_shape": list(getattr(model, "obs_shape", (model.obs_dim,))),
        "act_dim": model.act_dim,
        "normalisation": {"mean": mean, "std": scale} if normalise else None,
    }
    return TrajectoryDataset(trajectories, dataset.queries, metadata)


def step_rewards(
    model: RewardModel,
    dataset: TrajectoryDataset,
    obs_key: str = "state",
    source: str = "",
    batch_size: int = 65536,
) -> list[np.ndarray]:
    """The model's per-step rewards of every trajectory (``[T]`` float64 arrays)."""
    where = source or "reward model"
    return [_learned(t, i, model, obs_key, where, batch_size) for i, t in enumerate(dataset)]


def _learned(t, i: int, model: RewardModel, obs_key: str, where: str, batch_size: int):
    """The model's ``[T]`` float64 rewards of trajectory ``i``, its sizes checked first."""
    obs = t.observations
    if isinstance(obs, dict):
        if obs_key not in obs:
            raise DataValidationError(
                f"{where}: expected a dataset with a {obs_key!r} observation for this reward "
                f"model, found observations {sorted(obs)}"
            )
        obs = obs[obs_key]
    elif obs_key != "state":
        raise DataValidationError(
            f"{where}: expected a dataset with a {obs_key!r} observation for this reward model, "
            "found array observations ('state')"
        )
    obs = np.asarray(obs)
    want = tuple(getattr(model, "obs_shape", (model.obs_dim,)))
    if tuple(obs.shape[1:]) != want:
        size = f"of size {want[0]}" if len(want) == 1 else f"of per-step shape {want}"
        raise DataValidationError(
            f"{where}: expected observations {obs_key!r} {size} (the reward "
            f"model's), found shape {obs.shape[1:]} in trajectory {i}"
        )
    if model.act_dim and t.actions.shape[1] != model.act_dim:
        raise DataValidationError(
            f"{where}: expected actions of size {model.act_dim} (the reward model's), "
            f"found {t.actions.shape[1]} in trajectory {i}"
        )
    act = t.actions if model.act_dim else None
    return np.asarray(model.predict(obs, act, batch_size=batch_size), dtype=np.float64)
