"""Success per CPU-minute of the offline learners (IQL, AWR, filtered BC) on PEARL target tasks.

Oracle labels only (the reward is then as good as the labels allow; what differs is the policy
stage). For each target, one ``robopref run pearl/base`` per learner, one process
and one torch thread each, run one after the other; the first run collects the source and
target data and the others reuse it (``source_dataset=`` / ``target_dataset=``), and the reward
model is the same in every run (same seed, same data, deterministic on CPU). Each policy is
evaluated on the same ``eval_episodes`` episodes (reset seeds ``10_000 + seed`` onwards).
CPU time is ``time.process_time()`` around ``train`` (row field ``policy_cpu_s``).

Run::

    python benchmarks/learners.py --out /tmp/learners --pairs button-press drawer window door \\
        --learners iql:5000 awr:5000 filtered_bc:2000

and the table is printed (markdown) and written to ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PAIRS = {
    "button-press": ("button-press-v3", "button-press-wall-v3"),
    "drawer": ("drawer-open-v3", "drawer-close-v3"),
    "window": ("window-open-v3", "window-close-v3"),
    "door": ("door-open-v3", "door-close-v3"),
}
REPO = Path(__file__).resolve().parent.parent


def run_one(out: Path, pair: str, learner: str, steps: int, args, data: Path | None) -> dict:
    source, target = PAIRS[pair]
    run_dir = out / pair / f"{learner}-{steps}"
    if not (run_dir / "results.json").exists():
        overrides = [
            f"source.tasks=[{source}]",
            f"target.tasks=[{target}]",
            f"seed={args.seed}",
            f"source.seed={args.seed}",
            f"target.seed={100 + args.seed}",
            f"variants=[{','.join(args.variants)}]",
            f"policy.name={learner}",
            f"policy.{learner}.steps={steps}",
            f"eval_episodes={args.eval_episodes}",
            "num_threads=1",
            "device=cpu",
        ]
        if data is not None:
            overrides += [
                f"source_dataset={data / 'source.h5'}",
                f"target_dataset={data / 'target.h5'}",
            ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        cmd = [
            sys.executable,
            "-m",
            "robopref.cli",
            "run",
            "robopref/configs/pearl/base.yaml",
            *overrides,
        ]
        subprocess.run([*cmd, "--out", str(run_dir)], cwd=REPO, env=env, check=True)
    return json.loads((run_dir / "results.json").read_text()) | {"dir": str(run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pairs", nargs="+", default=list(PAIRS))
    p.add_argument("--learners", nargs="+", default=["filtered_bc:2000", "awr:5000", "iql:5000"])
    p.add_argument("--variants", nargs="+", default=["oracle"])
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    lines = [
        "| target | learner | steps | success ± SE | policy CPU-min | success / CPU-min | "
        "variant |",
        "|---|---|---|---|---|---|---|",
    ]
    data: dict[str, Path] = {}
    for spec in args.learners:  # learner-major: the cheap learners cover every target first
        learner, steps = spec.split(":")
        for pair in args.pairs:
            res = run_one(args.out, pair, learner, int(steps), args, data.get(pair))
            data.setdefault(pair, Path(res["dir"]))
            for r in res["rows"]:
                cpu_min = r["policy_cpu_s"] / 60
                line = (
                    f"| {r['target_task']} | {learner} | {steps} | {r['success_rate']:.2f} ± "
                    f"{r['success_se']:.2f} | {cpu_min:.2f} | {r['success_rate'] / cpu_min:.2f} | "
                    f"{r['variant']} |"
                )
                lines.append(line)
                print(line, flush=True)
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
