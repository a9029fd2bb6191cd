"""Collect (once) and cache the Meta-World datasets of the PEARL transfer study.

Datasets are smaller than robopref/configs/pearl/base.yaml's (50 episodes x 200 steps per task instead
of 100): transfer and label accuracy need segments, not policy training. Cached as
``<cache>/<task>-s<seed>.h5``; existing files are reused.

    python benchmarks/pearl_transfer_data.py    # --cache DIR; default ~/.cache/robopref/pearl-transfer
    python benchmarks/pearl_transfer_data.py --suite families    # or final: the families study

Suites: ``old`` (the 8 pairs below), ``families`` and ``final`` (the pairs of
robopref/configs/bench/pearl-families.yaml and pearl-families-final.yaml, read from the configs).
"""

from __future__ import annotations

import argparse
import os
import re
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
SUITES = {"families": "pearl-families.yaml", "final": "pearl-families-final.yaml"}
FAMILIES = ("opposite direction", "wall", "topdown", "side", "the same skill")
_BENCH = Path(__file__).resolve().parents[1] / "robopref" / "configs" / "bench"
_PAIR_LINE = re.compile(r"^\s+\S+:\s*\[.*source\.tasks=\[([\w-]+)\].*target\.tasks=\[([\w-]+)\]")


def _family(comment: str) -> str | None:
    return next((f for f in FAMILIES if comment.strip().startswith(f)), None)


def suite_pairs(suite: str) -> list[tuple[str, str, str]]:
    """``[(source task, target task, family)]`` of a suite. The families suites are read from
    their bench configs; a pair's family is its line's comment, else its section's."""
    if suite == "old":
        return [(s, t, "") for s, t in PAIRS]
    if suite not in SUITES:
        raise SystemExit(f"--suite: expected one of old, {', '.join(SUITES)}; found {suite!r}")
    out, section = [], ""
    for line in (_BENCH / SUITES[suite]).read_text().splitlines():
        code, _, comment = line.partition("#")
        if not code.strip():
            section = _family(comment) or section
            continue
        m = _PAIR_LINE.match(code)
        if m:
            out.append((m[1], m[2], _family(comment) or section))
    return out


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
        try:
            return load_dataset(path)
        except Exception:  # another process may be writing it (non-atomically): wait once
            time.sleep(30)
            return load_dataset(path)
    ds = collect_dataset(CollectConfig(tasks=[task], seed=seed, **SMALL))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.h5")  # atomic: other runs share the cache
    save_dataset(ds, tmp)
    os.replace(tmp, path)
    return ds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--suite", default="old", help="old (default), families or final")
    ap.add_argument("--pairs", type=int, nargs="*", help="indices into the suite's pairs")
    ap.add_argument("--seeds", type=int, nargs="*", default=SEEDS)
    args = ap.parse_args()
    pairs = suite_pairs(args.suite)
    pairs = [pairs[i] for i in args.pairs] if args.pairs is not None else pairs
    args.cache.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for src, tgt, _ in pairs:
            for task, s in ((src, seed), (tgt, 100 + seed)):
                t0 = time.time()
                get_dataset(args.cache, task, s)
                print(f"{task} seed {s}: {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
