"""The rows, the headline table and its one-line reading of a ``pearl`` run.

A row per variant run (one per permutation of the shuffled control): what ``robopref bench``
stores and ``docs/results`` and the benchmarks read. The headline table has one line per
variant (the control's permutations averaged), success as ``mean ± SE`` over the evaluation
episodes, and a note under it that reads the success column against the shuffled control.
"""

from __future__ import annotations

import math
from pathlib import Path

from robopref.data import PreferenceQueries
from robopref.methods.common import Column, ReportSpec, RunResult, Table
from robopref.methods.pearl.config import Config

SEPARATED = 2.0  # a success gap above this many standard errors reads as a difference
TRANSFERRED = ("pearl", "pearl_bt", "gw_plain", "dis", "sim")  # variants the note reads first


def columns(eval_episodes: int) -> list[Column]:
    """variant | label acc | reward acc | success ± SE | labels | time."""
    return [
        Column("variant", "variant"),
        Column("label_accuracy", "label acc", ".3f"),
        Column("reward_accuracy", "reward acc", ".3f"),
        Column("success_rate", f"success ± SE ({eval_episodes} ep)", ".2f", se="success_se"),
        Column("num_train_labels", "labels", "d"),
        Column("wall_s", "time (s)", ".0f"),
    ]


def variant_row(
    variant: str,
    permutation: int,
    config: Config,
    source_task: str,
    target_task: str,
    *,
    label_accuracy: float,
    labels: PreferenceQueries,
    num_train_labels: int,
    reward_accuracy: float,
    evaluation: dict,
    policy_steps: int,
    timings: dict[str, float],
    info: dict,
) -> dict:
    """The result row of one variant run (``permutation``: of the shuffled control)."""
    success = float(evaluation["success_rate"])
    # the chosen transfer setting as one field: text columns would split report groups
    setting = {k: v for k, v in info.items() if isinstance(v, str)}
    return {
        "variant": variant,
        **({"permutation": permutation} if variant == "shuffled" else {}),
        "source_task": source_task,
        "target_task": target_task,
        "seed": config.seed,
        "label_accuracy": label_accuracy,
        "mean_confidence": float(labels.confidence.mean()),
        "num_train_labels": int(num_train_labels),
        "reward_accuracy": reward_accuracy,
        "success_rate": success,
        "success_se": math.sqrt(success * (1.0 - success) / config.eval_episodes),
        "eval_episodes": config.eval_episodes,
        "policy": config.policy.name,
        "policy_steps": policy_steps,
        "policy_train_s": round(timings["policy_train_s"], 1),
        "policy_cpu_s": round(timings["policy_cpu_s"], 1),  # this process, all threads
        "eval_s": round(timings["eval_s"], 1),
        "mean_return": float(evaluation["mean_return"]),
        "wall_s": round(timings["wall_s"], 1),
        **{f"transfer_{k}": v for k, v in info.items() if isinstance(v, (int, float))},
        **({"transfer_setting": setting} if setting else {}),
    }


def per_variant(rows: list[dict]) -> list[dict]:
    """One table row per variant, in run order: the permutations of a control averaged
    (their evaluation SEs combined as the SE of a mean of independent estimates)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(r)
    table = []
    for variant, members in out.items():
        if len(members) == 1:
            table.append(members[0])
            continue
        n = len(members)
        mean = {
            k: sum(r[k] for r in members) / n
            for k in ("label_accuracy", "reward_accuracy", "success_rate")
        }
        se = math.sqrt(sum(r["success_se"] ** 2 for r in members)) / n
        table.append(
            {
                **members[0],
                **mean,
                "variant": f"{variant} (mean of {n})",
                "success_se": se,
                "wall_s": sum(r["wall_s"] for r in members),
            }
        )
    return table


def reading(table: list[dict]) -> str:
    """One line under the table: the first transferred variant's success against the shuffled
    control (and the oracle), and what the gap says."""
    by = {r["variant"].split(" (")[0]: r for r in table}
    name = next((v for v in by if v in TRANSFERRED), None)
    control, oracle = by.get("shuffled"), by.get("oracle")
    if name is None or (control is None and oracle is None):
        return ""
    shown = "PEARL" if name == "pearl" else name
    main = by[name]
    text = f"{shown} {main['success_rate']:.2f}"
    if control is None:
        return text + f" vs oracle {oracle['success_rate']:.2f} (no shuffled control to read it)"
    text += f" vs shuffled control {control['success_rate']:.2f}"
    if oracle is not None:
        text += f" (oracle {oracle['success_rate']:.2f})"
    if oracle is not None and not _above(oracle, control):
        return text + ": the oracle is not above the control, so success cannot tell rewards apart"
    if _above(main, control):
        return text + ": the transferred labels carry the preference"
    if _above(control, main):
        return text + ": below the control, the transferred labels mislead the reward"
    return text + ": not told apart from the control at this size"


def _above(a: dict, b: dict) -> bool:
    gap = a["success_rate"] - b["success_rate"]
    return gap > SEPARATED * math.hypot(a["success_se"], b["success_se"])


def pearl_result(config: Config, rows: list[dict], out_dir: Path) -> RunResult:
    """The run's result: its rows, the headline table and how ``bench`` reads the rows."""
    source_task, target_task = rows[0]["source_task"], rows[0]["target_task"]
    title = f"PEARL: {source_task} -> {target_task} (seed {config.seed})"
    table = per_variant(rows)
    return RunResult(
        method="pearl",
        rows=rows,
        tables=[Table(title, columns(config.eval_episodes), table, note=reading(table))],
        report=ReportSpec(
            metrics=["label_accuracy", "reward_accuracy", "success_rate"],
            group_by=["source_task", "target_task", "variant"],
            order={"variant": list(config.variants)},
            chance={"label_accuracy": 0.5, "reward_accuracy": 0.5},
            control="shuffled",
        ),
        summary={
            "title": title,
            "source_task": source_task,
            "target_task": target_task,
            "seed": config.seed,
        },
        artefacts={"checkpoints": str(out_dir / "ckpt")},
        tensorboard=str(out_dir / "tb"),
    )
