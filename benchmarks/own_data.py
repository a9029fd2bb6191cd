"""Sim as real: the own-data command chain on a simulated data set treated as a robot's own data.

Per seed, through the ``robopref`` command line only (one subprocess per step):

    collect  Meta-World target data, the PEARL suite's design (button-press-wall-v3: 10 expert +
             10 noisy-expert among 80 random episodes of 200 steps; configs/pearl/base.yaml)
    export   as a LeRobot v3.0 folder, then import it back (what a lab's data would go through)
    label    2000 pairs of 25-step segments by the oracle teacher, drawn uniformly (the oracle
             arm) or actively (``select=disagreement``, the same budget: the active arm); the
             shuffled control is the oracle's labels permuted across pairs, 3 independent
             permutations per seed (written with the data API: no command does that)
    train-reward -> relabel -> train-policy (filtered_bc, iql on the relabelled file; cpl
             straight from the labels), each evaluated on the same 50 simulated episodes
             (reset seeds 10_000 + seed, ...), as the PEARL suite evaluates its variants

Every arm's reward is also scored on one shared set of 1000 uniformly drawn oracle-labelled
pairs per seed (``shared_accuracy``): each arm's own held-out pairs are drawn the way its
training pairs were, so the active arm's (hard, selected) held-out pairs are not comparable
with the random arm's.

    python benchmarks/own_data.py [--seeds 0 1 2] [--out runs/own-data-bench]
                                  [--jsonl docs/results/own-data.jsonl]

Each seed's steps are skipped when their outputs exist (rerun to resume). Rows (one per arm,
policy, seed and shuffled permutation, each with the commit it ran at) replace the JSONL file's
own (rows of other studies, which carry a ``study`` field, are kept);
a markdown table of mean ± SE over seeds is printed at the end (a seed's shuffled value is the
mean of its permutations, as in the PEARL suite).
"""

from __future__ import annotations

import argparse
import dataclasses
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
LABELS = ["num_queries=2000", "segment_length=25", "teacher.name=oracle"]
ACTIVE = ["select=disagreement", "retrain_every=250", "pool_factor=5"]
PERMUTATIONS = 3
ARMS = [
    ("oracle", "filtered_bc"),
    ("oracle", "iql"),
    ("oracle", "cpl"),
    ("active", "filtered_bc"),
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


def shuffle_labels(src: Path, dst: Path, seed: int, permutation: int) -> None:
    from robopref.data import load_dataset, save_dataset

    data = load_dataset(src)
    q = data.queries
    rng = np.random.default_rng([seed, 0x5F, permutation])
    data.queries = dataclasses.replace(
        q, labels=q.labels[rng.permutation(len(q))], teacher=f"{q.teacher}-shuffled"
    )
    save_dataset(data, dst)


def label_agreement(a: Path, b: Path) -> float:
    from robopref.data import load_dataset

    qa, qb = load_dataset(a).queries, load_dataset(b).queries
    return float(np.mean(np.argmax(qa.labels, 1) == np.argmax(qb.labels, 1)))


def shared_accuracy(relabelled: Path, shared: Path) -> float:
    """Share of the shared oracle-labelled pairs whose preferred segment has the higher
    learned return (the relabelled file's rewards are an increasing map of the reward's)."""
    from robopref.data import load_dataset
    from robopref.data.queries import segment_rewards

    q = load_dataset(shared).queries
    returns = np.array(
        [[r.sum() for r in row] for row in segment_rewards(load_dataset(relabelled), q)]
    )
    counted = q.labels[:, 0] != q.labels[:, 1]
    right = np.argmax(returns, 1) == np.argmax(q.labels, 1)
    return float(right[counted].mean())


def commit() -> str:
    p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return p.stdout.strip() + ("-dirty" if dirty else "")


def reward_chain(d: Path, arm: str, seed: int, times: dict) -> None:
    """train-reward and relabel of ``d/ARM.h5`` (skipped where done)."""
    if not (d / f"reward-{arm}" / "results.json").exists():
        times[f"reward-{arm}"] = cli("train-reward", d / f"{arm}.h5", "--out",
                                     d / f"reward-{arm}", *REWARD, f"seed={seed}")  # fmt: skip
    if not (d / f"{arm}-relabelled.h5").exists():
        times[f"relabel-{arm}"] = cli("relabel", d / f"{arm}.h5", "--reward",
                                      d / f"reward-{arm}" / "reward.pt",
                                      "--out", d / f"{arm}-relabelled.h5")  # fmt: skip


def one_seed(seed: int, out: Path, at: str) -> list[dict]:
    d = out / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    if not (d / "target.h5").exists():
        times["collect"] = cli("collect", "--out", d / "target.h5", *COLLECT, f"seed={100 + seed}")
    if not (d / "lerobot").exists():
        times["export"] = cli("export", d / "target.h5", d / "lerobot", "--format", "lerobot")
    if not (d / "imported.h5").exists():
        cli("import", d / "lerobot", d / "imported.h5")
    for name, extra in (("oracle", []), ("active", ACTIVE), ("shared", None)):
        if (d / f"{name}.h5").exists():
            continue
        shutil.copy(d / "imported.h5", d / f"{name}.tmp.h5")
        args = ["num_queries=1000", "segment_length=25", "teacher.name=oracle",
                f"seed={1000 + seed}"] if extra is None else [*LABELS, f"seed={seed}", *extra]  # fmt: skip
        times[f"label-{name}"] = cli("label", d / f"{name}.tmp.h5", *args, "--overwrite")
        (d / f"{name}.tmp.h5").rename(d / f"{name}.h5")
    arms = ["oracle", "active"] + [f"shuffled-p{p}" for p in range(PERMUTATIONS)]
    for p in range(PERMUTATIONS):
        if not (d / f"shuffled-p{p}.h5").exists():
            shuffle_labels(d / "oracle.h5", d / f"shuffled-p{p}.h5", seed, p)
    for arm in arms:
        reward_chain(d, arm, seed, times)
    runs = [(a, pol) for a, pol in ARMS if a != "shuffled"]
    runs += [(f"shuffled-p{p}", "filtered_bc") for p in range(PERMUTATIONS)]
    rows = []
    for arm, policy in runs:
        run = d / f"policy-{arm}-{policy}"
        data = d / (f"{arm}.h5" if policy == "cpl" else f"{arm}-relabelled.h5")
        if not (run / "results.json").exists():
            times[f"{arm}-{policy}"] = cli("train-policy", data, "--out", run, f"policy.name={policy}",
                                           *POLICY[policy], "holdout=0", "evaluate=sim",
                                           "eval_episodes=50", f"eval_seed={10_000 + seed}",
                                           f"seed={seed}")  # fmt: skip
        prow = json.loads((run / "results.json").read_text())["rows"][0]
        rrow = json.loads((d / f"reward-{arm}" / "results.json").read_text())["rows"][0]
        cpl = policy == "cpl"
        rows.append(
            {
                "task": TASK,
                "arm": arm.split("-p")[0],
                "permutation": int(arm.split("-p")[1]) if "-p" in arm else None,
                "selection": "disagreement" if arm == "active" else "random",
                "labels": 2000,
                "policy": policy,
                "seed": seed,
                "label_accuracy": label_agreement(d / f"{arm}.h5", d / "oracle.h5")
                if arm != "active" else 1.0,
                "reward_accuracy": None if cpl else rrow["test_accuracy"],
                "shared_accuracy": None if cpl else shared_accuracy(
                    d / f"{arm}-relabelled.h5", d / "shared.h5"),
                "pref_accuracy": prow["pref_accuracy"],
                "success_rate": prow["success_rate"],
                "success_se": prow["success_se"],
                "eval_episodes": prow["eval_episodes"],
                "policy_steps": prow["policy_steps"],
                "wall_s": round(times[f"{arm}-{policy}"], 1) if f"{arm}-{policy}" in times else None,
                "commit": at,
            }
        )  # fmt: skip
    print(f"seed {seed}: step times (s) {json.dumps({k: round(v, 1) for k, v in times.items()})}",
          file=sys.stderr)  # fmt: skip
    return rows


def per_seed(rows: list[dict], arm: str, policy: str, key: str) -> list[float]:
    """One value per seed (the mean over a seed's shuffled permutations)."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        vals = [r[key] for r in rows if (r["arm"], r["policy"], r["seed"]) == (arm, policy, seed)]
        if vals and None not in vals:
            out.append(float(np.mean(vals)))
    return out


def mean_se(vals: list[float]) -> str:
    se = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
    return f"{np.mean(vals):.3f} ± {se:.3f}"


def table(rows: list[dict]) -> str:
    lines = ["| arm | policy | seeds | success | per seed | reward acc. (own held out) "
             "| reward acc. (shared pairs) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, policy in ARMS:
        vals = per_seed(rows, arm, policy, "success_rate")
        if not vals:
            continue
        per = " / ".join(f"{v:.2f}" for v in vals)
        acc = [per_seed(rows, arm, policy, k) for k in ("reward_accuracy", "shared_accuracy")]
        own, shared = (mean_se(a) if a else "—" for a in acc)
        lines.append(
            f"| {arm} | {policy} | {len(vals)} | {mean_se(vals)} | {per} | {own} | {shared} |"
        )
    oracle = per_seed(rows, "oracle", "filtered_bc", "success_rate")
    control = per_seed(rows, "shuffled", "filtered_bc", "success_rate")
    if len(oracle) == len(control) > 1:  # gap SE: the two SEs in quadrature, as `report` does
        se = math.hypot(*(float(np.std(v, ddof=1) / math.sqrt(len(v))) for v in (oracle, control)))
        gap = float(np.mean(oracle) - np.mean(control))
        lines.append(f"\noracle - shuffled (filtered BC): {gap:.3f} ± {se:.3f} "
                     f"({gap / se if se > 1e-12 else float('inf'):.1f} SE)")  # fmt: skip
    return "\n".join(lines)


def from_jsonl(path: str) -> None:
    """Print the table of rows written before (``--table-only``)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    print(table([r for r in rows if not r.get("study")]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/own-data-bench")
    parser.add_argument("--jsonl", default=None, help="write the rows to this JSONL file")
    parser.add_argument("--table-only", action="store_true",
                        help="only print the table of the rows in --jsonl")  # fmt: skip
    args = parser.parse_args()
    if args.table_only:
        return from_jsonl(args.jsonl)
    at = commit()
    rows = []
    for seed in args.seeds:
        rows += one_seed(seed, Path(args.out), at)
    if args.jsonl:
        # rows of other studies in the same file (a "study" field) are kept
        path = Path(args.jsonl)
        lines = path.read_text().splitlines() if path.exists() else []
        other = [line for line in lines if line and json.loads(line).get("study")]
        with open(args.jsonl, "w") as f:
            for line in other:
                f.write(line + "\n")
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
