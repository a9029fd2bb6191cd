"""Save/load timing of robopref.data.hdf5 vs a bare h5py robomimic-layout writer/reader.

Run: python benchmarks/hdf5.py   (writes ~230 MB to a temporary directory)

The bare peer writes one group per demo with obs/<key>, actions, rewards, dones (images gzip,
one frame per chunk), without checksums or validation; its reader reads every array.
"""

from __future__ import annotations

import os
import tempfile
import time

import h5py
import numpy as np

from robopref.data import Trajectory, TrajectoryDataset, load_dataset, save_dataset


def make(n: int, T: int, image: bool) -> TrajectoryDataset:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        obs = rng.normal(size=(T, 39)).astype(np.float32)
        if image:
            img = rng.integers(0, 64, size=(T, 84, 84, 3), dtype=np.uint8) // 8 * 8
            obs = {"state": obs, "image": img}
        act = rng.normal(size=(T, 4)).astype(np.float32)
        out.append(Trajectory(obs, act, rng.normal(size=T), task="t", metadata={"seed": i}))
    return TrajectoryDataset(out)


def bare_save(ds: TrajectoryDataset, path: str) -> None:
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i, t in enumerate(ds):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = len(t)
            obs = t.observations if isinstance(t.observations, dict) else {"state": t.observations}
            for k, v in obs.items():
                kw = {"compression": "gzip", "chunks": (1, *v.shape[1:])} if v.ndim == 4 else {}
                g.create_dataset(f"obs/{k}", data=v, **kw)
            g["actions"] = t.actions
            g["rewards"] = t.rewards
            g["dones"] = t.dones.astype(np.uint8)


def bare_load(path: str) -> list[dict]:
    out = []
    with h5py.File(path, "r") as f:
        for name in sorted(f["data"], key=lambda s: int(s[5:])):
            g = f["data"][name]
            arrays = {k: g[k][()] for k in ("actions", "rewards", "dones")}
            arrays["obs"] = {k: v[()] for k, v in g["obs"].items()}
            out.append(arrays)
    return out


def best(fn, reps: int = 3) -> float:
    """Best of ``reps`` CPU times of this process (less sensitive to other jobs than wall time)."""
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    tmp = tempfile.mkdtemp()
    ours, bare = os.path.join(tmp, "ours.h5"), os.path.join(tmp, "bare.h5")
    cases = [("vector 1000x500", 1000, 500, False), ("image 20x100 (84x84x3)", 20, 100, True)]
    for name, n, T, image in cases:
        ds = make(n, T, image)
        ts = best(lambda ds=ds: save_dataset(ds, ours))
        tb = best(lambda ds=ds: bare_save(ds, bare))
        ls = best(lambda: load_dataset(ours))
        lb = best(lambda: bare_load(bare))
        mb = os.path.getsize(ours) / 1e6, os.path.getsize(bare) / 1e6
        print(
            f"| {name} | save {ts:.2f} s vs {tb:.2f} s ({ts / tb:.2f}x) "
            f"| load {ls:.2f} s vs {lb:.2f} s ({ls / lb:.2f}x) | {mb[0]:.1f} MB vs {mb[1]:.1f} MB |"
        )
        os.remove(ours)
        os.remove(bare)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
