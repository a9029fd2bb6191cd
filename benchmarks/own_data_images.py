"""train-reward on camera frames vs on states: the same oracle-labelled pairs, two observation keys.

Per seed:

    collect  button-press-wall-v3, the scripted collect mix (10 expert, 20 noisy-expert at noise
             0.5 and 1.0, 30 random episodes of 150 steps; collect seed 200 + seed), each step
             rendered at 64x64 by the project's renderer (robopref.envs.render, corner2 camera);
             cached under ~/.cache/robopref/own-data-images/
    label    600 pairs of 15-step segments, oracle teacher (``robopref label``)
    train-reward  twice through the command line on the same file and the same held-out 25 %:
             ``obs_key=image`` (the CNN reward) and ``obs_key=state`` (the MLP reward on the
             39-d state), the shipped config otherwise, 15 epochs (patience 5)

    MUJOCO_GL=osmesa python benchmarks/own_data_images.py [--seeds 0 1 2]
        [--out runs/own-data-images] [--jsonl docs/results/own-data.jsonl]

Rows (``study: "own-data-images"``, one per seed and key) are appended to the JSONL file; the
table (held-out preference accuracy, mean ± SE over seeds) is printed at the end. A seed's
steps are skipped when their outputs exist (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from own_data import commit  # noqa: E402

STUDY = "own-data-images"
TASK = "button-press-wall-v3"
SIZE = 64
STEPS = 150
LABELS = ["num_queries=600", "segment_length=15", "teacher.name=oracle"]
REWARD = ["trainer.epochs=15", "trainer.patience=5", "test_fraction=0.25"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robopref" / STUDY


def cli(*args) -> float:
    """Run ``robopref ARGS`` (quiet, one thread); raise with its stderr on failure; seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ROBOPREF_QUIET": "1"}
    started = time.time()
    p = subprocess.run([sys.executable, "-m", "robopref.cli", *map(str, args)], env=env,
                       capture_output=True, text=True)  # fmt: skip
    if p.returncode != 0:
        raise SystemExit(f"robopref {' '.join(map(str, args))} failed:\n{p.stderr[-2000:]}")
    return time.time() - started


def collected(seed: int) -> Path:
    """The rendered data set of ``seed`` (collected once, written atomically)."""
    from robopref.data import save_dataset
    from robopref.envs.collect import CollectConfig
    from robopref.envs.render import RenderConfig, collect_pixel_dataset
    from robopref.utils import atomic_path

    path = CACHE / f"{TASK}-{SIZE}px-{STEPS}steps-seed{seed}.h5"
    if path.exists():
        return path
    collect = CollectConfig(
        tasks=[TASK], max_episode_steps=STEPS, expert_episodes=10, noisy_episodes=10,
        noise_levels=[0.5, 1.0], goal_mismatch_episodes=0, random_episodes=30,
        other_task_episodes=0, seed=200 + seed,
    )  # fmt: skip
    data = collect_pixel_dataset(collect, RenderConfig(width=SIZE, height=SIZE))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_dataset(data, tmp)
    return path


def one_seed(seed: int, out: Path, at: str) -> list[dict]:
    d = out / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    if not (d / "labelled.h5").exists():
        started = time.time()
        src = collected(seed)
        times["collect"] = time.time() - started
        shutil.copy(src, d / "labelled.tmp.h5")
        times["label"] = cli("label", d / "labelled.tmp.h5", *LABELS, f"seed={seed}", "--overwrite")
        (d / "labelled.tmp.h5").rename(d / "labelled.h5")
    rows = []
    for key in ("image", "state"):
        run = d / f"reward-{key}"
        if not (run / "results.json").exists():
            times[key] = cli("train-reward", d / "labelled.h5", "--out", run, f"obs_key={key}",
                             *REWARD, f"seed={seed}")  # fmt: skip
        row = json.loads((run / "results.json").read_text())["rows"][0]
        rows.append(
            {
                "study": STUDY,
                "task": TASK,
                "obs_key": key,
                "obs_shape": row["obs_shape"],
                "model": row["model"],
                "seed": seed,
                "episodes": 60,
                "labels": 600,
                "segment_length": 15,
                "train_queries": row["train_queries"],
                "test_queries": row["test_queries"],
                "train_accuracy": row["train_accuracy"],
                "test_accuracy": row["test_accuracy"],
                "test_se": row["test_se"],
                "epochs": row["epochs"],
                "wall_s": round(times[key], 1) if key in times else None,
                "commit": at,
            }
        )
    print(f"seed {seed}: step times (s) {json.dumps({k: round(v, 1) for k, v in times.items()})}",
          file=sys.stderr)  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| reward reads | seeds | held-out pref. accuracy | per seed | train accuracy |",
             "|---|---|---|---|---|"]  # fmt: skip
    for key, what in (("image", "64x64 frames (CNN)"), ("state", "39-d state (MLP)")):
        sel = sorted((r for r in rows if r["obs_key"] == key), key=lambda r: r["seed"])
        if not sel:
            continue
        acc = [r["test_accuracy"] for r in sel]
        se = float(np.std(acc, ddof=1) / math.sqrt(len(acc))) if len(acc) > 1 else float("nan")
        per = " / ".join(f"{a:.3f}" for a in acc)
        train = np.mean([r["train_accuracy"] for r in sel])
        lines.append(f"| {what} | {len(sel)} | {np.mean(acc):.3f} ± {se:.3f} | {per} | "
                     f"{train:.3f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/own-data-images")
    parser.add_argument("--jsonl", default=None, help="append the rows to this JSONL file")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    at = commit()
    rows = []
    for seed in args.seeds:
        rows += one_seed(seed, Path(args.out), at)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
