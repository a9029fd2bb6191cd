"""Writers of tiny robomimic HDF5 files and LeRobot v2.1 folders for the importer tests."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np


def write_robomimic(path: Path, lengths=(5, 7, 4), numbers=(0, 2, 10), image=True, seed=0):
    """A robomimic-layout file; returns {demo name: dict of the arrays written}."""
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        env_args = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["total"] = int(sum(lengths))
        for T, n in zip(lengths, numbers):
            g = data.create_group(f"demo_{n}")
            g.attrs["num_samples"] = T
            arrays = {
                "obs/robot0_eef_pos": rng.normal(size=(T, 3)).astype(np.float64),
                "obs/object": rng.normal(size=(T, 10)).astype(np.float32),
                "actions": rng.uniform(-1, 1, size=(T, 7)),
                "rewards": (np.arange(T) == T - 1).astype(np.float64),
                "dones": (np.arange(T) == T - 1).astype(np.int64),
                "next_obs/robot0_eef_pos": rng.normal(size=(T, 3)),
                "states": rng.normal(size=(T, 20)),
            }
            if image:
                arrays["obs/agentview_image"] = rng.integers(0, 256, (T, 8, 8, 3), dtype=np.uint8)
            for k, v in arrays.items():
                g.create_dataset(k, data=v)
            written[f"demo_{n}"] = arrays
        mask = f.create_group("mask")
        names = [f"demo_{n}" for n in numbers]
        mask.create_dataset("train", data=np.array(names[:-1][::-1], dtype="S"))
        mask.create_dataset("valid", data=np.array(names[-1:], dtype="S"))
    return written


def write_video(path: Path, frames: np.ndarray, fps: int, codec: str = "libx264rgb") -> None:
    """Encode ``frames`` [T, H, W, 3] uint8; libx264rgb with qp 0 is lossless."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        if codec == "libx264rgb":
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "ultrafast"}
        else:
            stream.pix_fmt = "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_lerobot(
    root: Path,
    lengths=(6, 4, 5),
    fps=10,
    chunks_size=2,
    video=True,
    codec="libx264rgb",
    hw=(16, 16),
    seed=0,
):
    """A LeRobot v2.1 folder; returns the list of per-episode dicts of the arrays written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    tasks = ["pick up the cube", "open the drawer"]
    features = {
        "observation.state": {"dtype": "float32", "shape": [4], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if video:
        features["observation.images.top"] = {
            "dtype": "video",
            "shape": [hw[0], hw[1], 3],
            "names": ["height", "width", "channel"],
        }
    info = {
        "codebase_version": "v2.1",
        "robot_type": "so100",
        "total_episodes": len(lengths),
        "total_frames": int(sum(lengths)),
        "total_tasks": len(tasks),
        "chunks_size": chunks_size,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths) - 1}", "valid": f"{len(lengths) - 1}:{len(lengths)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": features,
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    (root / "meta" / "tasks.jsonl").write_text(
        "\n".join(json.dumps({"task_index": i, "task": t}) for i, t in enumerate(tasks)) + "\n"
    )
    episodes, rows, index = [], [], 0
    for e, T in enumerate(lengths):
        ep = {
            "state": rng.normal(size=(T, 4)).astype(np.float32),
            "action": rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
            "reward": rng.normal(size=T).astype(np.float32),
            "done": np.arange(T) == T - 1,
            "task": tasks[e % 2],
        }
        table = pa.table(
            {
                "observation.state": pa.array(list(ep["state"]), type=pa.list_(pa.float32(), 4)),
                "action": pa.array(list(ep["action"]), type=pa.list_(pa.float32(), 2)),
                "episode_index": pa.array(np.full(T, e, dtype=np.int64)),
                "frame_index": pa.array(np.arange(T, dtype=np.int64)),
                "timestamp": pa.array((np.arange(T) / fps).astype(np.float32)),
                "next.reward": pa.array(ep["reward"]),
                "next.done": pa.array(ep["done"]),
                "index": pa.array(np.arange(index, index + T, dtype=np.int64)),
                "task_index": pa.array(np.full(T, e % 2, dtype=np.int64)),
            }
        )
        index += T
        path = root / info["data_path"].format(episode_chunk=e // chunks_size, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        if video:
            ep["frames"] = rng.integers(0, 256, (T, *hw, 3), dtype=np.uint8)
            vpath = root / info["video_path"].format(
                episode_chunk=e // chunks_size, episode_index=e, video_key="observation.images.top"
            )
            write_video(vpath, ep["frames"], fps, codec)
        rows.append({"episode_index": e, "tasks": [ep["task"]], "length": T})
        episodes.append(ep)
    (root / "meta" / "episodes.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return episodes
