"""GRAPE's results: rows (one per policy, variant, round and split), the headline table, the
change of every learner's last round against SFT, and the cross-run helpers that build
``docs/results/grape.jsonl`` from several runs (one per seed) and pool them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robopref.methods.common import Column, ReportSpec, RunResult, Table
from robopref.methods.result import RESULTS_FILE

SPLITS = (("in-domain", "in_domain"), ("held-out", "held_out"))


def result_rows(
    policy: str, variant: str, r: int, seed: int, ev: dict[str, Any]
) -> list[dict[str, Any]]:
    """Records of ``docs/results/grape.jsonl``: one per split with ``policy``, ``variant``,
    ``round``, ``seed``, ``split``, ``success``, ``success_se``, ``steps``, ``contacts``,
    ``episodes``."""
    rows = []
    for split, key in SPLITS:
        m = ev[key]["mean"]
        if not m:
            continue
        rows.append(
            {
                "policy": policy,
                "variant": variant,
                "round": r,
                "seed": seed,
                "split": split,
                "success": m["success_rate"],
                "success_se": m["success_se"],
                "steps": m["mean_length"],
                "contacts": m["mean_collisions"],
                "episodes": m.get("episodes"),
            }
        )
    return rows


def eval_line(label: str, ev: dict[str, Any]) -> str:
    """One line of an evaluation, for the progress output."""
    i, h = ev["in_domain"]["mean"], ev["held_out"]["mean"]
    held = f", held-out success {h['success_rate']:.3f}" if h else ""
    return (
        f"{label}: in-domain success {i['success_rate']:.3f} ± {i['success_se']:.3f} "
        f"steps {i['mean_length']:.1f} contacts {i['mean_collisions']:.1f}{held}"
    )


def log_eval(writer: Any, prefix: str, ev: dict[str, Any], step: int) -> None:
    """An evaluation's means as TensorBoard scalars ``eval/PREFIX/SPLIT/KEY`` at ``step``."""
    if writer is None:
        return
    for _, split in SPLITS:
        for key, value in ev[split]["mean"].items():
            writer.add_scalar(f"eval/{prefix}/{split}/{key}", value, step)


HEADLINE = [
    Column("policy"),
    Column("variant"),
    Column("round"),
    Column("in_success", "in-domain", ".3f", se="in_se"),
    Column("held_success", "held-out", ".3f", se="held_se"),
    Column("steps", "steps", ".1f"),
    Column("contacts", "contacts", ".1f"),
]

CHANGE = [
    Column("policy"),
    Column("variant"),
    Column("in_domain_success_pp", "Δ in-domain", "+.1f"),
    Column("held_out_success_pp", "Δ held-out", "+.1f"),
    Column("steps_rel_pct", "Δ steps %", "+.1f"),
    Column("contacts_rel_pct", "Δ contacts %", "+.1f"),
]


def run_result(
    config: Any, device: str, sft: dict[str, Any], learners: dict[str, list[dict]], seconds: float
) -> RunResult:
    """The run's rows and tables from the SFT info and, per ``learner/variant``, its rounds'
    infos (each with ``eval``, None for a round not evaluated)."""
    rows = result_rows("sft", "-", 0, config.seed, sft["eval"])
    table = [{"policy": "sft", "variant": "-", "round": 0, **_flat(sft["eval"])}]
    changes = []
    for key, rounds in learners.items():
        policy, variant = key.split("/", 1)
        for r, info in enumerate(rounds):
            if info["eval"] is not None:
                rows += result_rows(policy, variant, r + 1, config.seed, info["eval"])
                table.append(
                    {"policy": policy, "variant": variant, "round": r + 1, **_flat(info["eval"])}
                )
        if rounds and rounds[-1]["eval"] is not None:
            last = _flat(rounds[-1]["eval"])
            changes.append({"policy": policy, "variant": variant, **_change(last, table[0])})
    order = {
        "policy": ["sft", "tpo", "rejection_sampling", "step_dpo", "more_sft"],
        "variant": ["-", *config.cost_variants()],
        "split": [s for s, _ in SPLITS],
    }
    tables = [
        Table(
            "GRAPE: success ± SE per policy and round",
            HEADLINE,
            table,
            note=f"The same {sft['eval']['in_domain']['mean']['episodes']} in-domain episodes "
            "for every policy; steps and contacts per in-domain episode.",
        )
    ]
    if changes:
        tables.append(Table("Last round against SFT", CHANGE, changes, note=_CHANGE_NOTE))
    return RunResult(
        method="grape",
        rows=rows,
        tables=tables,
        report=ReportSpec(
            metrics=["success", "steps", "contacts"],
            group_by=["policy", "variant", "round", "split"],
            order=order,
        ),
        summary={
            "title": "GRAPE on Meta-World",
            "device": device,
            "tasks": config.tasks,
            "held_out_tasks": config.held_out_tasks,
            "obs_mode": config.model.obs_mode,
            "sft_demos": sft["demos"],
            "seconds": seconds,
            "seconds_by_part": time_split(sft, learners),
            "change_vs_sft": {f"{c['policy']}/{c['variant']}": c for c in changes},
        },
    )


def time_split(sft: dict[str, Any], learners: dict[str, list[dict]]) -> dict[str, float]:
    """Seconds spent on demonstrations, rollouts, updates (SFT and rounds) and evaluations, over
    the stages made in this run (a resumed stage keeps the seconds of the run that made it)."""
    out = {"demos": 0.0, "rollouts": 0.0, "update": 0.0, "eval": 0.0}
    for info in [sft, *(i for rounds in learners.values() for i in rounds)]:
        for part, value in info.get("seconds", {}).items():
            out[part] += value
    return out


_CHANGE_NOTE = "Δ success in percentage points; Δ steps and contacts in % of SFT's."


def _flat(ev: dict[str, Any]) -> dict[str, float]:
    i, h = ev["in_domain"]["mean"], ev["held_out"]["mean"]
    out = {
        "in_success": i["success_rate"],
        "in_se": i["success_se"],
        "steps": i["mean_length"],
        "contacts": i["mean_collisions"],
    }
    if h:
        out.update(held_success=h["success_rate"], held_se=h["success_se"])
    return out


def _change(last: dict[str, float], sft: dict[str, float]) -> dict[str, float | None]:
    held = last.get("held_success")
    return {
        "in_domain_success_pp": 100 * (last["in_success"] - sft["in_success"]),
        "held_out_success_pp": None if held is None else 100 * (held - sft["held_success"]),
        "steps_rel_pct": _relative(last["steps"], sft["steps"]),
        "contacts_rel_pct": _relative(last["contacts"], sft["contacts"]),
    }


def _relative(after: float, before: float) -> float | None:
    return None if before == 0 else 100.0 * (after - before) / abs(before)


# ---- across runs ----------------------------------------------------------------------------


def collect_rows(run_dirs: list[str | Path], **extra: Any) -> list[dict[str, Any]]:
    """The ``rows`` of the ``results.json`` of several runs (e.g. one per seed), each with
    ``extra`` fields added: the lines of ``docs/results/grape.jsonl``."""
    rows = []
    for d in run_dirs:
        data = json.loads((Path(d) / RESULTS_FILE).read_text())
        rows += [{**r, **extra} for r in data["rows"]]
    return rows


def pooled(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Success pooled over rows (seeds): episode-weighted mean, its binomial standard error over
    all episodes, and the mean steps and contacts per episode."""
    n = np.array([r["episodes"] for r in rows], dtype=float)
    p = float(np.sum(n * [r["success"] for r in rows]) / n.sum())
    return {
        "success": p,
        "success_se": float(np.sqrt(p * (1 - p) / n.sum())),
        "steps": float(np.average([r["steps"] for r in rows], weights=n)),
        "contacts": float(np.average([r["contacts"] for r in rows], weights=n)),
        "episodes": int(n.sum()),
        "seeds": len(rows),
    }
