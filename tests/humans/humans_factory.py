"""Small datasets for the labelling tests: with uint8 images, or vector-only."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np

from robopref.data import Trajectory, TrajectoryDataset, save_dataset


def image_dataset(path, n=5, T=12, hw=(16, 12), seed=0):
    rng = np.random.default_rng(seed)
    trajs = [
        Trajectory(
            {
                "state": rng.normal(size=(T, 4)).astype(np.float32),
                "image": rng.integers(0, 256, (T, *hw, 3), dtype=np.uint8),
            },
            rng.normal(size=(T, 2)),
            rng.normal(size=T),
            task="lift",
            instruction="lift the cube",
        )
        for _ in range(n)
    ]
    ds = TrajectoryDataset(trajs, metadata={"fps": 5})
    save_dataset(ds, path)
    return ds


def vector_dataset(path, n=4, T=15, seed=0):
    rng = np.random.default_rng(seed)
    trajs = [
        Trajectory(
            np.cumsum(rng.normal(size=(T, 6)), axis=0).astype(np.float32),
            rng.normal(size=(T, 2)),
            rng.normal(size=T),
            task="reach-v3",
        )
        for _ in range(n)
    ]
    ds = TrajectoryDataset(trajs)
    save_dataset(ds, path)
    return ds


@contextlib.contextmanager
def lock_held_by_another_process(path):
    """Hold the writer lock of ``path`` in a child process (the lock is re-entrant within a
    process, so only another process shows what a concurrent ``robopref label`` does)."""
    code = (
        "import sys; from robopref.data.locks import writer_lock\n"
        "with writer_lock(sys.argv[1], what='label'):\n"
        "    print('locked', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
