"""Collect (once) and cache the Meta-World datasets of the PEARL transfer study.

Datasets are smaller than robopref/configs/pearl/base.yaml's (50 episodes x 200 steps per task instead
of 100): transfer and label accuracy need segments, not policy training. Cached as
``<cache>/<task>-s<seed>.h5``; existing files are reused.

    python benchmarks/pearl_transfer_data.py    # --cache DIR; default ~/.cache/robopref/pearl-transfer
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SMALL = dict(
    expert_episodes=5,
    noisy_episodes=5,
    goal_mismatch_episodes=10,
    random_episodes=5,
    other_task_episodes=10,
    max_episode_steps=200,
)
# (source, target); the first four are the suite's pairs (robopref/configs/bench/pearl-metaworld.yaml)
PAIRS = [
    ("button-press-v3", "button-press-wall-v3"),
    ("drawer-open-v3", "drawer-close-v3"),
    ("window-open-v3", "window-close-v3"),
    ("door-open-v3", "door-close-v3"),
    ("faucet-open-v3", "faucet-close-v3"),  # opposite direction
    ("plate-slide-v3", "plate-slide-back-v3"),  # opposite direction
    ("button-press-topdown-v3", "button-press-topdown-wall-v3"),  # near-identical
    ("push-v3", "push-wall-v3"),  # near-identical
]
SEEDS = [0, 1, 2]  # source seed s, target seed 100 + s (as the bench config)


# The user's cache folder ($XDG_CACHE_HOME, else ~/.cache): the datasets outlive a checkout.
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "robopref" / "pearl-transfer"
)


def dataset_path(cache: Path, task: str, seed: int) -> Path:
    return cache / f"{task}-s{seed}.h5"


def get_dataset(cache: Path, task: str, seed: int):
    from robopref.data import load_dataset, save_dataset
    from robopref.envs import CollectConfig, collect_dataset

    path = dataset_path(cache, task, seed)
    if path.exists():
        return load_dataset(path)
    ds = collect_dataset(CollectConfig(tasks=[task], seed=seed, **SMALL))
    save_dataset(ds, path)
    return ds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--pairs", type=int, nargs="*", default=list(range(len(PAIRS))))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        for i in args.pairs:
            for task, s in ((PAIRS[i][0], seed), (PAIRS[i][1], 100 + seed)):
                t0 = time.time()
                get_dataset(args.cache, task, s)
                print(f"{task} seed {s}: {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
