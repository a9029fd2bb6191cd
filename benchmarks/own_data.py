"""Sim as real: the own-data command chain on a simulated data set treated as a robot's own data.

Per seed, through the ``robopref`` command line only (one subprocess per step):

    collect  Meta-World target data, the PEARL suite's design (button-press-wall-v3: 10 expert +
             10 noisy-expert among 80 random episodes of 200 steps; configs/pearl/base.yaml)
    export   as a LeRobot v3.0 folder, then import it back (what a lab's data would go through)
    label    2000 pairs of 25-step segments by the oracle teacher; the shuffled control is the
             same labels permuted across pairs (written with the data API: no command does that)
    train-reward -> relabel -> train-policy (filtered_bc, iql on the relabelled file; cpl
             straight from the labels), each evaluated on the same 50 simulated episodes
             (reset seeds 10_000 + seed, ...), as the PEARL suite evaluates its variants

    python benchmarks/own_data.py [--seeds 0 1 2] [--out runs/own-data-bench]
                                  [--jsonl docs/results/own-data.jsonl]

Each seed's steps are skipped when their outputs exist (rerun to resume). Rows are appended to
the JSONL file; a markdown table of mean ± SE over seeds is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASK = "button-press-wall-v3"
COLLECT = [
    f"tasks=[{TASK}]", "max_episode_steps=200", "expert_episodes=10", "noisy_episodes=5",
    "noise_levels=[0.5,1.0]", "goal_mismatch_episodes=0", "random_episodes=80",
    "other_task_episodes=0", "num_workers=1",
]  # fmt: skip
REWARD = ["model.hidden=[256,256]", "trainer.epochs=10", "trainer.batch_size=64",
          "trainer.lr=0.0003", "test_fraction=0.2"]  # fmt: skip
POLICY = {
    "filtered_bc": ["policy.filtered_bc.steps=2000", "policy.filtered_bc.top_fraction=0.1"],
    "iql": ["policy.iql.steps=5000", "policy.iql.batch_size=256"],
    "cpl": ["policy.cpl.steps=5000", "policy.cpl.bc_fraction=0.4"],
}
ARMS = [
    ("oracle", "filtered_bc"),
    ("oracle", "iql"),
    ("oracle", "cpl"),
    ("shuffled", "filtered_bc"),
]


def cli(*args) -> float:
    """Run ``robopref ARGS`` (quiet); raise with its stderr on failure; return seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ROBOPREF_QUIET": "1"}
    started = time.time()
    p = subprocess.run([sys.executable, "-m", "robopref.cli", *map(str, args)], env=env,
                       capture_output=True, text=True)  # fmt: skip
    if p.returncode != 0:
        raise SystemExit(f"robopref {' '.join(map(str, args))} failed:\n{p.stderr[-2000:]}")
    return time.time() - started


def shuffle_labels(src: Path, dst: Path, seed: int) -> None:
    from robopref.data import load_dataset, save_dataset

    data = load_dataset(src)
    q = data.queries
    rng = np.random.default_rng([seed, 0x5F])
    data.queries = dataclasses.replace(
        q, labels=q.labels[rng.permutation(len(q))], teacher=f"{q.teacher}-shuffled"
    )
    save_dataset(data, dst)


def label_agreement(a: Path, b: Path) -> float:
    from robopref.data import load_dataset

    qa, qb = load_dataset(a).queries, load_dataset(b).queries
    return float(np.mean(np.argmax(qa.labels, 1) == np.argmax(qb.labels, 1)))


def one_seed(seed: int, out: Path) -> list[dict]:
    d = out / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    if not (d / "target.h5").exists():
        times["collect"] = cli("collect", "--out", d / "target.h5", *COLLECT, f"seed={100 + seed}")
    if not (d / "lerobot").exists():
        times["export"] = cli("export", d / "target.h5", d / "lerobot", "--format", "lerobot")
    if not (d / "oracle.h5").exists():
        cli("import", d / "lerobot", d / "imported.h5")
        times["label"] = cli("label", d / "imported.h5", "num_queries=2000", "segment_length=25",
                             f"seed={seed}", "teacher.name=oracle", "--overwrite")  # fmt: skip
        (d / "imported.h5").rename(d / "oracle.h5")
    if not (d / "shuffled.h5").exists():
        shuffle_labels(d / "oracle.h5", d / "shuffled.h5", seed)
    rows = []
    for arm in ("oracle", "shuffled"):
        if not (d / f"reward-{arm}" / "results.json").exists():
            times[f"reward-{arm}"] = cli("train-reward", d / f"{arm}.h5", "--out",
                                         d / f"reward-{arm}", *REWARD, f"seed={seed}")  # fmt: skip
        if not (d / f"{arm}-relabelled.h5").exists():
            times[f"relabel-{arm}"] = cli("relabel", d / f"{arm}.h5", "--reward",
                                          d / f"reward-{arm}" / "reward.pt",
                                          "--out", d / f"{arm}-relabelled.h5")  # fmt: skip
    for arm, policy in ARMS:
        run = d / f"policy-{arm}-{policy}"
        data = d / (f"{arm}.h5" if policy == "cpl" else f"{arm}-relabelled.h5")
        if not (run / "results.json").exists():
            times[f"{arm}-{policy}"] = cli("train-policy", data, "--out", run, f"policy.name={policy}",
                                           *POLICY[policy], "holdout=0", "evaluate=sim",
                                           "eval_episodes=50", f"eval_seed={10_000 + seed}",
                                           f"seed={seed}")  # fmt: skip
        prow = json.loads((run / "results.json").read_text())["rows"][0]
        rrow = json.loads((d / f"reward-{arm}" / "results.json").read_text())["rows"][0]
        rows.append(
            {
                "task": TASK,
                "arm": arm,
                "policy": policy,
                "seed": seed,
                "label_accuracy": label_agreement(d / f"{arm}.h5", d / "oracle.h5"),
                "reward_accuracy": None if policy == "cpl" else rrow["test_accuracy"],
                "pref_accuracy": prow["pref_accuracy"],
                "success_rate": prow["success_rate"],
                "success_se": prow["success_se"],
                "eval_episodes": prow["eval_episodes"],
                "policy_steps": prow["policy_steps"],
                "wall_s": round(times.get(f"{arm}-{policy}", float("nan")), 1),
            }
        )
    print(f"seed {seed}: step times (s) {json.dumps({k: round(v, 1) for k, v in times.items()})}",
          file=sys.stderr)  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| arm | policy | seeds | success (mean ± SE over seeds) | per seed |",
             "|---|---|---|---|---|"]  # fmt: skip
    for arm, policy in ARMS:
        vals = [r["success_rate"] for r in rows if (r["arm"], r["policy"]) == (arm, policy)]
        if not vals:
            continue
        se = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
        per = " / ".join(f"{v:.2f}" for v in vals)
        lines.append(f"| {arm} | {policy} | {len(vals)} | {np.mean(vals):.3f} ± {se:.3f} | {per} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/own-data-bench")
    parser.add_argument("--jsonl", default=None, help="append the rows to this JSONL file")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        rows += one_seed(seed, Path(args.out))
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
