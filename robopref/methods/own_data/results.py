"""Rows and tables of the own-data steps (one :class:`RunResult` per command)."""

from __future__ import annotations

from pathlib import Path

from robopref.methods.common import Column, ReportSpec, RunResult, Table


def reward_result(row: dict, out_dir: Path) -> RunResult:
    table = Table(
        "train-reward: held-out preference accuracy",
        [
            Column("model", "reward"),
            Column("loss", "loss"),
            Column("k", "K"),
            Column("train_queries", "train queries"),
            Column("test_queries", "held-out"),
            Column("train_accuracy", "train acc", ".3f"),
            Column("test_accuracy", "held-out acc", ".3f", se="test_se"),
        ],
        [row],
        note="accuracy: share of held-out queries whose preferred segment the reward ranks first",
    )
    return RunResult(
        method="train-reward",
        rows=[row],
        tables=[table],
        report=ReportSpec(
            metrics=["test_accuracy", "train_accuracy"],
            group_by=["model"],
            chance={"test_accuracy": 0.5},
        ),
        summary={"title": "train-reward"},
        artefacts={"reward": str(out_dir / "reward.pt"), "card": str(out_dir / "reward.card.json")},
        tensorboard=str(out_dir / "tb"),
    )


def score_result(rows: list[dict], summary: dict, artefacts: dict) -> RunResult:
    table = Table(
        "score: return per episode under the learned reward, best first",
        [
            Column("rank", "rank"),
            Column("episode", "episode"),
            Column("task", "task"),
            Column("steps", "steps"),
            Column("learned_return", "learned", ".3f"),
            Column("recorded_return", "recorded", ".3f"),
            Column("success", "success"),
            Column("kept", "kept"),
        ],
        rows,
        note=summary.get("note", ""),
    )
    return RunResult(
        method="score",
        rows=rows,
        tables=[table],
        report=ReportSpec(metrics=["learned_return"], group_by=["episode"]),
        summary=summary,
        artefacts=artefacts,
    )


def relabel_result(row: dict, out: str) -> RunResult:
    table = Table(
        "relabel: learned rewards written",
        [
            Column("episodes", "episodes"),
            Column("steps", "steps"),
            Column("raw_mean", "raw mean", ".4f"),
            Column("raw_std", "raw std", ".4f"),
            Column("original", "original"),
            Column("corr_original", "corr. orig.", ".3f"),
        ],
        [row],
        note="rewards = (raw - mean) / std; raw learned and original rewards kept as extras",
    )
    return RunResult(
        method="relabel",
        rows=[row],
        tables=[table],
        report=ReportSpec(metrics=["raw_mean", "raw_std"], group_by=[]),
        summary={"title": "relabel"},
        artefacts={"data": out},
    )


def policy_result(row: dict, out_dir: Path, sim: bool) -> RunResult:
    columns = [
        Column("policy", "policy"),
        Column("train_episodes", "train ep."),
        Column("test_episodes", "held-out ep."),
    ]
    if sim:
        columns += [
            Column("task", "task"),
            Column("success_rate", "success", ".3f", se="success_se"),
            Column("eval_episodes", "episodes"),
        ]
        note = "success: share of simulated episodes solved (binomial SE)"
    else:
        note = (
            "action MSE and the implicit reward's (sum log pi) preference accuracy on the "
            "held-out episodes (on the training data when none is held out)"
        )
    columns += [
        Column("action_mse", "action MSE", ".4f"),
        Column("pref_accuracy", "pref. acc", ".3f", se="pref_se"),
        Column("pref_queries", "queries"),
    ]
    metrics = (["success_rate"] if sim else []) + ["action_mse", "pref_accuracy"]
    return RunResult(
        method="train-policy",
        rows=[row],
        tables=[Table("train-policy", columns, [row], note=note)],
        report=ReportSpec(metrics=metrics, group_by=["policy"], chance={"pref_accuracy": 0.5}),
        summary={"title": "train-policy"},
        artefacts={"policy": str(out_dir / "policy.pt")},
        tensorboard=str(out_dir / "tb"),
    )
