"""LeRobot v2.0 / v2.1 folders: one parquet file (and one mp4 per video feature) per episode.

Layout read: ``meta/info.json``, ``meta/episodes.jsonl``, ``meta/tasks.jsonl``,
``data/chunk-XXX/episode_XXXXXX.parquet`` and optional
``videos/chunk-XXX/<key>/episode_XXXXXX.mp4``; needs ``pyarrow`` and, for video features,
``av`` (PyAV). :func:`robopref.data.importers.import_lerobot` picks this reader or the v3.0
one from ``codebase_version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data.formats._common import arrow_to_numpy, fail, flags, read_jsonl, require
from robopref.data.formats.lerobot_meta import (
    decode_images,
    decode_video,
    fold_state,
    frame_tasks,
    lerobot_dataset_metadata,
    select_keys,
)
from robopref.data.trajectory import Trajectory, TrajectoryDataset


def import_lerobot_v2(
    root: Path,
    info: dict[str, Any],
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
) -> TrajectoryDataset:
    """Every selected episode of a v2.x folder (``info`` is its ``meta/info.json``); the
    arguments are those of :func:`robopref.data.importers.import_lerobot`."""
    info_path = root / "meta" / "info.json"
    for name in ("fps", "features", "data_path"):
        if name not in info:
            fail(info_path, name, "a value", "nothing (missing)")
    features: dict[str, dict[str, Any]] = info["features"]
    fps = float(info["fps"])
    chunks_size = int(info.get("chunks_size", 1000))
    if action_key not in features:
        fail(
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
            fail(
                info_path,
                f"features['{reward_key}']",
                "the reward feature",
                f"features {sorted(features)}",
            )
        reward_key = None
    videos = [k for k in obs_keys if features[k].get("dtype") == "video"]
    if videos and "video_path" not in info:
        fail(
            info_path,
            "video_path",
            "a template for the video features " + str(videos),
            "nothing (missing)",
        )

    ep_rows = read_jsonl(root / "meta" / "episodes.jsonl")
    meta_eps = {}
    for row in ep_rows:
        if "episode_index" not in row:
            fail(
                root / "meta" / "episodes.jsonl",
                "episode_index",
                "an integer in every line",
                str(row)[:60],
            )
        meta_eps[int(row["episode_index"])] = row
    tasks_path = root / "meta" / "tasks.jsonl"
    task_names = (
        {int(r["task_index"]): str(r["task"]) for r in read_jsonl(tasks_path)}
        if tasks_path.exists()
        else {}
    )
    wanted = sorted(meta_eps) if episodes is None else [int(e) for e in episodes]
    for e in wanted:
        if e not in meta_eps:
            fail(
                root / "meta" / "episodes.jsonl",
                f"episode {e}",
                "an episode listed there",
                f"episodes {sorted(meta_eps)[:10]}",
            )

    pq = require("pyarrow.parquet", "import_lerobot")
    trajectories = []
    for e in wanted:
        chunk = e // chunks_size
        file = root / info["data_path"].format(episode_chunk=chunk, episode_index=e)
        if not file.is_file():
            fail(file, "/", f"the parquet file of episode {e}", "nothing (missing)")
        # ParquetFile.read: no dataset discovery and no thread pool for a one-episode file
        table = pq.ParquetFile(file).read(use_threads=False)
        T = table.num_rows
        length = meta_eps[e].get("length")
        if length is not None and int(length) != T:
            fail(file, "rows", f"{length} frames (meta/episodes.jsonl length)", f"{T} rows")

        def column(key: str, scalar: bool = False, _file=file, _table=table, _T=T) -> np.ndarray:
            if key not in _table.column_names:
                fail(
                    _file,
                    key,
                    f"a column (features {sorted(features)})",
                    f"columns {_table.column_names}",
                )
            shape = tuple(int(s) for s in features.get(key, {}).get("shape", ()) or ())
            arr = arrow_to_numpy(_table.column(key), _T, _file, key)
            if scalar:
                if arr.ndim == 2 and arr.shape[1] == 1:
                    arr = arr[:, 0]
                if arr.shape != (_T,):
                    fail(_file, key, f"[T={_T}] (one value per frame)", f"shape {arr.shape}")
                return arr
            if shape == (1,) and arr.ndim == 1:
                arr = arr[:, None]
            if shape and arr.shape[1:] != shape:
                fail(
                    _file,
                    key,
                    f"[T={_T}, {', '.join(map(str, shape))}] (info.json shape)",
                    f"shape {arr.shape}",
                )
            return arr

        if "episode_index" in table.column_names:
            ei = column("episode_index", scalar=True)
            if (ei != e).any():
                fail(
                    file,
                    "episode_index",
                    f"{e} in every row",
                    f"values {sorted(set(ei.tolist()))[:5]}",
                )
        if "frame_index" in table.column_names:
            fi = column("frame_index", scalar=True)
            if not np.array_equal(fi, np.arange(T)):
                fail(file, "frame_index", f"0, 1, ..., {T - 1} in order", f"{fi[:5].tolist()}...")
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
                obs[name] = decode_video(vfile, timestamps, tolerance_s, features[key])
            elif dtype == "image":
                obs[name] = decode_images(table.column(key), file, key, features[key])
            else:
                obs[name] = column(key)
        actions = column(action_key)
        if actions.ndim == 1:
            actions = actions[:, None]
        metadata: dict[str, Any] = {"episode_index": e}
        rewards = column(reward_key, scalar=True) if reward_key else np.zeros(T)
        dones = (
            flags(column("next.done", scalar=True), file, "next.done")
            if "next.done" in table.column_names
            else None
        )
        if "next.success" in table.column_names:
            successes = flags(column("next.success", scalar=True), file, "next.success")
        else:
            successes = None
            metadata["successes_recorded"] = False
        instruction, step_tasks = "", None
        if "task_index" in table.column_names and T:
            instruction, step_tasks = frame_tasks(
                column("task_index", scalar=True), task_names, file, e
            )
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
                step_tasks,
            )
        )
    position = {e: i for i, e in enumerate(wanted)}
    metadata = lerobot_dataset_metadata(
        root, info, info_path, keys, reward_key is not None, position
    )
    out = TrajectoryDataset(trajectories, None, metadata)
    out.validate(str(root))
    return out
