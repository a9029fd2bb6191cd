"""Importers of real-robot datasets into a :class:`TrajectoryDataset`.

* :func:`import_robomimic` reads a robomimic HDF5 file (``data/demo_<N>/{obs/<key>, actions,
  rewards, dones}``, ``data.attrs["env_args"]``, optional ``mask/<filter key>``) with h5py.
* :func:`import_lerobot` reads a LeRobot v2.x dataset folder (``meta/info.json``,
  ``meta/episodes.jsonl``, ``meta/tasks.jsonl``, ``data/chunk-XXX/episode_XXXXXX.parquet`` and
  optional ``videos/chunk-XXX/<key>/episode_XXXXXX.mp4``); it needs ``pyarrow`` and, for video
  features, ``av`` (PyAV).
* :func:`import_dataset` picks one of them from the path.

Neither robomimic nor lerobot is needed. Every structural problem raises
:class:`~robopref.data.DataValidationError` naming the file, the field and the expected vs
found shape. Save the result with :func:`robopref.data.save_dataset`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robopref.data.trajectory import DataValidationError, Trajectory, TrajectoryDataset

PathLike = str | os.PathLike
_DEMO = re.compile(r"^demo_(\d+)$")


def _fail(src: Any, where: str, expected: str, found: str) -> None:
    raise DataValidationError(f"{src}: {where}: expected {expected}, found {found}")


def _shape(obj: Any) -> str:
    if obj is None:
        return "nothing (missing)"
    if isinstance(obj, h5py.Group):
        return "a group"
    return f"shape {tuple(obj.shape)} {obj.dtype}"


def _flags(arr: np.ndarray, src: Any, where: str) -> np.ndarray:
    """0/1 (or bool) values as bool; any other value is an error naming the step."""
    arr = np.asarray(arr)
    if arr.dtype != np.bool_:
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            i = int(np.argmax(bad))
            _fail(src, where, "values 0 or 1", f"value {arr[i]} at step {i}")
    return arr.astype(bool)


# --------------------------------------------------------------------------- robomimic


def import_robomimic(
    path: PathLike,
    obs_keys: Sequence[str] | None = None,
    reward_key: str | None = "rewards",
    *,
    filter_key: str | None = None,
    state_keys: Sequence[str] | None = None,
    task: str | None = None,
    image_keys: Sequence[str] | None = None,
) -> TrajectoryDataset:
    """Read a robomimic HDF5 dataset (h5py only; robomimic itself is not needed).

    Layout read::

        data/                 attrs: env_args (JSON: env_name, type, env_kwargs), total
        data/demo_<N>/        attrs: num_samples (T)
            obs/<key>         [T, ...] (low-dim float or uint8 images [T, H, W, 3])
            actions           [T, act_dim]
            rewards           [T]            (or ``reward_key``)
            dones             [T] 0/1        (optional: the last step is done)
            successes         [T] 0/1        (optional, written by robopref)
        mask/<filter key>     [n] byte strings "demo_<N>" (e.g. "train", "valid")

    ``next_obs`` and ``states`` are not read. Demos are returned sorted by N (robomimic's
    order), also when ``filter_key`` selects a subset.

    Args:
        path: the ``.hdf5`` file.
        obs_keys: observation keys to import (default: every key of ``obs/``).
        reward_key: dataset of each demo holding the per-step reward; ``None`` gives zero
            rewards and ``metadata["rewards_recorded"] = False``.
        filter_key: import only the demos listed in ``mask/<filter_key>``.
        state_keys: low-dim keys concatenated (in this order) into one ``"state"`` observation
            ``[T, sum of dims]`` (what the reward models read), replacing those keys. They need
            not be in ``obs_keys``.
        task: task name of every trajectory (default ``env_args["env_name"]``).
        image_keys: image observations (uint8 ``[T, H, W, C]``) to import; with ``obs_keys``
            None the low-dim keys are imported too. Default: as ``obs_keys`` says.

    Returns:
        A dataset with dict observations (array observations when ``"state"`` is the only
        key), ``metadata`` holding ``source_format = "robomimic"``, ``source``, ``env_args``,
        ``filter_keys`` (every mask, remapped to positions among the imported demos) and
        ``state_keys``; each trajectory's metadata holds its ``demo`` name.

    Raises:
        DataValidationError: naming the file, the HDF5 path and the expected vs found shape.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        _fail(
            src,
            "/",
            "a robomimic HDF5 file",
            "nothing (missing)" if not path.exists() else "a directory",
        )
    if not h5py.is_hdf5(path):
        _fail(src, "/", "an HDF5 file", "a file without the HDF5 signature")
    with h5py.File(path, "r") as f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            _fail(
                src, "data", "a group of demos data/demo_<N>", f"{_shape(data)}; keys {sorted(f)}"
            )
        env_args: dict[str, Any] = {}
        if "env_args" in data.attrs:
            raw = data.attrs["env_args"]
            try:
                env_args = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            except (TypeError, ValueError) as e:
                _fail(src, "data.attrs['env_args']", "a JSON object", f"{str(raw)[:60]!r} ({e})")
            if not isinstance(env_args, dict):
                _fail(src, "data.attrs['env_args']", "a JSON object", type(env_args).__name__)
        all_demos = sorted((n for n in data if _DEMO.match(n)), key=lambda n: int(n[5:]))
        masks = _robomimic_masks(f, src, set(all_demos))
        if filter_key is not None:
            if filter_key not in masks:
                _fail(
                    src,
                    f"mask/{filter_key}",
                    f"one of the filter keys {sorted(masks)}",
                    "nothing (missing)",
                )
            chosen = set(masks[filter_key])
            demos = [n for n in all_demos if n in chosen]
        else:
            demos = all_demos
        if image_keys is not None:
            obs_keys = _with_image_keys(f, src, all_demos, obs_keys, image_keys)
        task_name = str(env_args.get("env_name", "")) if task is None else task
        trajectories = [
            _robomimic_demo(data[n], f"data/{n}", src, obs_keys, reward_key, state_keys, task_name)
            for n in demos
        ]
    position = {n: i for i, n in enumerate(demos)}
    filter_keys = {
        name: [position[n] for n in sorted(names, key=lambda n: int(n[5:])) if n in position]
        for name, names in masks.items()
    }
    metadata: dict[str, Any] = {
        "source_format": "robomimic",
        "source": src,
        "env_args": env_args,
    }
    if filter_keys:
        metadata["filter_keys"] = filter_keys
    if filter_key is not None:
        metadata["filter_key"] = filter_key
    if state_keys:
        metadata["state_keys"] = list(state_keys)
    if reward_key is None:
        metadata["rewards_recorded"] = False
    out = TrajectoryDataset(trajectories, None, metadata)
    out.validate(src)
    return out


def _with_image_keys(
    f: h5py.File,
    src: str,
    demos: list[str],
    obs_keys: Sequence[str] | None,
    image_keys: Sequence[str],
) -> list[str]:
    """``obs_keys`` (default: the low-dim keys of the first demo) plus ``image_keys``, each
    checked to be a uint8 ``[T, H, W, C]`` observation of the first demo."""
    if not demos:
        return list(obs_keys or []) + list(image_keys)
    obs_g = f[f"data/{demos[0]}"].get("obs")
    if not isinstance(obs_g, h5py.Group):
        _fail(src, f"data/{demos[0]}/obs", "a group of observation datasets", _shape(obs_g))

    def is_image(k: str) -> bool:
        d = obs_g[k]
        return isinstance(d, h5py.Dataset) and d.dtype == np.uint8 and d.ndim == 4

    for k in image_keys:
        if k not in obs_g or not is_image(k):
            _fail(
                src,
                f"data/{demos[0]}/obs/{k}",
                f"an image observation uint8 [T, H, W, C] (images: "
                f"{sorted(n for n in obs_g if is_image(n))})",
                _shape(obs_g.get(k)),
            )
    base = list(obs_keys) if obs_keys is not None else [k for k in obs_g if not is_image(k)]
    return list(dict.fromkeys([*base, *image_keys]))


def _robomimic_masks(f: h5py.File, src: str, demos: set[str]) -> dict[str, list[str]]:
    mask = f.get("mask")
    if mask is None:
        return {}
    if not isinstance(mask, h5py.Group):
        _fail(src, "mask", "a group of filter keys", _shape(mask))
    out = {}
    for name in mask:
        d = mask[name]
        if not isinstance(d, h5py.Dataset):
            _fail(src, f"mask/{name}", "a dataset of demo names", _shape(d))
        names = [
            n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(d[()]).reshape(-1)
        ]
        unknown = [n for n in names if n not in demos]
        if unknown:
            _fail(src, f"mask/{name}", "names of demos in data/", f"unknown {unknown[:3]}")
        out[name] = names
    return out


def _robomimic_demo(
    g: Any,
    where: str,
    src: str,
    obs_keys: Sequence[str] | None,
    reward_key: str | None,
    state_keys: Sequence[str] | None,
    task: str,
) -> Trajectory:
    if not isinstance(g, h5py.Group):
        _fail(src, where, "a group", _shape(g))

    def dataset(parent: Any, name: str, w: str) -> h5py.Dataset:
        d = parent.get(name)
        if not isinstance(d, h5py.Dataset):
            _fail(src, f"{w}/{name}", "a dataset", _shape(d))
        return d

    actions = dataset(g, "actions", where)
    if actions.ndim != 2:
        _fail(src, f"{where}/actions", "[T, act_dim]", _shape(actions))
    T = actions.shape[0]
    if "num_samples" in g.attrs and int(g.attrs["num_samples"]) != T:
        _fail(
            src,
            f"{where}.attrs['num_samples']",
            f"{T} (the length of actions)",
            str(g.attrs["num_samples"]),
        )

    def read(d: h5py.Dataset, w: str, tail: str = "...") -> np.ndarray:
        if d.ndim < 1 or d.shape[0] != T:
            _fail(src, w, f"[T={T}{', ' + tail if tail else ''}] (T from actions)", _shape(d))
        return d[()]

    obs_g = g.get("obs")
    if not isinstance(obs_g, h5py.Group):
        _fail(src, f"{where}/obs", "a group of observation datasets obs/<key>", _shape(obs_g))
    keys = list(obs_keys) if obs_keys is not None else list(obs_g)
    wanted = list(dict.fromkeys([*keys, *(state_keys or [])]))
    for k in wanted:
        if k not in obs_g:
            _fail(
                src,
                f"{where}/obs/{k}",
                f"an observation (available: {sorted(obs_g)})",
                "nothing (missing)",
            )
    obs = {k: read(dataset(obs_g, k, f"{where}/obs"), f"{where}/obs/{k}") for k in wanted}
    if state_keys:
        parts = []
        for k in state_keys:
            a = obs.pop(k)
            if a.ndim != 2:
                _fail(
                    src,
                    f"{where}/obs/{k}",
                    f"[T={T}, dim] (a low-dim state key)",
                    f"shape {a.shape}",
                )
            parts.append(a.astype(np.float64) if a.dtype != np.float32 else a)
        obs = {"state": np.concatenate(parts, axis=1), **obs}
    if reward_key is None:
        rewards = np.zeros(T)
    else:
        rewards = read(dataset(g, reward_key, where), f"{where}/{reward_key}", "")
        if rewards.ndim != 1:
            _fail(src, f"{where}/{reward_key}", f"[T={T}]", f"shape {rewards.shape}")
    if "dones" in g:
        dones = read(dataset(g, "dones", where), f"{where}/dones", "")
        if dones.ndim != 1:
            _fail(src, f"{where}/dones", f"[T={T}]", f"shape {dones.shape}")
        dones = _flags(dones, src, f"{where}/dones")
    else:
        dones = None
    metadata: dict[str, Any] = {"demo": where.split("/")[-1]}
    if "successes" in g:
        successes = _flags(
            read(dataset(g, "successes", where), f"{where}/successes", ""),
            src,
            f"{where}/successes",
        )
    else:
        successes = None
        metadata["successes_recorded"] = False
    observations = obs["state"] if list(obs) == ["state"] else obs
    return Trajectory(observations, actions[()], rewards, successes, dones, task, "", metadata)


# --------------------------------------------------------------------------- LeRobot


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{extra} needs the '{module}' package (pip install {module})") from e


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        _fail(path, "/", "a JSON-lines file", "nothing (missing)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            _fail(path, f"line {i + 1}", "a JSON object", f"{line[:60]!r} ({e})")
        if not isinstance(row, dict):
            _fail(path, f"line {i + 1}", "a JSON object", type(row).__name__)
        rows.append(row)
    return rows


def _obs_name(feature: str) -> str:
    """``observation.state`` -> ``state``, ``observation.images.top`` -> ``images.top``."""
    return feature[len("observation.") :] if feature.startswith("observation.") else feature


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
    by :mod:`robopref.data.lerobot`, streaming the chunk files; the arguments and the result
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
    from robopref.data.lerobot import fold_state, import_lerobot_v3, read_info, select_keys

    root = Path(root)
    info_path = root / "meta" / "info.json"
    info = read_info(root)
    version = str(info.get("codebase_version", ""))
    if filter_key is not None:
        episodes = split_episodes(info, info_path, filter_key, episodes)
    if version == "v3.0":
        return import_lerobot_v3(
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
    if version not in ("v2.0", "v2.1"):
        _fail(
            info_path,
            "codebase_version",
            "'v2.0', 'v2.1' or 'v3.0' (the LeRobot layouts robopref reads)",
            repr(version),
        )
    for name in ("fps", "features", "data_path"):
        if name not in info:
            _fail(info_path, name, "a value", "nothing (missing)")
    features: dict[str, dict[str, Any]] = info["features"]
    fps = float(info["fps"])
    chunks_size = int(info.get("chunks_size", 1000))
    if action_key not in features:
        _fail(
            info_path,
            f"features['{action_key}']",
            "the action feature",
            f"features {sorted(features)}",
        )
    keys = select_keys(features, info_path, obs_keys, state_keys, image_keys, decode_videos)
    obs_keys = keys.features
    names = obs_keys  # observations are keyed by feature name until fold_state
    if reward_key is not None and reward_key not in features:
        if reward_key != "next.reward":  # only the default may be absent
            _fail(
                info_path,
                f"features['{reward_key}']",
                "the reward feature",
                f"features {sorted(features)}",
            )
        reward_key = None
    videos = [k for k in obs_keys if features[k].get("dtype") == "video"]
    if videos and "video_path" not in info:
        _fail(
            info_path,
            "video_path",
            "a template for the video features " + str(videos),
            "nothing (missing)",
        )

    ep_rows = _read_jsonl(root / "meta" / "episodes.jsonl")
    meta_eps = {}
    for row in ep_rows:
        if "episode_index" not in row:
            _fail(
                root / "meta" / "episodes.jsonl",
                "episode_index",
                "an integer in every line",
                str(row)[:60],
            )
        meta_eps[int(row["episode_index"])] = row
    tasks_path = root / "meta" / "tasks.jsonl"
    task_names = (
        {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(tasks_path)}
        if tasks_path.exists()
        else {}
    )
    wanted = sorted(meta_eps) if episodes is None else [int(e) for e in episodes]
    for e in wanted:
        if e not in meta_eps:
            _fail(
                root / "meta" / "episodes.jsonl",
                f"episode {e}",
                "an episode listed there",
                f"episodes {sorted(meta_eps)[:10]}",
            )

    pq = _require("pyarrow.parquet", "import_lerobot")
    trajectories = []
    for e in wanted:
        chunk = e // chunks_size
        file = root / info["data_path"].format(episode_chunk=chunk, episode_index=e)
        if not file.is_file():
            _fail(file, "/", f"the parquet file of episode {e}", "nothing (missing)")
        # ParquetFile.read: no dataset discovery and no thread pool for a one-episode file
        table = pq.ParquetFile(file).read(use_threads=False)
        T = table.num_rows
        length = meta_eps[e].get("length")
        if length is not None and int(length) != T:
            _fail(file, "rows", f"{length} frames (meta/episodes.jsonl length)", f"{T} rows")

        def column(key: str, scalar: bool = False, _file=file, _table=table, _T=T) -> np.ndarray:
            if key not in _table.column_names:
                _fail(
                    _file,
                    key,
                    f"a column (features {sorted(features)})",
                    f"columns {_table.column_names}",
                )
            shape = tuple(int(s) for s in features.get(key, {}).get("shape", ()) or ())
            arr = _arrow_to_numpy(_table.column(key), _T, _file, key)
            if scalar:
                if arr.ndim == 2 and arr.shape[1] == 1:
                    arr = arr[:, 0]
                if arr.shape != (_T,):
                    _fail(_file, key, f"[T={_T}] (one value per frame)", f"shape {arr.shape}")
                return arr
            if shape == (1,) and arr.ndim == 1:
                arr = arr[:, None]
            if shape and arr.shape[1:] != shape:
                _fail(
                    _file,
                    key,
                    f"[T={_T}, {', '.join(map(str, shape))}] (info.json shape)",
                    f"shape {arr.shape}",
                )
            return arr

        if "episode_index" in table.column_names:
            ei = column("episode_index", scalar=True)
            if (ei != e).any():
                _fail(
                    file,
                    "episode_index",
                    f"{e} in every row",
                    f"values {sorted(set(ei.tolist()))[:5]}",
                )
        if "frame_index" in table.column_names:
            fi = column("frame_index", scalar=True)
            if not np.array_equal(fi, np.arange(T)):
                _fail(file, "frame_index", f"0, 1, ..., {T - 1} in order", f"{fi[:5].tolist()}...")
        timestamps = (
            column("timestamp", scalar=True).astype(np.float64)
            if "timestamp" in table.column_names
            else np.arange(T) / fps
        )
        obs: dict[str, np.ndarray] = {}
        for key, name in zip(obs_keys, names):
            dtype = features[key].get("dtype")
            if dtype == "video":
                vfile = root / info["video_path"].format(
                    episode_chunk=chunk, episode_index=e, video_key=key
                )
                obs[name] = _decode_video(vfile, timestamps, tolerance_s, features[key])
            elif dtype == "image":
                obs[name] = _decode_images(table.column(key), file, key, features[key])
            else:
                obs[name] = column(key)
        actions = column(action_key)
        if actions.ndim == 1:
            actions = actions[:, None]
        metadata: dict[str, Any] = {"episode_index": e}
        rewards = column(reward_key, scalar=True) if reward_key else np.zeros(T)
        dones = (
            _flags(column("next.done", scalar=True), file, "next.done")
            if "next.done" in table.column_names
            else None
        )
        if "next.success" in table.column_names:
            successes = _flags(column("next.success", scalar=True), file, "next.success")
        else:
            successes = None
            metadata["successes_recorded"] = False
        instruction = ""
        if "task_index" in table.column_names and T:
            ti = int(column("task_index", scalar=True)[0])
            instruction = task_names.get(ti, "")
        if not instruction and meta_eps[e].get("tasks"):
            instruction = str(meta_eps[e]["tasks"][0])
        obs = fold_state(obs, keys)
        observations = obs["state"] if list(obs) == ["state"] else obs
        trajectories.append(
            Trajectory(
                observations,
                actions,
                rewards,
                successes,
                dones,
                instruction if task is None else task,
                instruction,
                metadata,
            )
        )
    position = {e: i for i, e in enumerate(wanted)}
    metadata = lerobot_dataset_metadata(
        root, info, info_path, keys, reward_key is not None, position
    )
    out = TrajectoryDataset(trajectories, None, metadata)
    out.validate(str(root))
    return out


def _arrow_to_numpy(col: Any, T: int, file: Path, key: str) -> np.ndarray:
    """A (possibly nested) list column of T rows as a dense ``[T, ...]`` array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    dims = []
    while (
        pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
    ):
        if arr.null_count:
            _fail(file, key, "no missing values", f"{arr.null_count} null row(s)")
        lengths = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            _fail(file, key, "lists of one length in every row", f"lengths {lengths[:5].tolist()}")
        dims.append(int(lengths[0]) if len(lengths) else 0)
        arr = arr.flatten()
    if arr.null_count:
        _fail(file, key, "no missing values", f"{arr.null_count} null value(s)")
    values = arr.to_numpy(zero_copy_only=False)
    shape = (T, *dims)
    if int(np.prod(shape)) != len(values):
        _fail(file, key, f"{T} rows of shape {tuple(dims)}", f"{len(values)} values")
    return values.reshape(shape)


def _decode_video(
    file: Path, timestamps: np.ndarray, tolerance_s: float, feature: dict
) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` uint8 of ``file`` nearest to each of ``timestamps`` (seconds)."""
    av = _require("av", "decoding LeRobot videos")
    if not file.is_file():
        _fail(file, "/", "the video of this episode", "nothing (missing)")
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
        _fail(file, "/", f"{len(timestamps)} video frames", "no frames")
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
        _fail(
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
        _fail(file, "frames", f"frames of shape {shape} (info.json)", f"shape {video.shape[1:]}")
    return video


def _decode_images(col: Any, file: Path, key: str, feature: dict) -> np.ndarray:
    """PNG/JPEG images stored in the parquet (struct {bytes, path}) as ``[T, H, W, C]`` uint8."""
    import io

    image_mod = _require("PIL.Image", "decoding LeRobot image features")
    out = []
    for i, cell in enumerate(col.to_pylist()):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            _fail(file, key, "image bytes in every row", f"none in row {i}")
        out.append(np.asarray(image_mod.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(out) if out else np.zeros((0, *feature.get("shape", (0, 0, 3))), np.uint8)


def split_episodes(
    info: dict[str, Any], info_path: Path, name: str, episodes: Sequence[int] | None
) -> list[int]:
    """The episodes of split ``name`` (intersected with ``episodes`` if given)."""
    splits = _lerobot_splits(info.get("splits", {}), info_path)
    if name not in splits:
        _fail(
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
    if not rewards_recorded:
        metadata["rewards_recorded"] = False
    splits = _lerobot_splits(info.get("splits", {}), info_path)
    if splits:
        metadata["filter_keys"] = {
            name: [position[i] for i in idx if i in position] for name, idx in splits.items()
        }
    return metadata


def _lerobot_splits(splits: Any, info_path: Path) -> dict[str, list[int]]:
    """``{"train": "0:40"}`` -> ``{"train": [0, ..., 39]}``."""
    out = {}
    if not isinstance(splits, dict):
        _fail(info_path, "splits", "a dict name -> 'start:stop'", type(splits).__name__)
    for name, spec in splits.items():
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(spec))
        if m is None:
            _fail(info_path, f"splits['{name}']", "'start:stop' episode indices", repr(spec))
        out[str(name)] = list(range(int(m.group(1)), int(m.group(2))))
    return out


# --------------------------------------------------------------------------- dispatch


def detect_format(path: PathLike) -> str:
    """``"lerobot"`` for a folder with ``meta/info.json``, ``"robomimic"`` for an HDF5 file."""
    path = Path(path)
    if path.is_dir():
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        _fail(
            path,
            "/",
            "a LeRobot folder (meta/info.json) or a robomimic HDF5 file",
            "a folder without meta/info.json",
        )
    if path.is_file() and h5py.is_hdf5(path):
        return "robomimic"
    _fail(
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
    read whole and written with :func:`robopref.data.save_dataset`.

    Returns:
        ``{"episodes": N, "frames": F, "observations": {key: per-step shape}}``.
    """
    from robopref.data.hdf5 import save_dataset
    from robopref.data.locks import writer_lock

    if format == "auto":
        format = detect_format(path)
    with writer_lock(out, what="import into it"):
        if format == "lerobot":
            from robopref.data.lerobot import read_info, stream_v3_to_file

            info = read_info(Path(path))
            exported = (Path(path) / "meta" / "robopref.json").is_file()
            if str(info.get("codebase_version")) == "v3.0" and not exported:
                return stream_v3_to_file(Path(path), info, Path(out), **kwargs)
        ds = import_dataset(path, format=format, **kwargs)
        save_dataset(ds, out)
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
    fmt = detect_format(path)
    out: dict[str, Any] = {"format": fmt, "source": str(path)}
    if fmt == "lerobot":
        from robopref.data.lerobot import read_info

        info = read_info(path)
        feats = info.get("features", {})
        out["codebase_version"] = info.get("codebase_version")
        out["episodes"] = info.get("total_episodes")
        out["observations"] = {
            k: f"{list(v.get('shape') or [])} {v.get('dtype')}"
            + (" (image)" if v.get("dtype") == "video" else "")
            for k, v in feats.items()
            if k.startswith("observation.")
        }
        out["other"] = {
            k: f"{list(v.get('shape') or [])} {v.get('dtype')}"
            for k, v in feats.items()
            if not k.startswith("observation.")
        }
        out["filter_keys"] = sorted((info.get("splits") or {}).keys())
        return out
    with h5py.File(path, "r") as f:
        data = f.get("data")
        demos = (
            sorted((n for n in data if _DEMO.match(n)), key=lambda n: int(n[5:]))
            if isinstance(data, h5py.Group)
            else []
        )
        out["episodes"] = len(demos)
        obs, other = {}, {}
        if demos:
            g = data[demos[0]]
            for k, d in (g.get("obs") or {}).items():
                if isinstance(d, h5py.Dataset):
                    image = d.dtype == np.uint8 and d.ndim == 4
                    obs[k] = f"{list(d.shape[1:])} {d.dtype}" + (" (image)" if image else "")
            for k, d in g.items():
                if isinstance(d, h5py.Dataset):
                    other[k] = f"{list(d.shape[1:])} {d.dtype}"
                elif k not in ("obs",):
                    other[k] = "group"
        out["observations"] = obs
        out["other"] = other
        out["filter_keys"] = sorted(f["mask"]) if isinstance(f.get("mask"), h5py.Group) else []
    return out
