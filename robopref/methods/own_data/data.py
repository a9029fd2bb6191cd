"""Reading what the own-data steps consume, with one-line errors naming the file and field:
the dataset, its observation key, its labels and rewards, and a reward checkpoint with its card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data import DataValidationError, Trajectory, TrajectoryDataset, load_dataset
from robopref.methods.common import file_fingerprint

CARD_SUFFIX = ".card.json"


def card_path(checkpoint: str | Path) -> Path:
    """``reward.pt`` -> ``reward.card.json``: the card written next to a reward checkpoint."""
    return Path(checkpoint).with_suffix(CARD_SUFFIX)


def read_dataset(path: str | Path) -> TrajectoryDataset:
    """Load a robopref HDF5 file; a missing path or a folder is a one-line error."""
    p = Path(path)
    if not p.is_file():
        found = "a directory (import it first: robopref import)" if p.is_dir() else "nothing"
        raise DataValidationError(f"{path}: expected a robopref HDF5 file, found {found}")
    return load_dataset(p)


def vectors(traj: Trajectory, obs_key: str, source: str) -> np.ndarray:
    """The ``[T, D]`` observation vectors of ``obs_key`` (``state``: array observations too)."""
    obs = traj.observations
    if isinstance(obs, dict):
        if obs_key not in obs:
            raise DataValidationError(
                f"{source}: field 'obs_key': expected one of the observation keys "
                f"{sorted(obs)}, found {obs_key!r}"
            )
        arr = obs[obs_key]
    elif obs_key == "state":
        arr = obs
    else:
        raise DataValidationError(
            f"{source}: field 'obs_key': expected 'state' (the file has array observations), "
            f"found {obs_key!r}"
        )
    if arr.ndim != 2:
        raise DataValidationError(
            f"{source}: observation {obs_key!r}: expected vectors [T, D], found per-step shape "
            f"{tuple(arr.shape[1:])}; image observations are not supported by the reward "
            "models and offline policies yet: pick a state key (obs_key=...)"
        )
    return arr


def vector_view(dataset: TrajectoryDataset, obs_key: str, source: str) -> TrajectoryDataset:
    """The dataset with ``obs_key``'s vectors as its (array) observations; same queries."""
    trajs = [
        Trajectory(
            observations=vectors(t, obs_key, source),
            actions=t.actions,
            rewards=t.rewards,
            successes=t.successes,
            dones=t.dones,
            task=t.task,
            instruction=t.instruction,
            metadata=t.metadata,
        )
        for t in dataset
    ]
    return TrajectoryDataset(trajs, dataset.queries, dataset.metadata)


def require_labels(dataset: TrajectoryDataset, source: str, step: str) -> None:
    """Raise unless the dataset holds labelled preference queries."""
    q = dataset.queries
    if q is None or q.label_kind == "none" or len(q) == 0:
        found = "no preference queries" if q is None else "queries without labels"
        raise DataValidationError(
            f"{source}: preferences: {step} needs labelled preference queries, found {found} "
            "(label them first: robopref label FILE, or robopref label-ui FILE)"
        )


def rewards_recorded(dataset: TrajectoryDataset) -> bool:
    """Whether the file's rewards are real (recorded by the source, or learned by relabel)."""
    if dataset.metadata.get("relabel"):
        return True
    return dataset.metadata.get("rewards_recorded", True) is not False


def load_reward_checkpoint(path: str | Path) -> tuple[Any, dict]:
    """``(reward model, card)``; the card is ``{}`` when the checkpoint has none."""
    import torch

    from robopref.rewards import load_reward

    p = Path(path)
    if not p.is_file():
        raise DataValidationError(f"{path}: --reward: expected a reward checkpoint, found nothing")
    try:
        model = load_reward(p)
    except (ValueError, KeyError, RuntimeError, OSError, EOFError, torch.serialization.pickle.UnpicklingError) as e:  # fmt: skip
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataValidationError(
            f"{path}: --reward: expected a reward checkpoint written by train-reward, "
            f"found one that does not load ({first})"
        ) from None
    card = {}
    if card_path(p).is_file():
        card = json.loads(card_path(p).read_text())
    return model, card


def check_reward_fits(model: Any, card: dict, dataset: TrajectoryDataset, ckpt: str, data: str):
    """The observation key of the reward (its card; ``state`` without one) must exist in the
    data with the reward's observation size, and the actions must have its action size.
    Returns the key."""
    obs_key = card.get("obs_key", "state")
    t0 = dataset[0]
    keys = sorted(t0.observations) if isinstance(t0.observations, dict) else ["state"]
    if obs_key not in keys:
        raise DataValidationError(
            f"{ckpt}: reward reads observation {obs_key!r}, but {data} has observation keys "
            f"{keys}; expected a reward trained on this kind of data"
        )
    arr = vectors(t0, obs_key, data)
    if arr.shape[1] != model.obs_dim:
        raise DataValidationError(
            f"{ckpt}: reward reads {obs_key!r} of size {model.obs_dim}, found size "
            f"{arr.shape[1]} in {data}; expected a reward trained on this kind of data"
        )
    if model.act_dim and t0.actions.shape[1] != model.act_dim:
        raise DataValidationError(
            f"{ckpt}: reward reads actions of size {model.act_dim}, found size "
            f"{t0.actions.shape[1]} in {data}"
        )
    return obs_key


def fingerprint(path: str | Path) -> str:
    return file_fingerprint(path)
