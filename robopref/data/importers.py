"""Importers of real-robot datasets into a :class:`TrajectoryDataset`: they pick the format.

* :func:`import_robomimic` reads a robomimic HDF5 file
  (:mod:`robopref.data.formats.robomimic`).
* :func:`import_lerobot` reads a LeRobot folder of format v2.0 / v2.1
  (:mod:`robopref.data.formats.lerobot_v2`) or v3.0 (:mod:`robopref.data.formats.lerobot_v3`);
  it needs ``pyarrow`` and, for video features, ``av`` (PyAV).
* :func:`import_dataset` picks one of them from the path; :func:`import_to_file` writes the
  result to robopref's HDF5 file; :func:`describe_source` lists what a source holds.

Neither robomimic nor lerobot is needed. Every structural problem raises
:class:`~robopref.data.DataValidationError` naming the file, the field and the expected vs
found shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py

from robopref.data.formats._common import PathLike, fail, locked_output
from robopref.data.formats.lerobot_meta import describe_lerobot, read_info, split_episodes
from robopref.data.formats.lerobot_v2 import import_lerobot_v2
from robopref.data.formats.lerobot_v3 import import_lerobot_v3, stream_v3_to_file
from robopref.data.formats.preferences import METADATA_FILE
from robopref.data.formats.robomimic import describe_robomimic, import_robomimic, write_hdf5
from robopref.data.trajectory import DataValidationError, TrajectoryDataset

__all__ = [
    "describe_source",
    "detect_format",
    "import_dataset",
    "import_lerobot",
    "import_robomimic",
    "import_to_file",
]


def import_lerobot(
    root: PathLike,
    obs_keys: Sequence[str] | None = None,
    reward_key: str | None = "next.reward",
    *,
    action_key: str = "action",
    episodes: Sequence[int] | None = None,
    decode_videos: bool = True,
    task: str | None = None,
    tolerance_s: float = 1e-4,
    state_keys: Sequence[str] | None = None,
    image_keys: Sequence[str] | None = None,
    filter_key: str | None = None,
) -> TrajectoryDataset:
    """Read a LeRobot dataset (format v2.0, v2.1 or v3.0) from a local folder.

    v3.0 (written by LeRobot 0.4 and later: many episodes per parquet and video file) is read
    by :mod:`robopref.data.formats.lerobot_v3`, streaming the chunk files; the arguments and the result
    are the same.

    Layout read::

        meta/info.json        codebase_version, fps, chunks_size, features, data_path and
                              video_path templates, splits ({"train": "0:40"})
        meta/episodes.jsonl   {"episode_index": i, "tasks": [...], "length": T}
        meta/tasks.jsonl      {"task_index": j, "task": "pick up the cube"}
        data/chunk-XXX/episode_XXXXXX.parquet   one row per frame: observation.state,
                              action, episode_index, frame_index, timestamp, next.reward,
                              next.done, task_index, ...
        videos/chunk-XXX/<video key>/episode_XXXXXX.mp4   (features of dtype "video")

    Observation features (``observation.*``) become dict observations named without the
    ``observation.`` prefix (``observation.state`` -> ``"state"``, ``observation.images.top``
    -> ``"images.top"``); video frames are decoded to uint8 ``[T, H, W, 3]`` and matched to the
    rows by ``timestamp`` (nearest frame, within ``tolerance_s``). Image features (dtype
    ``"image"``, PNG bytes in the parquet) are decoded with Pillow. With ``"state"`` the only
    observation the trajectory gets array observations.

    Args:
        root: the dataset folder (the one holding ``meta/``).
        obs_keys: feature names to import as observations, with or without the
            ``observation.`` prefix (default: every ``observation.*`` feature; video features
            are skipped when ``decode_videos`` is False).
        reward_key: per-frame reward column; if missing (or None) rewards are zero and
            ``metadata["rewards_recorded"]`` is False.
        action_key: the action column.
        episodes: episode indices to import (default: every episode of ``episodes.jsonl``).
        decode_videos: decode video features (needs ``av``).
        task: task name of every trajectory (default: the episode's LeRobot task string, which
            is also its ``instruction``).
        tolerance_s: largest allowed gap between a row's timestamp and its video frame.
        state_keys: low-dim features concatenated (in this order) into ``"state"``.
        image_keys: image/video features to import (default: all of them when ``obs_keys``
            is None, else none beyond ``obs_keys``).
        filter_key: import only the episodes of this split of ``info.json`` ``splits``.

    Returns:
        One trajectory per episode (``dones`` from ``next.done`` else only the last step,
        ``successes`` from ``next.success`` if present); ``metadata`` holds ``source_format =
        "lerobot"``, ``source``, ``fps``, ``robot_type``, ``codebase_version``, ``obs_features``
        ({obs key: feature name}) and ``filter_keys`` from ``splits``.

    Raises:
        DataValidationError: naming the file, the field (column) and the expected vs found
            shape; ImportError when pyarrow (or av, for videos) is not installed.
    """
    root = Path(root)
    info_path = root / "meta" / "info.json"
    info = read_info(root)
    version = str(info.get("codebase_version", ""))
    if filter_key is not None:
        episodes = split_episodes(info, info_path, filter_key, episodes)
    if version not in ("v2.0", "v2.1", "v3.0"):
        fail(
            info_path,
            "codebase_version",
            "'v2.0', 'v2.1' or 'v3.0' (the LeRobot layouts robopref reads)",
            repr(version),
        )
    read = import_lerobot_v3 if version == "v3.0" else import_lerobot_v2
    return read(
        root,
        info,
        obs_keys=obs_keys,
        reward_key=reward_key,
        action_key=action_key,
        episodes=episodes,
        decode_videos=decode_videos,
        task=task,
        tolerance_s=tolerance_s,
        state_keys=state_keys,
        image_keys=image_keys,
    )


def detect_format(path: PathLike) -> str:
    """``"lerobot"`` for a folder with ``meta/info.json``, ``"robomimic"`` for an HDF5 file."""
    path = Path(path)
    if path.is_dir():
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        fail(
            path,
            "/",
            "a LeRobot folder (meta/info.json) or a robomimic HDF5 file",
            "a folder without meta/info.json",
        )
    if path.is_file() and h5py.is_hdf5(path):
        return "robomimic"
    fail(
        path,
        "/",
        "a LeRobot folder (meta/info.json) or a robomimic HDF5 file",
        "nothing (missing)" if not path.exists() else "a file that is not HDF5",
    )
    raise AssertionError  # unreachable


def import_dataset(path: PathLike, format: str = "auto", **kwargs: Any) -> TrajectoryDataset:
    """Import a real-robot dataset: ``format`` is ``"auto"`` (from the path), ``"robomimic"``
    or ``"lerobot"``; ``kwargs`` go to :func:`import_robomimic` / :func:`import_lerobot`."""
    if format == "auto":
        format = detect_format(path)
    if format == "robomimic":
        return import_robomimic(path, **kwargs)
    if format == "lerobot":
        return import_lerobot(path, **kwargs)
    raise DataValidationError(
        f"import_dataset: field 'format': expected 'auto', 'robomimic' or 'lerobot', found {format!r}"
    )


def import_to_file(
    path: PathLike, out: PathLike, format: str = "auto", **kwargs: Any
) -> dict[str, Any]:
    """Import ``path`` and write robopref's HDF5 file ``out`` (atomically, under its writer
    lock); nothing is written when the source has an error.

    A LeRobot v3.0 folder is streamed: one episode at a time is read, checked against the
    first one (same keys and per-step shapes) and written, so memory stays bounded by one
    episode (plus one parquet record batch) whatever the dataset's size. Other sources are
    read whole and written like :func:`robopref.data.save_dataset`.

    An error writing ``out`` (a read-only folder, a full disk) is one
    :class:`DataValidationError` naming ``out``, with nothing left behind and an existing
    ``out`` unchanged; errors reading the source are left to the caller, so that they are
    never blamed on ``out``.

    Returns:
        ``{"episodes": N, "frames": F, "observations": {key: per-step shape}}``.
    """
    if format == "auto":
        format = detect_format(path)
    with locked_output(out, "import into it"):
        if format == "lerobot":
            info = read_info(Path(path))
            exported = (Path(path) / METADATA_FILE).is_file()
            if str(info.get("codebase_version")) == "v3.0" and not exported:
                return stream_v3_to_file(Path(path), info, Path(out), **kwargs)
        ds = import_dataset(path, format=format, **kwargs)
        write_hdf5(ds, out, what="import into it")
    t0 = ds[0] if len(ds) else None
    obs = (
        (t0.observations if isinstance(t0.observations, dict) else {"state": t0.observations})
        if t0
        else {}
    )
    return {
        "episodes": len(ds),
        "frames": int(sum(len(t) for t in ds)),
        "observations": {k: tuple(v.shape[1:]) for k, v in obs.items()},
    }


def describe_source(path: PathLike) -> dict[str, Any]:
    """What a robomimic file or LeRobot folder holds, without reading its arrays: the keys a
    user can pass to ``--obs-keys`` / ``--state-keys`` / ``--image-keys`` / ``--filter-key``.

    Returns:
        ``{"format", "source", "episodes", "observations": {key: "shape dtype (kind)"},
        "other": {key: ...}, "filter_keys": [...]}``; for LeRobot also ``codebase_version``.
    """
    path = Path(path)
    if detect_format(path) == "lerobot":
        return describe_lerobot(path)
    return describe_robomimic(path)
