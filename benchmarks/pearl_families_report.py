"""Markdown tables of the PEARL families study from its JSON rows.

    python benchmarks/pearl_families_report.py docs/results/pearl-families.jsonl --method NAME
    python benchmarks/pearl_families_report.py docs/results/pearl-families.jsonl --candidates

``--method``: the column "new method" (a candidate's row name); ``--candidates``: every
candidate's count of pairs >= max(similarity, plain GW) - 0.02 and >= 0.85 and its mean, ranked
as ``docs/decisions.md`` says (the rule that chose the method).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(path: Path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    acc: dict[str, dict] = defaultdict(dict)
    for r in rows:
        acc[r["method"]][(r["pair"], r["seed"])] = r["label_accuracy"]
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    family = {r["pair"]: r.get("family", "") for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return acc, pairs, family, seeds


def per_pair(acc, method, pair, seeds):
    v = [acc[method].get((pair, s)) for s in seeds]
    return None if any(x is None for x in v) else v


def ranking(acc, pairs, seeds):
    base = {p: max(np.mean(per_pair(acc, "sim", p, seeds)), np.mean(per_pair(acc, "gw", p, seeds)))
            for p in pairs}  # fmt: skip
    out = []
    for m in acc:
        if m in ("sim", "gw"):
            continue
        v = [per_pair(acc, m, p, seeds) for p in pairs]
        if any(x is None for x in v):
            continue
        means = np.array([np.mean(x) for x in v])
        safe = int(sum(means[i] >= base[p] - 0.02 for i, p in enumerate(pairs)))
        out.append((safe, int((means >= 0.85).sum()), float(means.mean()), m))
    return sorted(out, key=lambda t: t[:3], reverse=True)


def table(acc, pairs, family, seeds, method) -> str:
    def ms(v):
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

    grid = [m for m in acc if m.startswith("grid:")]
    out = [
        f"| pair | family | similarity | plain GW | auto (before) | **{method}** | best grid "
        "setting (ceiling) | >= 0.85 | >= max(sim, GW) - 0.02 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    yes = {True: "yes", False: "**no**"}
    counts = [0, 0]
    for p in pairs:
        sim, gw = per_pair(acc, "sim", p, seeds), per_pair(acc, "gw", p, seeds)
        old, new = per_pair(acc, "auto", p, seeds), per_pair(acc, method, p, seeds)
        full = [(np.mean(v), m) for m in grid if (v := per_pair(acc, m, p, seeds))]
        best = max(full)
        hi, safe = np.mean(new) >= 0.85, np.mean(new) >= max(np.mean(sim), np.mean(gw)) - 0.02
        counts[0] += hi
        counts[1] += safe
        out.append(
            f"| {p} | {family[p]} | {ms(sim)} | {ms(gw)} | {ms(old)} | **{ms(new)}** "
            f"| {best[0]:.3f} ({best[1].removeprefix('grid:')}) | {yes[hi]} | {yes[safe]} |"
        )
    out.append(
        f"| **count** | | | | | | | {counts[0]} of {len(pairs)} | {counts[1]} of {len(pairs)} |"
    )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl", type=Path)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--candidates", type=int, nargs="?", const=30, help="show the top N")
    args = ap.parse_args()
    acc, pairs, family, seeds = load(args.jsonl)
    if args.candidates:
        print("| candidate | pairs >= max(sim, GW) - 0.02 | pairs >= 0.85 | mean |")
        print("|---|---|---|---|")
        rank = ranking(acc, pairs, seeds)
        shown = rank[: args.candidates] + [r for r in rank[args.candidates :] if r[3] == "auto"]
        for safe, hi, mean, m in shown:
            print(f"| {m} | {safe} of {len(pairs)} | {hi} of {len(pairs)} | {mean:.3f} |")
        return
    print(table(acc, pairs, family, seeds, args.method))


if __name__ == "__main__":
    main()
