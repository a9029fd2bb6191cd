"""Small datasets for the labelling tests: with uint8 images, or vector-only."""

from __future__ import annotations

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
