"""Success of every PEARL variant on the targets of the task-families study (one seed).

The pairs are those of ``robopref/configs/bench/pearl-families.yaml`` (18) and
``pearl-families-final.yaml`` (4), seed 0 (source seed 0, target seed 100). Three steps, each
resumable (a finished piece is never redone):

``data``
    collects (once) and caches each task's source data (the default mix) and target data (the
    suite's "haystack" mix) of ``robopref/configs/pearl/base.yaml``, and measures the scripted
    expert's success on the evaluation episodes the policies get (reset seeds 10,000 + i); rows
    go to ``<out>/data.jsonl`` (expert success, the target data's success share).
``run --variants oracle`` / ``run --variants pearl gw_plain sim shuffled``
    one ``robopref run pearl/base`` per pair on the cached data, the offline learner set by
    :func:`learner_overrides` (the rule of ``docs/decisions.md``, "Offline learner setting of
    the PEARL families targets"), run folders ``<out>/runs/<pair>/<variants>``.
``rows``
    gathers every run's rows with the pair's expert success and data share into ``--rows``
    (jsonl) and prints the table of ``docs/results.md``.

    python benchmarks/pearl_families_success.py data --out runs/pearl-families-success
    python benchmarks/pearl_families_success.py run --variants oracle --out runs/pearl-families-success
    python benchmarks/pearl_families_success.py run --variants pearl gw_plain sim shuffled \\
        --out runs/pearl-families-success
    python benchmarks/pearl_families_success.py rows --out runs/pearl-families-success \\
        --rows docs/results/pearl-families-success.jsonl

``--pairs NAME ...`` restricts any step to some pairs (names as in the bench configs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "robopref" / "configs"
SUITES = ("bench/pearl-families.yaml", "bench/pearl-families-final.yaml")
SEED, SOURCE_SEED, TARGET_SEED = 0, 0, 100
EVAL_SEED = 10_000 + SEED  # the recipe's default evaluation seeds
MIN_KEPT_TRANSITIONS, PASSES, BATCH = 4000, 128, 256  # the learner rule's constants
CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "robopref" / "pearl-families"
)


def pairs() -> dict[str, tuple[str, str, str]]:
    """``name -> (source task, target task, suite)`` in the configs' order."""
    out = {}
    for suite in SUITES:
        axes = yaml.safe_load((CONFIGS / suite).read_text())["axes"]["pair"]
        for name, overrides in axes.items():
            tasks = dict(o.split("=", 1) for o in overrides)
            out[name] = (
                tasks["source.tasks"].strip("[]"),
                tasks["target.tasks"].strip("[]"),
                Path(suite).stem,
            )
    return out


def base_config() -> dict:
    return yaml.safe_load((CONFIGS / "pearl" / "base.yaml").read_text())


def collect_config(role: str, task: str):
    from robopref.envs import CollectConfig

    section = base_config()[role]
    seed = SOURCE_SEED if role == "source" else TARGET_SEED
    return CollectConfig(**{**section, "tasks": [task], "seed": seed})


def dataset_path(role: str, task: str) -> Path:
    """Cached file of ``role``'s data of ``task``, keyed by the whole collect config."""
    cfg = collect_config(role, task)
    key = hashlib.sha1(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode())
    return CACHE / f"{task}-s{cfg.seed}-{role}-{key.hexdigest()[:8]}.h5"


def cached_dataset(role: str, task: str):
    from robopref.data import load_dataset, save_dataset
    from robopref.envs import collect_dataset

    path = dataset_path(role, task)
    if path.exists():
        return load_dataset(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = collect_dataset(collect_config(role, task), progress=False)
    save_dataset(dataset, path)  # atomic: a killed collection leaves no file
    return dataset


def data_step(args, todo: dict) -> None:
    from robopref.envs import ScriptedPolicy, evaluate_on_task

    out = args.out / "data.jsonl"
    done = {json.loads(line)["pair"] for line in out.open()} if out.exists() else set()
    for name, (source, target, suite) in todo.items():
        if name in done:
            continue
        cached_dataset("source", source)
        data = cached_dataset("target", target)
        success = [bool(t.successes.any()) for t in data]
        modes = [t.metadata["mode"] for t in data]
        expert_in_data = [s for s, m in zip(success, modes) if m == "expert"]
        ev = evaluate_on_task(
            ScriptedPolicy(target),
            target,
            num_episodes=args.expert_episodes,
            seed=EVAL_SEED,
            max_episode_steps=base_config()["target"]["max_episode_steps"],
        )
        row = {
            "pair": name,
            "suite": suite,
            "source_task": source,
            "target_task": target,
            "expert_success": float(ev["success_rate"]),
            "expert_episodes": args.expert_episodes,
            "data_success_share": float(sum(success) / len(success)),
            "data_expert_success": float(sum(expert_in_data) / max(1, len(expert_in_data))),
            "data_episodes": len(data),
            "data_steps": int(sum(len(t.actions) for t in data)),
        }
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def learner_overrides(episodes: int, horizon: int) -> list[str]:
    """The offline learner's setting for a target, from the data's size and horizon only
    (``docs/decisions.md``, "Offline learner setting of the PEARL families targets")."""
    # >= 4,000 kept transitions (coverage of the start configurations), never under 0.1
    top_fraction = min(1.0, max(0.1, MIN_KEPT_TRANSITIONS / (episodes * horizon)))
    kept = math.ceil(top_fraction * episodes) * horizon
    steps = max(2000, math.ceil(PASSES * kept / BATCH))  # >= 128 passes over what is kept
    return [
        "policy.name=filtered_bc",
        f"policy.filtered_bc.top_fraction={top_fraction:g}",
        f"policy.filtered_bc.steps={steps}",
        f"policy.filtered_bc.batch_size={BATCH}",
    ]


def run_step(args, todo: dict) -> None:
    horizon = base_config()["target"]["max_episode_steps"]
    for name, (source, target, _) in todo.items():
        run_dir = args.out / "runs" / name / "-".join(args.variants)
        if (run_dir / "results.json").exists():
            continue
        target_path = dataset_path("target", target)
        if not target_path.exists():
            sys.exit(f"{name}: no cached target data ({target_path}); run the data step first")
        from robopref.data import load_dataset

        episodes = len(load_dataset(target_path))
        overrides = [
            f"source.tasks=[{source}]",
            f"target.tasks=[{target}]",
            f"seed={SEED}",
            f"source.seed={SOURCE_SEED}",
            f"target.seed={TARGET_SEED}",
            f"variants=[{','.join(args.variants)}]",
            *learner_overrides(episodes, horizon),
            "num_threads=1",
            "device=cpu",
            f"source_dataset={dataset_path('source', source)}",
            f"target_dataset={target_path}",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "robopref.cli", "run", "pearl/base", *overrides]
        print(f"[{name}] {' '.join(cmd[3:])}", flush=True)
        subprocess.run([*cmd, "--out", str(run_dir)], cwd=REPO, env=env, check=True)


def rows_step(args, todo: dict) -> None:
    data = {}
    if (args.out / "data.jsonl").exists():
        for line in (args.out / "data.jsonl").open():
            row = json.loads(line)
            data[row["pair"]] = row
    rows = []
    for name in todo:
        for res in sorted((args.out / "runs" / name).glob("*/results.json")):
            for r in json.loads(res.read_text())["rows"]:
                extra = {k: data[name][k] for k in data.get(name, {}) if k not in r}
                rows.append({"pair": name, **extra, **r})
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(table(rows, data, todo))


def _mean_se(rs: list[dict]) -> tuple[float, float] | None:
    if not rs:
        return None
    p = sum(r["success_rate"] for r in rs) / len(rs)
    # the permutations of the control: SE of a mean of independent estimates
    se = math.sqrt(sum(r["success_se"] ** 2 for r in rs)) / len(rs)
    return p, se


def table(rows: list[dict], data: dict, todo: dict) -> str:
    variants = ["oracle", "shuffled", "pearl", "gw_plain", "sim"]
    head = (
        "| pair | expert | data share | "
        + " | ".join(variants)
        + " | oracle - shuffled | informative | pearl >= max(baselines) - 0.1 |"
    )
    lines = [head, "|" + "---|" * (len(variants) + 6)]
    for name in todo:
        by = {v: _mean_se([r for r in rows if r["pair"] == name and r["variant"] == v])
              for v in variants}  # fmt: skip
        d = data.get(name, {})
        cells = [f"{b[0]:.2f} ± {b[1]:.2f}" if b else "-" for b in by.values()]
        gap = inform = verdict = "-"
        if by["oracle"] and by["shuffled"]:
            g = by["oracle"][0] - by["shuffled"][0]
            gap, inform = f"{g:+.2f}", "yes" if g >= 0.3 else "no"
            base = [by[v][0] for v in ("gw_plain", "sim") if by[v]]
            if by["pearl"] and base:
                ok = by["pearl"][0] >= max(base) - 0.1
                verdict = ("yes" if ok else "**no**") if g >= 0.3 else ("(yes)" if ok else "(no)")
        expert = f"{d['expert_success']:.2f}" if d else "-"
        share = f"{d['data_success_share']:.2f}" if d else "-"
        lines.append(
            f"| {name} | {expert} | {share} | " + " | ".join(cells) + f" | {gap} | {inform} | "
            f"{verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("step", choices=["data", "run", "rows"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pairs", nargs="+", help="only these pairs (default: all 22)")
    p.add_argument("--variants", nargs="+", default=["oracle"])
    p.add_argument("--expert-episodes", type=int, default=20)
    p.add_argument("--rows", type=Path, default=REPO / "docs/results/pearl-families-success.jsonl")
    args = p.parse_args()
    every = pairs()
    unknown = sorted(set(args.pairs or []) - set(every))
    if unknown:
        p.error(f"--pairs: unknown {unknown}; expected names of {', '.join(SUITES)}")
    todo = {k: v for k, v in every.items() if not args.pairs or k in args.pairs}
    args.out.mkdir(parents=True, exist_ok=True)
    {"data": data_step, "run": run_step, "rows": rows_step}[args.step](args, todo)


if __name__ == "__main__":
    main()
