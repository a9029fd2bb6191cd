"""Rows and tables of the ``rapl`` recipe: how a reward is scored on held-out videos, one row per
(reward, label budget), and the run's result.

Row keys (what ``robopref bench`` stores): ``variant`` (``rapl@50``, ``unaligned``, ...),
``reward`` (the reward method), ``budget`` (labelled triplets; 0 for rewards without labels),
``seed``, ``spearman_step`` / ``spearman_episode`` (Spearman correlation with the GT reward per
frame and per episode return), ``accuracy`` (top-1 accuracy on held-out oracle pairs),
``seconds``; ``align_val_accuracy`` (per epoch) on ``rapl`` rows; and with RL ``success_rate``
and ``rl_return`` on the rows of the rewards SAC was trained on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robopref.data import PreferenceQueries, Trajectory
from robopref.methods.common import Column, ReportSpec, RunResult, Table
from robopref.methods.rapl.config import Config
from robopref.rewards.visual import top1_accuracy

METRICS = ["spearman_step", "spearman_episode", "accuracy"]
CHANCE = {"accuracy": 0.5, "spearman_step": 0.0, "spearman_episode": 0.0}
CONTROL = "unaligned"  # the same encoder without alignment: what alignment must beat


def spearman(x, y) -> float:
    """Spearman correlation; NaN when either side is constant or has fewer than 3 values."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def frame_gt(traj: Trajectory, stride: int) -> np.ndarray:
    """GT reward of each rendered frame: frame t shows the state reached by action t - 1."""
    idx = np.maximum(np.arange(0, len(traj), stride) - 1, 0)
    return traj.rewards[idx]


def score(
    frame_rewards: dict[int, np.ndarray], gt: dict[int, np.ndarray], eval_q: PreferenceQueries
) -> dict[str, float]:
    """Spearman with the GT reward (frames pooled, episode returns) and held-out accuracy."""
    ids = sorted(frame_rewards)
    returns = np.zeros(max(ids) + 1)
    for i in ids:
        returns[i] = frame_rewards[i].sum()
    return {
        "spearman_step": spearman(
            np.concatenate([frame_rewards[i] for i in ids]), np.concatenate([gt[i] for i in ids])
        ),
        "spearman_episode": spearman(
            [frame_rewards[i].sum() for i in ids], [gt[i].sum() for i in ids]
        ),
        "accuracy": top1_accuracy(returns[eval_q.traj_index], eval_q.labels),
    }


def variant(reward: str, budget: int) -> str:
    """``rapl@50`` for a reward fitted on labels, the reward's name otherwise."""
    return f"{reward}@{budget}" if budget else reward


def reward_row(reward: str, budget: int, metrics: dict, seconds: float, seed: int, **extra) -> dict:
    """The row of one reward at one label budget."""
    return {"variant": variant(reward, budget), "reward": reward, "budget": budget,
            **metrics, "seconds": seconds, **extra, "seed": seed}  # fmt: skip


def variant_order(config: Config) -> list[str]:
    """Variants in config order: baselines without labels, then each learned reward over the
    budgets, then the GT reward of the RL stage."""
    budgets = sorted(config.budgets)
    order = ["pixels", "unaligned"] + [variant("rapl", b) for b in budgets]
    order += [variant(f"rlhf_{i}", b) for i in config.rlhf.inputs for b in budgets]
    return order + ["gt"]


def add_rl(rows: list[dict], rl_rows: list[dict]) -> None:
    """RL success and GT return go on the matching reward rows, so suite reports carry them."""
    by_variant = {r["variant"]: r for r in rows}
    for r in rl_rows:
        by_variant[variant(r["reward"], r["budget"])].update(
            success_rate=r["success_rate"], rl_return=r["mean_return"]
        )


def log_metrics(writer, rows: list[dict], rl_rows: list[dict]) -> None:
    """Evaluation metrics to TensorBoard: ``eval/METRIC/REWARD`` over the label budget."""
    for r in rows:
        for m in [*METRICS, "success_rate", "rl_return"]:
            if isinstance(r.get(m), float) and math.isfinite(r[m]):
                writer.add_scalar(f"eval/{m}/{r['reward']}", r[m], r["budget"])
    for r in rl_rows:
        writer.add_scalar(f"rl/success_rate/{r['reward']}", r["success_rate"], r["budget"])


def _reading(rows: list[dict], config: Config) -> str:
    by = {r["variant"]: r for r in rows}
    b = max(config.budgets)
    parts = [f"{v} {by[v]['accuracy']:.2f}" for v in (f"rapl@{b}", "unaligned") if v in by]
    if f"rlhf_state@{b}" in by:
        parts.append(f"rlhf_state@{b} {by[f'rlhf_state@{b}']['accuracy']:.2f}")
    return (
        f"pref acc: top-1 on {config.eval_queries} held-out oracle pairs (chance 0.50): "
        + ", ".join(parts)
        + "; prefs: labelled triplets; Spearman with the GT reward (chance 0)."
    )


def run_result(
    config: Config,
    rows: list[dict],
    rl_rows: list[dict],
    summary: dict[str, Any],
    artefacts: dict[str, str],
    tb: str,
) -> RunResult:
    """The run's result: the reward table first, the RL table when RL ran."""
    order = [v for v in variant_order(config) if any(r["variant"] == v for r in rows)]
    rows = sorted(rows, key=lambda r: order.index(r["variant"]))
    columns = [
        Column("reward", "method"),
        Column("budget", "prefs"),
        Column("spearman_step", "Spearman (step)", ".3f"),
        Column("spearman_episode", "Spearman (ep)", ".3f"),
        Column("accuracy", "pref acc", ".3f"),
    ]
    if rl_rows:
        columns += [
            Column("success_rate", "RL success", ".2f"),
            Column("rl_return", "GT return", ".1f"),
        ]
    title = f"RAPL on {config.task}: rewards on {summary['num_test']} held-out videos"
    tables = [Table(title, columns, rows, note=_reading(rows, config))]
    if rl_rows:
        rl_columns = [
            Column("reward", "RL reward"),
            Column("budget", "prefs"),
            Column("success_rate", "success", ".2f"),
            Column("sampled_success_rate", "sampled success", ".2f"),
            Column("mean_return", "GT return", ".1f"),
            Column("demo_success", "demo success", ".2f"),
            Column("env_steps", "env steps"),
            Column("train_seconds", "train s", ".0f"),
        ]
        rl_title = f"RL on {config.task}: {config.rl.algo} on state observations"
        tables.append(Table(rl_title, rl_columns, rl_rows))
    metrics = [m for m in METRICS if all(isinstance(r.get(m), (int, float)) for r in rows)]
    return RunResult(
        method="rapl",
        rows=rows,
        tables=tables,
        report=ReportSpec(
            metrics=metrics,
            group_by=["variant"],
            order={"variant": order},
            chance={m: CHANCE[m] for m in metrics},
            control=CONTROL,
        ),
        summary={"title": f"RAPL: {config.task}", **summary},
        artefacts=artefacts,
        tensorboard=tb,
    )
