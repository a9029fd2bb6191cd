"""Learned rewards into a dataset: each step's reward under a saved reward model.

:func:`relabel_dataset` returns a copy of a dataset whose ``rewards`` are the model's, with the
recorded rewards kept as ``Trajectory.extras["original_rewards"]`` (when the source recorded
any) and ``metadata["reward_source"]`` saying where the rewards came from. The exporters write
such a dataset's rewards as LeRobot's ``next.reward`` (the original as
``next.original_reward``) or robomimic's ``rewards`` (the original as ``extras/original_rewards``).
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
    dataset: TrajectoryDataset, model: RewardModel, source: str = ""
) -> TrajectoryDataset:
    """A copy of ``dataset`` with the per-step rewards of ``model`` (see the module docstring).

    The model reads each trajectory's ``state`` (``[T, obs_dim]``) and, unless it is a
    state-only reward, its ``actions``. Raises :class:`DataValidationError` naming the
    checkpoint when the dataset's sizes are not the model's.
    """
    where = source or "reward model"
    recorded = dataset.metadata.get("rewards_recorded", True) is not False
    trajectories = []
    for i, t in enumerate(dataset):
        try:
            state = np.asarray(t.state)
        except KeyError as e:
            raise DataValidationError(
                f"{where}: expected a dataset with a 'state' observation for this reward model, "
                f"found observations {sorted(t.observations)}"
            ) from e
        if state.ndim != 2 or state.shape[1] != model.obs_dim:
            raise DataValidationError(
                f"{where}: expected observations 'state' of size {model.obs_dim} (the reward "
                f"model's), found shape {state.shape[1:]} in trajectory {i}"
            )
        if model.act_dim and t.actions.shape[1] != model.act_dim:
            raise DataValidationError(
                f"{where}: expected actions of size {model.act_dim} (the reward model's), "
                f"found {t.actions.shape[1]} in trajectory {i}"
            )
        learned = model.predict(state, t.actions if model.act_dim else None).astype(np.float64)
        extras = dict(t.extras)
        if recorded and "original_rewards" not in extras:
            extras["original_rewards"] = t.rewards
        trajectories.append(dataclasses.replace(t, rewards=learned, extras=extras))
    metadata: dict[str, Any] = dict(dataset.metadata)
    metadata.pop("rewards_recorded", None)
    metadata["reward_source"] = {
        "kind": "learned",
        "checkpoint": source,
        "model_class": type(model).__name__,
        "obs_dim": model.obs_dim,
        "act_dim": model.act_dim,
    }
    return TrajectoryDataset(trajectories, dataset.queries, metadata)
