"""Import throughput of LeRobot state/action datasets, v2.1 and v3.0 layouts (frames/s).

Run: python benchmarks/import_lerobot.py [--episodes 50] [--frames 200] [--repeat 3]

Builds one dataset of N episodes x T frames (state [T, 14] and action [T, 14] float32, a
reward and a done flag per frame, two task strings) in both layouts in a temporary folder:
v3.0 with robopref's own LeRobot exporter (LeRobot 0.4's layout: one data file holding every
episode, episode metadata in parquet), v2.1 with one parquet file per episode and
meta/episodes.jsonl (LeRobot 0.3's layout, written with pyarrow). Then it times, in-process,
``import_lerobot`` (to memory) and ``import_to_file`` (what ``robopref import`` runs; for
v3.0 it streams episode by episode into HDF5). Best of --repeat runs.

With ``--video DIR`` it also times the import of a v3.0 video dataset recorded by LeRobot
(``python tests/fixtures/make_lerobot_fixtures.py bench-video DIR`` in lerobot's venv, which
prints LeRobot's own decode time of the same frames).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robopref.data import Trajectory, TrajectoryDataset
from robopref.data.exporters import export_lerobot
from robopref.data.importers import import_lerobot, import_to_file

DIM = 14
FPS = 30


def make(n: int, T: int) -> TrajectoryDataset:
    rng = np.random.default_rng(0)
    tasks = ["pick up the cube", "open the drawer"]
    out = []
    for e in range(n):
        out.append(
            Trajectory(
                {"state": rng.normal(size=(T, DIM)).astype(np.float32)},
                rng.normal(size=(T, DIM)).astype(np.float32),
                rng.normal(size=T).astype(np.float32).astype(np.float64),
                task=tasks[e % 2],
                instruction=tasks[e % 2],
            )
        )
    return TrajectoryDataset(out)


def write_v21(ds: TrajectoryDataset, root: Path) -> None:
    feats = {
        "observation.state": {"dtype": "float32", "shape": [DIM], "names": None},
        "action": {"dtype": "float32", "shape": [DIM], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
    }
    for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                  ("index", "int64"), ("task_index", "int64")):  # fmt: skip
        feats[k] = {"dtype": dt, "shape": [1], "names": None}
    info = {
        "codebase_version": "v2.1",
        "fps": FPS,
        "chunks_size": 1000,
        "total_episodes": len(ds),
        "splits": {"train": f"0:{len(ds)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "features": feats,
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    tasks = sorted({t.instruction for t in ds})
    (root / "meta/tasks.jsonl").write_text(
        "\n".join(json.dumps({"task_index": i, "task": s}) for i, s in enumerate(tasks))
    )
    rows, index = [], 0
    for e, t in enumerate(ds):
        T = len(t)
        table = pa.table(
            {
                "observation.state": pa.FixedSizeListArray.from_arrays(
                    pa.array(t.state.reshape(-1)), DIM
                ),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(t.actions.reshape(-1)), DIM),
                "next.reward": pa.array(t.rewards.astype(np.float32)),
                "next.done": pa.array(t.dones),
                "timestamp": pa.array((np.arange(T) / FPS).astype(np.float32)),
                "frame_index": pa.array(np.arange(T)),
                "episode_index": pa.array(np.full(T, e)),
                "index": pa.array(np.arange(index, index + T)),
                "task_index": pa.array(np.full(T, tasks.index(t.instruction))),
            }
        )
        path = root / info["data_path"].format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        rows.append(json.dumps({"episode_index": e, "tasks": [t.instruction], "length": T}))
        index += T
    (root / "meta/episodes.jsonl").write_text("\n".join(rows))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--video", type=Path, default=None, help="a v3.0 video dataset folder")
    a = p.parse_args()
    if a.video is not None:
        n = sum(len(t) for t in import_lerobot(a.video))
        dt = best(lambda: import_lerobot(a.video), a.repeat)
        print(f"video {a.video}: {n} frames (state, action, one camera) in {dt:.2f} s "
              f"({n / dt:,.0f} frames/s)")  # fmt: skip
    ds = make(a.episodes, a.frames)
    frames = a.episodes * a.frames
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_v21(ds, tmp / "v21")
        export_lerobot(ds, tmp / "v30", fps=FPS)
        for name in ("v21", "v30"):
            ref = import_lerobot(tmp / name)
            assert all(np.array_equal(x.state, y.state) for x, y in zip(ds, ref))
            mem = best(lambda n=name: import_lerobot(tmp / n), a.repeat)
            to_file = best(lambda n=name: import_to_file(tmp / n, tmp / f"{n}.h5"), a.repeat)
            print(
                f"{name}: {a.episodes} x {a.frames} frames: import_lerobot {mem * 1e3:.0f} ms "
                f"({frames / mem:,.0f} frames/s); import_to_file (robopref import) "
                f"{to_file * 1e3:.0f} ms ({frames / to_file:,.0f} frames/s)"
            )


if __name__ == "__main__":
    main()
