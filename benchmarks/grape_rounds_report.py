"""The GRAPE learning curve across seeds: rows, a markdown table and a plot from the run folders
of ``robopref/configs/grape/rounds.yaml`` (one per seed).

    python benchmarks/grape_rounds_report.py runs/rounds/s0 runs/rounds/s1 runs/rounds/s2 \
        --jsonl docs/results/grape.jsonl --png docs/results/grape-rounds.png

Prints the table (success per policy and round: mean over seeds ± SE over seeds, and the paired
difference to SFT on the same seeds ± its SE over seeds) and the time split of each run.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from robopref.methods.grape import collect_rows

NAMES = {
    "sft": "SFT",
    "tpo": "TPO",
    "step_dpo": "step-level DPO",
    "rejection_sampling": "iterated RFT",
    "more_sft": "more SFT (control)",
}


def write_rows(path: Path, rows: list[dict], config: str) -> None:
    """Replace the rows of ``config`` in the JSONL file ``path`` (other rows, e.g. of another
    config's runs, stay as they are)."""
    kept = []
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in kept if json.loads(line).get("config") != config]
    path.write_text(
        "".join(line + "\n" for line in kept) + "".join(json.dumps(r) + "\n" for r in rows)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument(
        "--jsonl", help="rows file: its rows of --config are replaced, other rows are kept"
    )
    ap.add_argument("--png")
    ap.add_argument("--config", default="robopref/configs/grape/rounds.yaml")
    ap.add_argument(
        "--variants", nargs="*", default=[], help="runs whose cost-variant rows are added"
    )
    args = ap.parse_args()
    rows = collect_rows(args.runs, config=args.config)
    rows += [r for r in collect_rows(args.variants, config=args.config) if r["variant"] != "task"]
    rows = [r for r in rows if r["variant"] in ("-", "task") or r["policy"] == "tpo"]
    rows = list({json.dumps(r, sort_keys=True): r for r in rows}.values())  # one SFT row each
    if args.jsonl:
        write_rows(Path(args.jsonl), rows, args.config)
    variants(rows)
    rows = [r for r in rows if r["variant"] in ("-", "task")]  # the curves: the task cost
    curves = table(rows)
    contrasts(rows)
    if args.png:
        plot(curves, rows, args.png)


def table(rows: list[dict]) -> dict:
    """Prints the markdown table; returns ``{(policy, split): [(round, mean, se), ...]}``."""
    by = defaultdict(dict)  # (policy, round, split) -> seed -> row
    for r in rows:
        by[(r["policy"], r["round"], r["split"])][r["seed"]] = r
    seeds = sorted({r["seed"] for r in rows})
    curves = defaultdict(list)
    print(f"seeds {seeds}; episodes per seed: ", end="")
    print({s: by[("sft", 0, s)][seeds[0]]["episodes"] for s in ("in-domain", "held-out")})
    head = "| policy | round | in-domain | vs SFT (points) | held-out | vs SFT (points) | steps |"
    print(head + "\n|---|---|---|---|---|---|---|")
    for policy in NAMES:
        rounds = sorted({k[1] for k in by if k[0] == policy})
        for rd in rounds:
            cells = []
            for split in ("in-domain", "held-out"):
                got = by[(policy, rd, split)]
                base = by[("sft", 0, split)]
                common = [s for s in seeds if s in got and s in base]
                x = np.array([got[s]["success"] for s in common])
                d = 100 * (x - np.array([base[s]["success"] for s in common]))
                m, se = x.mean(), _se(x)
                curves[(policy, split)].append((rd, m, se))
                diff = "-" if policy == "sft" else f"{d.mean():+.1f} ± {_se(d):.1f}"
                cells += [f"{m:.3f} ± {se:.3f}", diff]
            steps = np.mean([r["steps"] for r in by[(policy, rd, "in-domain")].values()])
            print(f"| {NAMES[policy]} | {rd} | " + " | ".join(cells) + f" | {steps:.1f} |")
    return curves


def variants(rows: list[dict]) -> None:
    """The cost variants' last round against SFT and task-cost TPO (in-domain, paired)."""
    last = max(r["round"] for r in rows)
    val = {(r["policy"], r["variant"], r["round"], r["split"], r["seed"]): r for r in rows}
    for v in sorted({r["variant"] for r in rows} - {"-", "task"}):
        seeds = sorted({k[4] for k in val if k[1] == v})
        for ref, key in ((("sft", "-", 0), "SFT"), (("tpo", "task", last), "TPO task")):
            got = [
                (val[("tpo", v, last, "in-domain", s)], val[(*ref, "in-domain", s)]) for s in seeds
            ]
            ds = np.array([100 * (a["success"] - b["success"]) for a, b in got])
            st = np.array([100 * (a["steps"] / b["steps"] - 1) for a, b in got])
            co = np.array([100 * (a["contacts"] / b["contacts"] - 1) for a, b in got])
            print(
                f"TPO {v} round {last} vs {key} (seeds {seeds}): success {ds.mean():+.1f} points, "
                f"steps {st.mean():+.1f} %, contacts {co.mean():+.1f} %"
            )


def contrasts(rows: list[dict]) -> None:
    """Paired differences at the last round: TPO against each other learner, per split."""
    last = max(r["round"] for r in rows)
    val = {(r["policy"], r["round"], r["split"], r["seed"]): r["success"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    for other in ("rejection_sampling", "step_dpo", "more_sft"):
        if not any(k[0] == other for k in val):
            continue
        for split in ("in-domain", "held-out"):
            d = 100 * np.array(
                [val[("tpo", last, split, s)] - val[(other, last, split, s)] for s in seeds]
            )
            per = " / ".join(f"{x:+.1f}" for x in d)
            print(f"TPO - {other} round {last} {split}: {d.mean():+.1f} ± {_se(d):.1f} ({per})")
    for split in ("in-domain", "held-out"):
        d = 100 * np.array(
            [val[("tpo", last, split, s)] - val[("sft", 0, split, s)] for s in seeds]
        )
        print(f"TPO - SFT round {last} {split} per seed: " + " / ".join(f"{x:+.1f}" for x in d))


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def plot(curves: dict, rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, split in zip(axes, ("in-domain", "held-out"), strict=True):
        n = next(r["episodes"] for r in rows if r["split"] == split)
        for policy, style in (("tpo", "o-"), ("step_dpo", "s-"), ("rejection_sampling", "^-")):
            pts = curves.get((policy, split), [])
            if pts:
                r, m, se = map(np.array, zip(*[(0, *curves[("sft", split)][0][1:]), *pts]))
                ax.errorbar(r, m, yerr=se, fmt=style, capsize=3, label=NAMES[policy])
        sft = curves[("sft", split)][0]
        ax.axhline(sft[1], color="k", lw=1, label="SFT")
        ax.axhspan(sft[1] - sft[2], sft[1] + sft[2], color="k", alpha=0.08)
        more = curves.get(("more_sft", split), [])
        if more:
            r, m, _ = map(np.array, zip(*[(0, *sft[1:]), *more]))
            ax.plot(r, m, "k--", label=NAMES["more_sft"])
        ax.set_title(f"{split} ({n} episodes per policy and seed)")
        ax.set_xlabel("round")
        ax.set_ylabel("success rate")
        ax.set_xticks(range(0, max(p[0] for p in curves[("tpo", split)]) + 1))
    axes[0].legend(fontsize=8)
    fig.suptitle(f"GRAPE on Meta-World: success per round, mean ± SE over seeds (n = {len(seeds)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
