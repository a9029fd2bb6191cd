"""LeRobot v3.0 folders: a streaming reader, the in-memory import and the import to HDF5.

LeRobot 0.4 and later write only the v3.0 layout::

    meta/info.json                 codebase_version "v3.0", fps, chunks_size, features,
                                   data_path  "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                                   video_path "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
                                   splits ({"train": "0:40"})
    meta/tasks.parquet             one row per task: task_index and the task string (the index)
    meta/episodes/chunk-XXX/file-YYY.parquet
                                   one row per episode: episode_index, tasks, length,
                                   data/chunk_index, data/file_index, dataset_from_index,
                                   dataset_to_index, videos/<key>/{chunk_index, file_index,
                                   from_timestamp, to_timestamp}, stats/...
    data/chunk-XXX/file-YYY.parquet
                                   the frames of MANY episodes, one row per frame
    videos/<key>/chunk-XXX/file-YYY.mp4
                                   the frames of many episodes one after the other; episode e's
                                   frame at row timestamp t is at from_timestamp(e) + t

Memory stays bounded by one parquet record batch plus the episodes being assembled: the data
files are read batch by batch (only the needed columns), and for a video only the segment
[from_timestamp, to_timestamp] of the wanted episode is decoded (seek to the key frame before
it, then forward). :func:`iter_lerobot_v3` yields one trajectory at a time;
``robopref import`` writes them to HDF5 one by one.

Video frames are decoded with PyAV (``av``) to RGB24 and matched to each row's timestamp like
LeRobot does (nearest decoded frame within ``tolerance_s``); the tests compare them with
LeRobot's own decode of the committed fixtures (``tests/fixtures/lerobot/``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data import hdf5
from robopref.data.formats._common import (
    arrow_to_numpy,
    fail,
    flags,
    new_hdf5_file,
    require,
)
from robopref.data.formats.lerobot_meta import (
    LeRobotKeys,
    decode_images,
    decode_video_segment,
    extra_features,
    fold_state,
    frame_tasks,
    lerobot_dataset_metadata,
    select_keys,
    split_episodes,
)
from robopref.data.formats.preferences import METADATA_FILE, PREFERENCES_TABLE, read_preferences
from robopref.data.trajectory import DataValidationError, Trajectory, TrajectoryDataset

# Rows per parquet record batch read at a time: about _BATCH_BYTES of uncompressed columns,
# between 64 and _BATCH_ROWS rows (bounded memory; large enough to be fast).
_BATCH_ROWS = 65536
_BATCH_BYTES = 8 * 2**20


@dataclass
class _Episode:
    index: int
    length: int
    tasks: list[str]
    data_file: tuple[int, int]
    from_index: int
    videos: dict[str, tuple[int, int, float, float]]  # key -> chunk, file, from_ts, to_ts


def _read_parquet_columns(pq: Any, file: Path, columns: list[str], what: str) -> Any:
    schema = pq.read_schema(file)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        fail(file, missing[0], f"a column of {what}", f"columns {schema.names[:12]}")
    return pq.read_table(file, columns=columns)


def _episodes_v3(
    pq: Any, root: Path, video_keys: list[str], wanted: Sequence[int] | None
) -> dict[int, _Episode]:
    folder = root / "meta" / "episodes"
    files = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not files:
        fail(
            folder,
            "chunk-XXX/file-YYY.parquet",
            "the episode metadata of a v3.0 dataset",
            "no file",
        )
    cols = [
        "episode_index",
        "tasks",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
    ]
    vcols = [
        f"videos/{k}/{c}"
        for k in video_keys
        for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
    ]
    out: dict[int, _Episode] = {}
    want = None if wanted is None else set(int(e) for e in wanted)
    for file in files:
        t = _read_parquet_columns(pq, file, cols + vcols, "the episode metadata").to_pydict()
        for i, e in enumerate(t["episode_index"]):
            if want is not None and e not in want:
                continue
            videos = {
                k: (
                    int(t[f"videos/{k}/chunk_index"][i]),
                    int(t[f"videos/{k}/file_index"][i]),
                    float(t[f"videos/{k}/from_timestamp"][i]),
                    float(t[f"videos/{k}/to_timestamp"][i]),
                )
                for k in video_keys
            }
            out[int(e)] = _Episode(
                int(e),
                int(t["length"][i]),
                [str(x) for x in (t["tasks"][i] or [])],
                (int(t["data/chunk_index"][i]), int(t["data/file_index"][i])),
                int(t["dataset_from_index"][i]),
                videos,
            )
    if want is not None:
        for e in sorted(want):
            if e not in out:
                fail(folder, f"episode {e}", "an episode listed there", "nothing (missing)")
    return dict(sorted(out.items()))


def _tasks_v3(pq: Any, root: Path) -> dict[int, str]:
    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        return {}
    table = pq.read_table(path)
    names = table.column_names
    if "task_index" not in names:
        fail(path, "task_index", "a column", f"columns {names}")
    # pandas writes the task strings as the index column ("task" or "__index_level_0__")
    text = next((c for c in ("task", "__index_level_0__") if c in names), None)
    if text is None:
        fail(path, "task", "a column of task strings", f"columns {names}")
    return {
        int(i): str(s)
        for i, s in zip(table.column("task_index").to_pylist(), table.column(text).to_pylist())
    }


@dataclass
class LeRobotV3Reader:
    """Streams the episodes of a v3.0 folder as :class:`Trajectory` objects.

    Construct with :meth:`open`; iterate with :meth:`__iter__`; ``metadata`` is the dataset
    metadata (source, fps, splits as ``filter_keys`` over the episodes read).
    """

    root: Path
    info: dict[str, Any]
    keys: LeRobotKeys
    action_key: str
    reward_key: str | None
    episodes: dict[int, _Episode]
    tasks: dict[int, str]
    task: str | None
    tolerance_s: float
    metadata: dict[str, Any]

    @classmethod
    def open(
        cls,
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
    ) -> LeRobotV3Reader:

        info_path = root / "meta" / "info.json"
        for name in ("fps", "features", "data_path"):
            if name not in info:
                fail(info_path, name, "a value", "nothing (missing)")
        features: dict[str, dict[str, Any]] = info["features"]
        if action_key not in features:
            fail(
                info_path,
                f"features['{action_key}']",
                "the action feature",
                f"features {sorted(features)}",
            )
        keys = select_keys(features, info_path, obs_keys, state_keys, image_keys, decode_videos)
        if reward_key is not None and reward_key not in features:
            if reward_key != "next.reward":  # only the default may be absent
                fail(
                    info_path,
                    f"features['{reward_key}']",
                    "the reward feature",
                    f"features {sorted(features)}",
                )
            reward_key = None
        videos = [k for k in keys.features if features[k].get("dtype") == "video"]
        if videos and "video_path" not in info:
            fail(info_path, "video_path", f"a template for {videos}", "nothing (missing)")
        pq = require("pyarrow.parquet", "import_lerobot")
        eps = _episodes_v3(pq, root, videos, episodes)
        position = {e: i for i, e in enumerate(eps)}
        metadata = lerobot_dataset_metadata(
            root, info, info_path, keys, reward_key is not None, position
        )
        return cls(
            root,
            info,
            keys,
            action_key,
            reward_key,
            eps,
            _tasks_v3(pq, root),
            task,
            tolerance_s,
            metadata,
        )

    def __len__(self) -> int:
        return len(self.episodes)

    def _columns(self, schema_names: list[str]) -> list[str]:
        features = self.info["features"]
        cols = [k for k in self.keys.features if features[k].get("dtype") != "video"]
        cols += [self.action_key, "episode_index"]
        if self.reward_key:
            cols.append(self.reward_key)
        cols += [
            c
            for c in ("frame_index", "timestamp", "task_index", "next.done", "next.success")
            if c in schema_names
        ]
        cols += [c for c in extra_features(features) if c in schema_names]
        return list(dict.fromkeys(cols))

    def __iter__(self) -> Iterator[Trajectory]:

        pq = require("pyarrow.parquet", "import_lerobot")
        pa = require("pyarrow", "import_lerobot")
        by_file: dict[tuple[int, int], list[_Episode]] = {}
        for ep in self.episodes.values():
            by_file.setdefault(ep.data_file, []).append(ep)
        for (chunk, fidx), eps in by_file.items():
            file = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=fidx)
            if not file.is_file():
                fail(
                    file,
                    "/",
                    f"the data file of episode(s) {[e.index for e in eps][:5]} "
                    f"(meta/episodes: data/chunk_index {chunk}, data/file_index {fidx})",
                    "nothing (missing)",
                )
            pf = pq.ParquetFile(file)
            names = pf.schema_arrow.names
            columns = self._columns(names)
            for c in columns:
                if c not in names:
                    fail(file, c, "a column (a feature of info.json)", f"columns {names}")
            wanted = {e.index: e for e in eps}
            pending: dict[int, list[Any]] = {}
            meta = pf.metadata
            row_bytes = sum(
                meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)
            ) / max(meta.num_rows, 1)
            rows = int(min(_BATCH_ROWS, max(64, _BATCH_BYTES // max(row_bytes, 1))))
            for batch in pf.iter_batches(batch_size=rows, columns=columns, use_threads=False):
                ei = batch.column("episode_index").to_numpy(zero_copy_only=False)
                # rows of one episode are contiguous: split the batch at changes of episode
                starts = np.flatnonzero(np.r_[True, ei[1:] != ei[:-1]])
                ends = np.r_[starts[1:], len(ei)]
                for s, t in zip(starts, ends):
                    e = int(ei[s])
                    if e in wanted:
                        pending.setdefault(e, []).append(batch.slice(s, t - s))
                for e in [e for e in pending if e != int(ei[-1])]:
                    yield self._trajectory(
                        wanted.pop(e), pa.Table.from_batches(pending.pop(e)), file
                    )
            for e in list(pending):
                yield self._trajectory(wanted.pop(e), pa.Table.from_batches(pending.pop(e)), file)
            if wanted:
                e = min(wanted)
                fail(
                    file,
                    "episode_index",
                    f"the rows of episode {e} (meta/episodes says they are in this file)",
                    "no row",
                )

    def _trajectory(self, ep: _Episode, table: Any, file: Path) -> Trajectory:

        features = self.info["features"]
        T = table.num_rows
        e = ep.index
        if T != ep.length:
            fail(
                file,
                "episode_index",
                f"{ep.length} rows of episode {e} (meta/episodes length)",
                f"{T} rows",
            )

        def column(key: str, scalar: bool = False) -> np.ndarray:
            arr = arrow_to_numpy(table.column(key), T, file, key)
            if scalar:
                if arr.ndim == 2 and arr.shape[1] == 1:
                    arr = arr[:, 0]
                if arr.shape != (T,):
                    fail(
                        file,
                        key,
                        f"[T={T}] (one value per frame, episode {e})",
                        f"shape {arr.shape}",
                    )
                return arr
            shape = tuple(int(s) for s in features.get(key, {}).get("shape", ()) or ())
            if shape == (1,) and arr.ndim == 1:
                arr = arr[:, None]
            if shape and arr.shape[1:] != shape:
                fail(
                    file,
                    key,
                    f"[T={T}, {', '.join(map(str, shape))}] (info.json shape)",
                    f"shape {arr.shape}",
                )
            return arr

        names = table.column_names
        if "frame_index" in names:
            fi = column("frame_index", scalar=True)
            if not np.array_equal(fi, np.arange(T)):
                fail(
                    file,
                    "frame_index",
                    f"0, 1, ..., {T - 1} in episode {e}",
                    f"{fi[:5].tolist()}...",
                )
        fps = float(self.info["fps"])
        timestamps = (
            column("timestamp", scalar=True).astype(np.float64)
            if "timestamp" in names
            else np.arange(T) / fps
        )
        obs: dict[str, np.ndarray] = {}
        for key in self.keys.features:
            dtype = features[key].get("dtype")
            if dtype == "video":
                chunk, fidx, from_ts, _ = ep.videos[key]
                vfile = self.root / self.info["video_path"].format(
                    video_key=key, chunk_index=chunk, file_index=fidx
                )
                # LeRobot's own rounding: float32 timestamps, shifted in float64
                obs[key] = decode_video_segment(
                    vfile, from_ts + timestamps, self.tolerance_s, key=key, episode=e
                )
            elif dtype == "image":
                obs[key] = decode_images(table.column(key), file, key, features[key])
            else:
                obs[key] = column(key)
        obs = fold_state(obs, self.keys)
        actions = column(self.action_key)
        if actions.ndim == 1:
            actions = actions[:, None]
        metadata: dict[str, Any] = {"episode_index": e}
        rewards = column(self.reward_key, scalar=True) if self.reward_key else np.zeros(T)
        dones = (
            flags(column("next.done", scalar=True), file, "next.done")
            if "next.done" in names
            else None
        )
        if "next.success" in names:
            successes = flags(column("next.success", scalar=True), file, "next.success")
        else:
            successes = None
            metadata["successes_recorded"] = False
        instruction, step_tasks = "", None
        if "task_index" in names and T:
            instruction, step_tasks = frame_tasks(
                column("task_index", scalar=True), self.tasks, file, e
            )
        if not instruction and ep.tasks:
            instruction = ep.tasks[0]
        extras = {
            key: column(feature, scalar=self.info["features"][feature].get("shape") in ([1], None))
            for feature, key in extra_features(features).items()
            if feature in names
        }
        observations: Any = obs["state"] if list(obs) == ["state"] else obs
        return Trajectory(
            observations,
            actions,
            rewards,
            successes,
            dones,
            instruction if self.task is None else self.task,
            instruction,
            metadata,
            step_tasks,
            extras,
        )


def import_lerobot_v3(root: Path, info: dict[str, Any], **kwargs: Any) -> TrajectoryDataset:
    """Every selected episode of a v3.0 folder in memory (see :class:`LeRobotV3Reader`).

    A folder written by ``robopref export --format lerobot`` comes back as it was exported:
    its preference table (``meta/robopref_preferences.parquet``) becomes ``queries`` (when
    every episode is read) and ``meta/robopref.json`` restores observation names, tasks and
    metadata.
    """
    reader = LeRobotV3Reader.open(root, info, **kwargs)
    # in episode order (the order of metadata["filter_keys"]), whatever the files' order
    trajectories = sorted(reader, key=lambda t: t.metadata["episode_index"])
    metadata = reader.metadata
    queries = None
    side = root / METADATA_FILE
    if side.is_file():
        try:
            extra = json.loads(side.read_text())
            episodes = extra["episodes"]
            names = extra["observations"]
        except (ValueError, KeyError, TypeError) as e:
            fail(side, "/", "robopref's export metadata (dataset, episodes, observations)", repr(e))
        for t in trajectories:
            e = t.metadata["episode_index"]
            if isinstance(t.observations, dict):
                t.observations = {
                    names.get(f"observation.{k}", names.get(k, k)): v
                    for k, v in t.observations.items()
                }
                if extra.get("array_observations") and list(t.observations) == ["state"]:
                    t.observations = t.observations["state"]
            if e < len(episodes) and kwargs.get("task") is None:
                t.task = str(episodes[e].get("task", t.task))
                t.instruction = str(episodes[e].get("instruction", t.instruction))
            if e < len(episodes):
                t.metadata = dict(episodes[e].get("metadata", {}), episode_index=e)
        exported = extra.get("dataset", {})
        metadata = {**exported, **metadata}
        if "filter_keys" in exported:  # robopref's own filter keys, not the splits written
            metadata["filter_keys"] = exported["filter_keys"]
        prefs = root / PREFERENCES_TABLE
        if prefs.is_file() and kwargs.get("episodes") is None:
            queries = read_preferences(prefs)
    out = TrajectoryDataset(trajectories, queries, metadata)
    out.validate(str(root))
    return out


def stream_v3_to_file(root: Path, info: dict[str, Any], out: Path, **kwargs: Any) -> dict[str, Any]:
    """Stream the episodes of a v3.0 folder into robopref's HDF5 file ``out`` (same layout as
    :func:`robopref.data.save_dataset`), one episode in memory at a time. Each episode is
    checked against the first (keys, per-step shapes, finite values) before it is written.

    Hold the writer lock of ``out``. On any error the temporary file is removed and ``out``
    is untouched; an error writing ``out`` (read-only folder, full disk) is one
    :class:`DataValidationError` naming ``out``, an error reading the folder names the folder.
    """
    filter_key = kwargs.pop("filter_key", None)
    if filter_key is not None:
        kwargs["episodes"] = split_episodes(
            info, root / "meta" / "info.json", filter_key, kwargs.get("episodes")
        )
    reader = LeRobotV3Reader.open(root, info, **kwargs)
    source = str(root)
    frames, first, tasks, order = 0, None, set(), []
    with new_hdf5_file(out) as h:
        f = h.file
        f.attrs[hdf5._FORMAT_ATTR] = hdf5.FORMAT_VERSION
        data = f.create_group("data")
        for i, t in enumerate(_read_all(reader, source)):
            TrajectoryDataset([t] if first is None else [first, t]).validate(
                f"{source}: episode {t.metadata['episode_index']}"
            )
            if first is None:
                first = t
            tasks.add(t.task)
            order.append(t.metadata["episode_index"])
            meta = hdf5._dumps(t.metadata, f"{source}: trajectory {i}: metadata")
            hdf5._write_demo(data.create_group(f"demo_{i}"), t, meta, "gzip")
            h.check()
            frames += len(t)
        n = len(reader)
        metadata = dict(reader.metadata)
        # filter keys are positions among the sorted episodes; demos are in the files' order
        sorted_eps = list(reader.episodes)
        written = {e: i for i, e in enumerate(order)}
        filter_keys = {
            name: sorted(written[sorted_eps[j]] for j in idx)
            for name, idx in (metadata.get("filter_keys") or {}).items()
        }
        if filter_keys:
            metadata["filter_keys"] = filter_keys
        data.attrs["total"] = frames
        env_args = {
            "env_name": next(iter(tasks)) if len(tasks) == 1 else "",
            "type": hdf5._GYM_ENV_TYPE,
            "env_kwargs": {},
        }
        data.attrs["env_args"] = hdf5._dumps(env_args, f"{source}: env_args")
        data.attrs["robopref_metadata"] = hdf5._dumps(metadata, f"{source}: metadata")
        if filter_keys:
            mask = f.create_group("mask")
            for name, idx in filter_keys.items():
                mask.create_dataset(name, data=np.array([f"demo_{j}" for j in idx], dtype="S"))
    obs = {}
    if first is not None:
        o = (
            first.observations
            if isinstance(first.observations, dict)
            else {"state": first.observations}
        )
        obs = {k: tuple(v.shape[1:]) for k, v in o.items()}
    return {"episodes": n, "frames": frames, "observations": obs}


def _read_all(reader: LeRobotV3Reader, source: str) -> Iterator[Trajectory]:
    """The reader's trajectories; an OSError while reading (a parquet or video file that
    cannot be read) names the source folder, so that it is never taken for an error
    writing the output."""
    it = iter(reader)
    while True:
        try:
            t = next(it)
        except StopIteration:
            return
        except OSError as e:
            raise DataValidationError(
                f"{source}: expected a readable LeRobot folder, found a file that cannot be read "
                f"({type(e).__name__}: {e})"
            ) from e
        yield t
