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


def observation(traj: Trajectory, obs_key: str, source: str) -> np.ndarray:
    """The ``[T, ...]`` observations of ``obs_key`` (``state``: array observations too)."""
    obs = traj.observations
    if isinstance(obs, dict):
        if obs_key not in obs:
            raise DataValidationError(
                f"{source}: field 'obs_key': expected one of the observation keys "
                f"{sorted(obs)}, found {obs_key!r}"
            )
        return obs[obs_key]
    if obs_key == "state":
        return obs
    raise DataValidationError(
        f"{source}: field 'obs_key': expected 'state' (the file has array observations), "
        f"found {obs_key!r}"
    )


def is_image(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds RGB frames ``[T, H, W, 3]``."""
    return arr.ndim == 4 and arr.shape[-1] == 3


def describe(shape: tuple[int, ...]) -> str:
    """``(64, 64, 3)`` -> ``images 64x64x3``; ``(39,)`` -> ``vectors of size 39``."""
    if len(shape) == 3:
        return "images " + "x".join(map(str, shape))
    return f"vectors of size {shape[0]}" if len(shape) == 1 else f"per-step shape {shape}"


def reward_observations(traj: Trajectory, obs_key: str, source: str) -> np.ndarray:
    """What a reward model reads: vectors ``[T, D]`` or RGB frames ``[T, H, W, 3]``."""
    arr = observation(traj, obs_key, source)
    if arr.ndim != 2 and not is_image(arr):
        raise DataValidationError(
            f"{source}: observation {obs_key!r}: expected vectors [T, D] or RGB images "
            f"[T, H, W, 3], found per-step shape {tuple(arr.shape[1:])}"
        )
    return arr


def vectors(traj: Trajectory, obs_key: str, source: str) -> np.ndarray:
    """The ``[T, D]`` observation vectors of ``obs_key`` (what an offline policy reads)."""
    arr = observation(traj, obs_key, source)
    if arr.ndim != 2:
        kind = describe(tuple(arr.shape[1:]))
        raise DataValidationError(
            f"{source}: observation {obs_key!r}: expected state vectors [T, D], found {kind}; "
            "offline policies read state vectors only: pick a state key (obs_key=...); an "
            "image reward can still relabel the file for them (robopref relabel)"
        )
    return arr


def observation_view(
    dataset: TrajectoryDataset, obs_key: str, source: str, images: bool = True
) -> TrajectoryDataset:
    """The dataset with ``obs_key``'s arrays as its (array) observations; same queries. Frames
    are kept as they are (no copy); ``images=False`` accepts vectors only."""
    read = reward_observations if images else vectors
    trajs = [
        Trajectory(
            observations=read(t, obs_key, source),
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


def vector_view(dataset: TrajectoryDataset, obs_key: str, source: str) -> TrajectoryDataset:
    """The dataset with ``obs_key``'s vectors as its (array) observations; same queries."""
    return observation_view(dataset, obs_key, source, images=False)


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
    data with the reward's per-step shape (vector size, or image size), and the actions must
    have its action size. Returns the key."""
    obs_key = card.get("obs_key", "state")
    t0 = dataset[0]
    keys = sorted(t0.observations) if isinstance(t0.observations, dict) else ["state"]
    if obs_key not in keys:
        raise DataValidationError(
            f"{ckpt}: reward reads observation {obs_key!r}, but {data} has observation keys "
            f"{keys}; expected a reward trained on this kind of data"
        )
    found = tuple(observation(t0, obs_key, data).shape[1:])
    want = tuple(model.obs_shape)
    if found != want:
        if len(want) == len(found) == 1:
            what = f"of size {want[0]}, found size {found[0]}"
        else:
            what = f"as {describe(want)}, found {describe(found)}"
        raise DataValidationError(
            f"{ckpt}: reward reads {obs_key!r} {what} in {data}; expected a reward trained on "
            "this kind of data"
        )
    if model.act_dim and t0.actions.shape[1] != model.act_dim:
        raise DataValidationError(
            f"{ckpt}: reward reads actions of size {model.act_dim}, found size "
            f"{t0.actions.shape[1]} in {data}"
        )
    return obs_key


def fingerprint(path: str | Path) -> str:
    return file_fingerprint(path)
