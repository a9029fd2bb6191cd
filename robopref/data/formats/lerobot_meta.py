"""What the LeRobot readers of every version share: ``meta/info.json``, the choice of features
(``--obs-keys``/``--state-keys``/``--image-keys``), splits, the dataset metadata of an import,
and decoding of video and image features.

Videos are decoded with PyAV (``av``) to RGB24 and matched to each row's timestamp like
LeRobot does (nearest decoded frame within ``tolerance_s``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data.formats._common import fail, require
from robopref.data.trajectory import DataValidationError


def read_info(root: Path) -> dict[str, Any]:
    """``meta/info.json`` of a LeRobot folder (any version), checked to be a JSON object."""
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        fail(
            root,
            "meta/info.json",
            "a LeRobot dataset folder holding meta/info.json",
            "nothing (missing)",
        )
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        fail(info_path, "/", "a JSON object", f"invalid JSON ({e})")
    if not isinstance(info, dict):
        fail(info_path, "/", "a JSON object", type(info).__name__)
    return info


# --------------------------------------------------------------------------- key selection


@dataclass
class LeRobotKeys:
    """Which features become which observations.

    Attributes:
        obs: feature name -> observation name, for features kept as they are.
        state: feature names concatenated (in this order) into ``observations["state"]``.
    """

    obs: dict[str, str] = field(default_factory=dict)
    state: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        return list(dict.fromkeys([*self.obs, *self.state]))


def obs_name(feature: str) -> str:
    """``observation.state`` -> ``state``, ``observation.images.top`` -> ``images.top``."""
    return feature[len("observation.") :] if feature.startswith("observation.") else feature


def select_keys(
    features: dict[str, dict[str, Any]],
    info_path: Path,
    obs_keys: Sequence[str] | None,
    state_keys: Sequence[str] | None,
    image_keys: Sequence[str] | None,
    decode_videos: bool,
) -> LeRobotKeys:
    """Resolve the user's key lists against ``info.json`` features.

    A key may be given as the feature name (``observation.images.top``) or without the
    ``observation.`` prefix (``images.top``). Default (all three None): every ``observation.*``
    feature (videos only when ``decode_videos``). ``image_keys`` picks the image/video
    features (default: all of them when ``obs_keys`` is None, none otherwise); ``state_keys``
    are concatenated into ``"state"``.
    """

    def resolve(key: str, what: str) -> str:
        if key in features:
            return key
        if f"observation.{key}" in features:
            return f"observation.{key}"
        fail(
            info_path,
            f"features['{key}']",
            f"{what} (available: {sorted(features)})",
            "nothing (missing)",
        )
        raise AssertionError

    def is_image(k: str) -> bool:
        return features[k].get("dtype") in ("image", "video")

    state = [resolve(k, "a state feature") for k in state_keys or []]
    for k in state:
        if is_image(k) or len(features[k].get("shape") or ()) > 1:
            fail(
                info_path,
                f"features['{k}']",
                "a low-dim feature of shape [dim] to concatenate into 'state'",
                f"dtype {features[k].get('dtype')} shape {features[k].get('shape')}",
            )
    if obs_keys is None:
        chosen = [k for k in features if k.startswith("observation.") and not is_image(k)]
        if image_keys is None:
            image_keys = [
                k
                for k in features
                if k.startswith("observation.")
                and is_image(k)
                and (decode_videos or features[k].get("dtype") != "video")
            ]
    else:
        chosen = [resolve(k, "an observation feature") for k in obs_keys]
    images = [resolve(k, "an image or video feature") for k in image_keys or []]
    for k in images:
        if not is_image(k):
            fail(
                info_path,
                f"features['{k}']",
                "an image or video feature (--image-keys)",
                f"dtype {features[k].get('dtype')}",
            )
    obs = [k for k in dict.fromkeys([*chosen, *images]) if k not in state]
    names = [obs_name(k) for k in obs] + (["state"] if state else [])
    if len(set(names)) != len(names) or any("/" in n or not n for n in names):
        fail(
            info_path,
            "features",
            "observation names unique after the 'observation.' prefix, without '/'"
            + (" ('state' is taken by --state-keys)" if state else ""),
            str(names),
        )
    return LeRobotKeys({k: obs_name(k) for k in obs}, state)


def fold_state(obs: dict[str, np.ndarray], keys: LeRobotKeys) -> dict[str, np.ndarray]:
    """Concatenate the ``keys.state`` features (already in ``obs`` by feature name) into
    ``"state"`` and rename the others to their observation names."""
    out: dict[str, np.ndarray] = {}
    if keys.state:
        parts = [obs[k].reshape(len(obs[k]), -1) for k in keys.state]
        dtypes = {p.dtype for p in parts}
        out["state"] = np.concatenate(
            parts if len(dtypes) == 1 else [p.astype(np.float64) for p in parts], axis=1
        )
    for k, name in keys.obs.items():
        out[name] = obs[k]
    return out


# --------------------------------------------------------------------------- video


def decode_video_segment(
    file: Path,
    timestamps: np.ndarray,
    tolerance_s: float,
    *,
    key: str,
    episode: int,
) -> np.ndarray:
    """RGB frames ``[len(timestamps), H, W, 3]`` uint8 of ``file`` nearest to ``timestamps``.

    Seeks to the key frame at or before ``min(timestamps)`` and decodes forward until the
    first frame at or after ``max(timestamps)`` (LeRobot's own decoding with its ``pyav``
    backend does exactly this), then takes for each timestamp the nearest decoded frame, which
    must lie within ``tolerance_s`` seconds.

    Raises:
        DataValidationError: the file is missing or undecodable, or it ends before the last
            timestamp (naming the file, the key, the episode and both times).
    """

    av = require("av", "decoding LeRobot videos")
    if not file.is_file():
        fail(file, key, f"the video file of episode {episode}", "nothing (missing)")
    if len(timestamps) == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    first, last = float(timestamps.min()), float(timestamps.max())
    frames: list[np.ndarray] = []
    times: list[float] = []
    try:
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            if first > 0:
                # offset in stream time base: the key frame at or before `first`
                container.seek(
                    int(first / stream.time_base), stream=stream, backward=True, any_frame=False
                )
            for frame in container.decode(stream):
                t = float(frame.time)
                if t < first - tolerance_s - 1.0 / float(stream.average_rate or 1000):
                    continue  # before the segment (decoded only to reach it)
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
                if t >= last:
                    break
    except av.FFmpegError as e:
        raise DataValidationError(
            f"{file}: {key}: expected a decodable video, found {type(e).__name__}: {e}"
        ) from e
    if not times or times[-1] < last - tolerance_s:
        end = f"{times[-1]:.4f} s" if times else "no frame after the seek"
        fail(
            file,
            key,
            f"a frame at {last:.4f} s (episode {episode}: from_timestamp + its last row's "
            "timestamp)",
            f"a video shorter than its timestamps (last frame at {end})",
        )
    times_arr = np.asarray(times)
    right = np.clip(np.searchsorted(times_arr, timestamps), 0, len(times_arr) - 1)
    left = np.clip(right - 1, 0, len(times_arr) - 1)
    nearer_left = np.abs(times_arr[left] - timestamps) <= np.abs(times_arr[right] - timestamps)
    idx = np.where(nearer_left, left, right)
    gap = np.abs(times_arr[idx] - timestamps)
    if gap.max() > tolerance_s:
        i = int(gap.argmax())
        fail(
            file,
            key,
            f"a frame within {tolerance_s} s of every row's timestamp (episode {episode})",
            f"row {i} at {timestamps[i]:.4f} s, nearest frame at {times_arr[idx[i]]:.4f} s",
        )
    return np.stack(frames)[idx]


def decode_video(
    file: Path, timestamps: np.ndarray, tolerance_s: float, feature: dict
) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` uint8 of ``file`` nearest to each of ``timestamps`` (seconds)."""
    av = require("av", "decoding LeRobot videos")
    if not file.is_file():
        fail(file, "/", "the video of this episode", "nothing (missing)")
    frames, times = [], []
    try:
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(
                    float(frame.time)
                    if frame.time is not None
                    else len(times) / float(stream.average_rate or 1)
                )
    except av.FFmpegError as e:
        raise DataValidationError(
            f"{file}: /: expected a decodable video, found {type(e).__name__}: {e}"
        ) from e
    if not frames:
        fail(file, "/", f"{len(timestamps)} video frames", "no frames")
    times_arr = np.asarray(times)
    order = np.argsort(times_arr, kind="stable")
    sorted_times = times_arr[order]
    right = np.clip(np.searchsorted(sorted_times, timestamps), 0, len(order) - 1)
    left = np.clip(right - 1, 0, len(order) - 1)
    nearer_left = np.abs(sorted_times[left] - timestamps) <= np.abs(
        sorted_times[right] - timestamps
    )
    idx = order[np.where(nearer_left, left, right)]  # nearest frame of each row
    gap = np.abs(times_arr[idx] - timestamps)
    if len(gap) and gap.max() > tolerance_s:
        i = int(gap.argmax())
        fail(
            file,
            "frames",
            f"a frame within {tolerance_s} s of every row's timestamp",
            f"row {i} at {timestamps[i]:.4f} s, nearest frame at {times_arr[idx[i]]:.4f} s ({len(frames)} frames)",
        )
    video = np.stack(frames)[idx]
    shape = tuple(feature.get("shape", ()))
    if len(shape) == 3 and video.shape[1:] != shape:
        names = feature.get("names") or []
        if list(names)[:1] == ["channel"] and video.shape[1:] == (shape[1], shape[2], shape[0]):
            return video
        fail(file, "frames", f"frames of shape {shape} (info.json)", f"shape {video.shape[1:]}")
    return video


def decode_images(col: Any, file: Path, key: str, feature: dict) -> np.ndarray:
    """PNG/JPEG images stored in the parquet (struct {bytes, path}) as ``[T, H, W, C]`` uint8."""

    image_mod = require("PIL.Image", "decoding LeRobot image features")
    out = []
    for i, cell in enumerate(col.to_pylist()):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            fail(file, key, "image bytes in every row", f"none in row {i}")
        out.append(np.asarray(image_mod.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(out) if out else np.zeros((0, *feature.get("shape", (0, 0, 3))), np.uint8)


def split_episodes(
    info: dict[str, Any], info_path: Path, name: str, episodes: Sequence[int] | None
) -> list[int]:
    """The episodes of split ``name`` (intersected with ``episodes`` if given)."""
    splits = lerobot_splits(info.get("splits", {}), info_path)
    if name not in splits:
        fail(
            info_path,
            f"splits['{name}']",
            f"one of the splits {sorted(splits)}",
            "nothing (missing)",
        )
    chosen = splits[name]
    return chosen if episodes is None else [e for e in chosen if e in set(episodes)]


def lerobot_dataset_metadata(
    root: Path,
    info: dict[str, Any],
    info_path: Path,
    keys: Any,
    rewards_recorded: bool,
    position: dict[int, int],
) -> dict[str, Any]:
    """The dataset metadata of an imported LeRobot folder (any codebase version): source,
    fps, robot, version, which LeRobot feature each observation came from, and the splits as
    filter keys (``position`` maps a LeRobot episode index to its place in the import)."""
    metadata: dict[str, Any] = {
        "source_format": "lerobot",
        "source": str(root),
        "fps": float(info["fps"]),
        "robot_type": info.get("robot_type"),
        "codebase_version": str(info.get("codebase_version")),
        "obs_features": {name: k for k, name in keys.obs.items()}
        | ({"state": "+".join(keys.state)} if keys.state else {}),
    }
    if keys.state:
        metadata["state_keys"] = list(keys.state)
    names = feature_names(info["features"], keys)
    if names:
        metadata["feature_names"] = names
    if not rewards_recorded:
        metadata["rewards_recorded"] = False
    splits = lerobot_splits(info.get("splits", {}), info_path)
    if splits:
        metadata["filter_keys"] = {
            name: [position[i] for i in idx if i in position] for name, idx in splits.items()
        }
    return metadata


def feature_names(features: dict[str, dict[str, Any]], keys: LeRobotKeys) -> dict[str, Any]:
    """The ``names`` of the features imported, by the LeRobot feature name an export writes
    them under (the ``--state-keys`` features folded into ``observation.state`` get their
    names concatenated, when every one of them has a list of names)."""
    out = {
        k: f["names"]
        for k, f in features.items()
        if f.get("names")
        and f.get("dtype") not in ("image", "video")
        and (k in keys.obs or not k.startswith("observation."))
    }
    if keys.state:
        parts = [features[k].get("names") for k in keys.state]
        if all(isinstance(p, list) for p in parts):
            out["observation.state"] = [n for p in parts for n in p]
        elif "observation.state" not in keys.obs:
            out.pop("observation.state", None)
    return out


def extra_features(features: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Feature name -> ``Trajectory.extras`` key of the per-step arrays a robopref export
    writes beside the observations (``next.original_reward``, ``robopref.<key>``)."""
    out = {}
    for k in features:
        if k == "next.original_reward":
            out[k] = "original_rewards"
        elif k.startswith("robopref.") and len(k) > len("robopref."):
            out[k] = k[len("robopref.") :]
    return out


def frame_tasks(
    task_index: np.ndarray, tasks: dict[int, str], file: Path, episode: int
) -> tuple[str, np.ndarray | None]:
    """The first frame's task of an episode, and every frame's task when it changes midway
    (None when one task covers the episode)."""
    if len(task_index) == 0:
        return "", None
    unknown = sorted(set(np.unique(task_index).tolist()) - set(tasks))
    if unknown and tasks:
        fail(
            file,
            "task_index",
            f"task indices of meta/tasks (episode {episode}: {sorted(tasks)[:10]})",
            f"{unknown[:5]}",
        )
    names = np.array([tasks.get(int(i), "") for i in task_index], dtype=str)
    first = str(names[0])
    return first, (names if (names != names[0]).any() else None)


def lerobot_splits(splits: Any, info_path: Path) -> dict[str, list[int]]:
    """``{"train": "0:40"}`` -> ``{"train": [0, ..., 39]}``."""
    out = {}
    if not isinstance(splits, dict):
        fail(info_path, "splits", "a dict name -> 'start:stop'", type(splits).__name__)
    for name, spec in splits.items():
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(spec))
        if m is None:
            fail(info_path, f"splits['{name}']", "'start:stop' episode indices", repr(spec))
        out[str(name)] = list(range(int(m.group(1)), int(m.group(2))))
    return out


def describe_lerobot(path: Path) -> dict[str, Any]:
    """What a LeRobot folder holds, from ``meta/info.json`` alone (see
    :func:`robopref.data.importers.describe_source`)."""
    info = read_info(path)
    feats = info.get("features", {})
    return {
        "format": "lerobot",
        "source": str(path),
        "codebase_version": info.get("codebase_version"),
        "episodes": info.get("total_episodes"),
        "observations": {
            k: f"{list(v.get('shape') or [])} {v.get('dtype')}"
            + (" (image)" if v.get("dtype") == "video" else "")
            for k, v in feats.items()
            if k.startswith("observation.")
        },
        "other": {
            k: f"{list(v.get('shape') or [])} {v.get('dtype')}"
            for k, v in feats.items()
            if not k.startswith("observation.")
        },
        "filter_keys": sorted((info.get("splits") or {}).keys()),
    }
