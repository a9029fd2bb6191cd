"""The LeRobot v3.0 writer: :func:`export_lerobot`.

The folder written is one that ``LeRobotDataset(repo_id, root=OUT)`` of LeRobot 0.4 loads,
with robopref's side files (the preference table and ``meta/robopref.json``, see
:mod:`robopref.data.formats.preferences`) beside LeRobot's own metadata.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data.formats import lerobot_stats
from robopref.data.formats._common import (
    PathLike,
    atomic_folder,
    json_default,
    locked_output,
    output_errors,
    require,
)
from robopref.data.formats.preferences import METADATA_FILE, PREFERENCES_TABLE, preferences_table
from robopref.data.trajectory import DataValidationError, TrajectoryDataset

# LeRobot's DEFAULT_CHUNK_SIZE; data files roll over after this many frames (LeRobot rolls
# over at 100 MB; any split is valid since meta/episodes records each episode's file).
_CHUNKS_SIZE = 1000
_FRAMES_PER_FILE = 200_000


# An extra per-step array of a trajectory becomes a LeRobot feature of this name; the recorded
# reward kept beside a learned one reads as a reward, the others are marked as robopref's.
ORIGINAL_REWARD_FEATURE = "next.original_reward"


def extra_feature(key: str) -> str:
    """The LeRobot feature name of ``Trajectory.extras[key]``."""
    return ORIGINAL_REWARD_FEATURE if key == "original_rewards" else f"robopref.{key}"


def rewards_recorded(dataset: TrajectoryDataset) -> bool:
    """False for a dataset imported without rewards (``metadata["rewards_recorded"]``)."""
    return dataset.metadata.get("rewards_recorded", True) is not False


def lerobot_features(dataset: TrajectoryDataset) -> dict[str, tuple[str, Any]]:
    """LeRobot feature name -> (robopref field, per-step array of trajectory 0).

    Fields: ``obs/<key>``, ``actions``, ``rewards`` (absent for a dataset without rewards)
    and ``extras/<key>``.
    """
    t0 = dataset[0]
    obs = t0.observations if isinstance(t0.observations, dict) else {"state": t0.observations}
    out: dict[str, tuple[str, Any]] = {}
    for key, arr in obs.items():
        image = arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3
        name = key if key.startswith("images.") or not image else f"images.{key}"
        out[f"observation.{name}"] = (f"obs/{key}", arr)
    out["action"] = ("actions", t0.actions)
    if rewards_recorded(dataset):
        out["next.reward"] = ("rewards", t0.rewards)
    for key, arr in t0.extras.items():
        out[extra_feature(key)] = (f"extras/{key}", arr)
    return out


def field_values(t: Any, field: str) -> np.ndarray:
    """The per-step array of robopref field ``field`` (see :func:`lerobot_features`)."""
    if field == "actions":
        return t.actions
    if field == "rewards":
        return t.rewards
    if field.startswith("extras/"):
        return t.extras[field[7:]]
    return t.observations[field[4:]] if isinstance(t.observations, dict) else t.observations


def _feature_info(arr: np.ndarray, image: bool, names: Any) -> dict[str, Any]:
    if image:
        return {
            "dtype": "image",
            "shape": list(arr.shape[1:]),
            "names": ["height", "width", "channels"],
        }
    shape = list(arr.shape[1:]) or [1]
    # names of the last dimension, as LeRobot's features carry them (q0..q8, x/y/z, ...)
    ok = isinstance(names, dict) or (
        isinstance(names, list) and len(shape) == 1 and len(names) == shape[0]
    )
    return {"dtype": str(arr.dtype), "shape": shape, "names": names if ok else None}


def _tasks_table(pa: Any, tasks: list[str]) -> Any:
    """``meta/tasks.parquet`` as pandas writes it (LeRobot reads it with pandas and uses the
    index, the task string, as ``item["task"]``)."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table(
        {
            "task_index": pa.array(np.arange(len(tasks), dtype=np.int64)),
            "task": pa.array(tasks, pa.string()),
        }
    )
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _list_column(pa: Any, arr: np.ndarray) -> Any:
    """``[T, d]`` -> fixed-size list column (``[T]`` or ``[T, 1]`` -> plain column)."""
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return pa.array(arr.reshape(-1))
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    out = flat
    for d in reversed(arr.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, int(d))
    return out


def _png_column(pa: Any, frames: np.ndarray) -> Any:
    image_mod = require("PIL.Image", "export_lerobot of image observations")
    cells = []
    for f in frames:
        buf = io.BytesIO()
        image_mod.fromarray(f).save(buf, format="PNG", compress_level=1)
        cells.append({"bytes": buf.getvalue(), "path": None})
    return pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def export_lerobot(
    dataset: TrajectoryDataset,
    out: PathLike,
    *,
    fps: float | None = None,
    robot_type: str | None = None,
) -> None:
    """Write ``dataset`` as a LeRobot v3.0 folder ``out`` (which must not exist).

    Features: ``observation.state`` (or each low-dim observation key as
    ``observation.<key>``), uint8 ``[T, H, W, 3]`` observations as ``observation.images.<key>``
    of dtype ``image`` (lossless PNG in the parquet), ``action``, ``next.reward`` (not for a
    dataset imported without rewards, ``metadata["rewards_recorded"] = False``), each
    ``Trajectory.extras`` array (``original_rewards`` as ``next.original_reward``, others as
    ``robopref.<key>``), ``next.done``, ``next.success`` and LeRobot's index columns. A
    feature's ``names`` come from ``metadata["feature_names"][feature]`` (an import from
    LeRobot fills it). Each frame's task is its trajectory's ``step_tasks`` entry, or the
    episode's ``instruction`` (or ``task`` when that is empty). ``meta/stats.json`` and the
    per-episode ``stats/...`` columns are LeRobot's normalisation statistics
    (:mod:`robopref.data.formats.lerobot_stats`). All episodes go to
    ``data/chunk-000/file-000.parquet`` (more files past 200k frames).

    Side tables: ``meta/robopref_preferences.parquet`` (one row per query: ``episode_index``,
    ``start``, ``length``, ``labels``, ``mask`` as K-lists, ``confidence``; schema metadata
    ``robopref`` holds ``label_kind``, ``teacher``, ``seed``, ``metadata``) and
    ``meta/robopref.json`` (dataset metadata and each episode's task and metadata).

    Raises:
        DataValidationError: an empty or inconsistent dataset, or ``out`` exists.
    """
    require("pyarrow", "export_lerobot")
    out = Path(out)
    source = f"export_lerobot({out})"
    if len(dataset) == 0:
        raise DataValidationError(f"{source}: trajectories: expected at least one, found 0")
    dataset.validate(source)
    if os.path.lexists(out):
        raise DataValidationError(f"{source}: /: expected a new folder, found an existing path")
    fps = float(fps if fps is not None else dataset.metadata.get("fps") or 10.0)
    features = lerobot_features(dataset)
    images = {k for k, (_, a) in features.items() if a.dtype == np.uint8 and a.ndim == 4}
    names = dataset.metadata.get("feature_names") or {}
    info_features = {
        k: _feature_info(a, k in images, names.get(k) if isinstance(names, dict) else None)
        for k, (_, a) in features.items()
    }
    if "next.reward" in features:
        # float32 as LeRobot records rewards, unless that would round them
        f32 = all(np.array_equal(t.rewards.astype(np.float32), t.rewards) for t in dataset)
        info_features["next.reward"]["dtype"] = "float32" if f32 else "float64"
    info_features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    info_features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    for k, dt in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        info_features[k] = {"dtype": dt, "shape": [1], "names": None}
    tasks = list(dict.fromkeys(x for t in dataset for x in t.frame_tasks().tolist()))

    with locked_output(out, "export to it"):
        if os.path.lexists(out):  # another export may have finished since the check above
            raise DataValidationError(f"{source}: /: expected a new folder, found an existing path")
        with output_errors(out), atomic_folder(out) as tmp:
            _write_lerobot(tmp, dataset, features, images, info_features, tasks, fps, robot_type)


def _frame_columns(
    t: Any,
    e: int,
    first_index: int,
    features: dict[str, tuple[str, Any]],
    info_features: dict[str, Any],
    task_index: dict[str, int],
    fps: float,
) -> dict[str, np.ndarray]:
    """Episode ``e``'s values of every feature, in the dtypes written."""
    T = len(t)
    cols = {}
    for name, (field, _) in features.items():
        arr = field_values(t, field)
        dtype = info_features[name]["dtype"]
        cols[name] = arr if dtype == "image" else arr.astype(dtype, copy=False)
    cols["next.done"] = t.dones
    cols["next.success"] = t.successes
    cols["timestamp"] = (np.arange(T) / fps).astype(np.float32)
    cols["frame_index"] = np.arange(T, dtype=np.int64)
    cols["episode_index"] = np.full(T, e, dtype=np.int64)
    cols["index"] = np.arange(first_index, first_index + T, dtype=np.int64)
    cols["task_index"] = np.array([task_index[x] for x in t.frame_tasks().tolist()], np.int64)
    return cols


def _write_lerobot(
    root: Path,
    dataset: TrajectoryDataset,
    features: dict[str, tuple[str, Any]],
    images: set[str],
    info_features: dict[str, Any],
    tasks: list[str],
    fps: float,
    robot_type: str | None,
) -> None:
    pa = require("pyarrow", "export_lerobot")
    pq = require("pyarrow.parquet", "export_lerobot")
    task_index = {s: i for i, s in enumerate(tasks)}
    data_tmpl = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    writer = None
    file_idx, frames_in_file, index = 0, 0, 0
    ep_rows: dict[str, list] = {
        k: []
        for k in (
            "episode_index",
            "tasks",
            "length",
            "data/chunk_index",
            "data/file_index",
            "dataset_from_index",
            "dataset_to_index",
        )
    }
    ep_stats: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in info_features}
    try:
        for e, t in enumerate(dataset):
            T = len(t)
            if writer is not None and frames_in_file + T > _FRAMES_PER_FILE:
                writer.close()
                writer, file_idx, frames_in_file = None, file_idx + 1, 0
            values = _frame_columns(t, e, index, features, info_features, task_index, fps)
            for name, arr in values.items():
                ep_stats[name].append(lerobot_stats.feature_stats(arr, name in images))
            table = pa.table(
                {
                    k: _png_column(pa, v) if k in images else _list_column(pa, v)
                    for k, v in values.items()
                }
            )
            chunk, fidx = divmod(file_idx, _CHUNKS_SIZE)
            if writer is None:
                path = root / data_tmpl.format(chunk_index=chunk, file_index=fidx)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            writer.write_table(table)
            for k, v in (
                ("episode_index", e),
                ("tasks", list(dict.fromkeys(t.frame_tasks().tolist()))),
                ("length", T),
                ("data/chunk_index", chunk),
                ("data/file_index", fidx),
                ("dataset_from_index", index),
                ("dataset_to_index", index + T),
            ):
                ep_rows[k].append(v)
            index += T
            frames_in_file += T
    finally:
        if writer is not None:
            writer.close()
    for name, per_episode in ep_stats.items():
        for stat in lerobot_stats.STAT_KEYS:
            ep_rows[f"stats/{name}/{stat}"] = [np.asarray(s[stat]).tolist() for s in per_episode]
    ep_rows["meta/episodes/chunk_index"] = [0] * len(dataset)
    ep_rows["meta/episodes/file_index"] = [0] * len(dataset)
    ep_path = root / "meta/episodes/chunk-000/file-000.parquet"
    ep_path.parent.mkdir(parents=True)
    pq.write_table(pa.table(ep_rows), ep_path)
    pq.write_table(_tasks_table(pa, tasks), root / "meta/tasks.parquet")
    stats = {
        name: lerobot_stats.to_json(lerobot_stats.aggregate(per_episode))
        for name, per_episode in ep_stats.items()
    }
    (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    info = {
        "codebase_version": "v3.0",
        "robot_type": robot_type or dataset.metadata.get("robot_type"),
        "total_episodes": len(dataset),
        "total_frames": index,
        "total_tasks": len(tasks),
        "chunks_size": _CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": int(fps) if float(fps).is_integer() else fps,
        "splits": {"train": f"0:{len(dataset)}"},
        "data_path": data_tmpl,
        "video_path": None,
        "features": info_features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    meta = {
        "dataset": dataset.metadata,
        "episodes": [
            {"task": t.task, "instruction": t.instruction, "metadata": t.metadata} for t in dataset
        ],
        "observations": {n: f[4:] for n, (f, _) in features.items() if f.startswith("obs/")},
        "extras": {n: f[7:] for n, (f, _) in features.items() if f.startswith("extras/")},
        "array_observations": not isinstance(dataset[0].observations, dict),
    }
    (root / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=json_default))
    if dataset.queries is not None:
        pq.write_table(preferences_table(dataset.queries), root / PREFERENCES_TABLE)
