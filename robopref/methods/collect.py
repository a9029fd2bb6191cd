"""Recipe ``collect``: collect a Meta-World dataset, label it with a simulated teacher, summarise it.

``robopref run collect/demo`` ends with a table per task (episodes, steps, success
rate, labelled queries). The collected dataset is a stage of the run folder: a rerun with the same
``collect`` section reuses it and only labels it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from robopref.config import Seed, StrictModel
from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    TrajectoryDataset,
    load_dataset,
    save_dataset,
    save_queries,
)
from robopref.data.locks import writer_lock
from robopref.data.summary import summarize
from robopref.envs import CollectConfig, collect_dataset
from robopref.methods.common import Column, ReportSpec, RunResult, Stage, Table, start_run
from robopref.teachers import TeacherConfig, label_queries, make_teacher

#: Most segment steps one labelling run may score (num_queries x k x segment_length): the
#: teacher holds them in memory at once (~8 bytes each), so larger requests would exhaust memory.
MAX_LABEL_STEPS = 50_000_000


class LabelConfig(StrictModel):
    """How many queries to sample and which simulated teacher labels them."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    """The simulated labeller (a preset ``name`` such as ``oracle`` or ``mistake``, with any
    field overridden)."""
    num_queries: int = Field(default=500, ge=1)
    """Queries to sample and label."""
    k: int = Field(default=2, ge=2)
    """Segments per query (2: pairs; more: ranked lists)."""
    segment_length: int = Field(default=25, ge=1)
    """Steps per segment (clipped to shorter trajectories)."""
    budget: int | None = Field(default=None, ge=1)
    """Most queries the teacher answers (skipped ones count); default: ``num_queries``."""
    seed: Seed = 0
    """Seed of the query sampling."""
    select: Literal["random", "disagreement", "entropy"] = "random"
    """How queries are chosen: ``random`` (uniformly), or actively from a candidate pool
    (``pool_factor`` x ``num_queries``) by a reward ensemble retrained on the labels so far
    every ``retrain_every`` labels (B-Pref): ``disagreement`` of its members or ``entropy`` of
    its mean prediction."""
    retrain_every: int = Field(default=50, ge=1)
    """Labels between two retrainings of the selection ensemble (active selection only)."""
    pool_factor: int = Field(default=10, ge=1)
    """Candidate queries per query asked (active selection only)."""

    @model_validator(mode="after")
    def _fits_in_memory(self) -> LabelConfig:
        steps = self.num_queries * self.k * self.segment_length
        if steps > MAX_LABEL_STEPS:
            raise ValueError(
                f"num_queries x k x segment_length = {steps} segment steps to score, expected "
                f"at most {MAX_LABEL_STEPS}"
            )
        return self


class Config(StrictModel):
    """Collect a Meta-World dataset, label it with a simulated teacher and summarise it."""

    method: str = "collect"
    collect: CollectConfig
    """What to collect: tasks, episode counts per mode, episode length, seed."""
    label: LabelConfig = Field(default_factory=LabelConfig)
    """Which queries to sample and how the teacher labels them."""
    dataset_path: str = "dataset.h5"
    """Where the labelled dataset is written; a relative path is inside the run folder."""


def label_file(path: str | Path, label: LabelConfig, existing: str = "refuse") -> TrajectoryDataset:
    """Sample and label queries over the dataset at ``path`` and store them in it atomically.

    The file's writer lock is held from reading to writing, so a concurrent ``label``,
    ``collect --out``, ``import`` or ``label-ui`` of the same file fails with
    :class:`~robopref.data.locks.FileBusyError` instead of one result silently replacing the
    other.

    Args:
        existing: what to do with labels already in the file: ``"refuse"`` (raise),
            ``"overwrite"`` (replace them) or ``"append"`` (keep them, add the new ones after).

    Raises:
        DataValidationError: the dataset has no recorded rewards (a simulated teacher ranks by
            reward), it already holds labels and ``existing="refuse"``, or appending labels of
            another K or kind.
        FileBusyError: another process is writing ``path``.
    """
    if existing not in ("refuse", "overwrite", "append"):
        raise ValueError(
            f"label_file: existing: expected refuse, overwrite or append, found {existing!r}"
        )
    if not Path(path).is_file():  # before the lock, which would create its folder
        raise DataValidationError(
            f"{path}: expected a dataset file, found "
            f"{'a directory' if Path(path).is_dir() else 'nothing (missing)'}"
        )
    with writer_lock(path, what="label it"):
        dataset = load_dataset(path)
        check_rewards_recorded(dataset, path)
        old = dataset.queries
        if old is not None and existing == "refuse":
            what = (
                f"{old.num_queries} unlabelled queries (chosen for label-ui)"
                if old.label_kind == "none"
                else f"{old.num_queries} labels by '{old.teacher or old.label_kind}'"
            )
            raise DataValidationError(
                f"{path}: preferences: already holds {what}; pass --overwrite to replace them "
                f"or --append to add new ones (nothing was written)"
            )
        teacher = make_teacher(label.teacher)
        if label.select == "random":
            queries = label_queries(
                dataset,
                teacher,
                num_queries=label.num_queries,
                k=label.k,
                segment_length=label.segment_length,
                budget=label.budget,
                seed=label.seed,
            )
        else:
            queries = active_label_queries(dataset, teacher, label)
        if queries.num_queries == 0:  # e.g. a skip teacher whose threshold skips every query
            raise DataValidationError(
                f"{path}: the teacher '{teacher.name}' skipped all "
                f"{queries.metadata.get('num_asked', 0)} queries it was asked (teacher."
                f"skip_threshold = {label.teacher.skip_threshold}); nothing was written"
            )
        if old is not None and existing == "append":
            queries = append_queries(old, queries, str(path))
        save_queries(path, queries)
    dataset.queries = queries
    return dataset


def active_label_queries(
    dataset: TrajectoryDataset, teacher: Any, label: LabelConfig
) -> PreferenceQueries:
    """``label.num_queries`` queries chosen by ``label.select`` from a uniformly sampled pool
    and labelled by ``teacher`` (see :func:`robopref.rewards.active.active_labels`)."""
    from robopref.data import sample_queries
    from robopref.rewards.active import active_labels

    rng = np.random.default_rng(label.seed)
    pool = sample_queries(
        dataset, label.pool_factor * label.num_queries, label.k, label.segment_length, rng
    )
    budget = min(label.budget or label.num_queries, label.num_queries, pool.num_queries)
    return active_labels(
        dataset,
        pool,
        lambda q: teacher.label(dataset, q, seed=label.seed),
        budget,
        label.select,
        label.retrain_every,
        seed=label.seed,
    )


def check_rewards_recorded(dataset: TrajectoryDataset, path: str | Path) -> None:
    """Raise :class:`DataValidationError` when a simulated teacher cannot label ``dataset``:
    it has no recorded rewards (e.g. imported without a reward key), or every reward is the
    same number (every label would be a tie)."""
    hint = f"label it yourself in the browser with `robopref label-ui {path}`"
    if dataset.metadata.get("rewards_recorded") is False:
        raise DataValidationError(
            f"{path}: rewards: expected recorded rewards (a simulated teacher ranks segments by "
            f"reward), found none (metadata rewards_recorded = false, e.g. an imported "
            f"real-robot set); {hint}"
        )
    values = [t.rewards for t in dataset if len(t)]
    if values:
        flat = np.concatenate(values)
        if flat.min() == flat.max():
            raise DataValidationError(
                f"{path}: rewards: expected rewards that differ between steps (a simulated "
                f"teacher ranks segments by reward), found every reward = {flat[0]:g} (every "
                f"label would be a tie); {hint}"
            )


def append_queries(
    old: PreferenceQueries, new: PreferenceQueries, source: str
) -> PreferenceQueries:
    """``old`` followed by ``new`` (same K and label kind). The teacher name joins both names
    when they differ; ``metadata["appended"]`` lists each appended run."""
    if old.k != new.k or old.label_kind != new.label_kind:
        raise DataValidationError(
            f"{source}: preferences: --append needs new labels like the stored ones, expected "
            f"k={old.k} {old.label_kind} labels, found k={new.k} {new.label_kind}"
        )
    cat = {
        name: np.concatenate([getattr(old, name), getattr(new, name)])
        for name in ("traj_index", "start", "length", "labels", "mask", "confidence")
    }
    teacher = old.teacher if old.teacher == new.teacher else f"{old.teacher}+{new.teacher}"
    appended = [
        *old.metadata.get("appended", []),
        {"teacher": new.teacher, "seed": new.seed, "num_queries": new.num_queries,
         "first_query": old.num_queries, "metadata": new.metadata},
    ]  # fmt: skip
    return PreferenceQueries(
        **cat,
        label_kind=old.label_kind,
        teacher=teacher,
        seed=old.seed,
        metadata={**old.metadata, "appended": appended},
    )


def run(config: Config, out_dir: str | Path) -> RunResult:
    """Collect (or reuse) the dataset, label it and return its summary per task."""
    out_dir, _ = start_run(config, out_dir)
    path = Path(config.dataset_path)
    path = path if path.is_absolute() else out_dir / path
    data = Stage(
        "collect",
        path,
        key=config.collect.model_dump(mode="json", exclude={"num_workers", "start_method"}),
    )
    if not data.is_current():
        data.forget()
        save_dataset(collect_dataset(config.collect, progress=True), path)
        data.done()
    # labelling is quick: always redone, so a changed ``label`` section never meets stale labels
    dataset = label_file(path, config.label, existing="overwrite")
    summary = summarize(dataset)
    rows = _task_rows(dataset, summary, config.collect.seed)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out_dir / "tb")) as writer:
        _log_summary(writer, dataset, rows)
    return _result(config, path, summary, rows, str(out_dir / "tb"))


def _task_rows(dataset: TrajectoryDataset, summary: dict, seed: int) -> list[dict]:
    """One row per task: episodes, steps, success rate, mean return and the queries with a
    segment of the task."""
    queries = dataset.queries
    tasks = np.array([t.task for t in dataset])
    rows = []
    for task, s in summary["tasks"].items():
        touching = 0
        if queries is not None and queries.num_queries:
            touching = int((tasks[queries.traj_index] == task).any(axis=1).sum())
        rows.append({"task": task, "episodes": s["episodes"], "steps": s["steps"],
                     "success_rate": s["success_rate"], "mean_return": s["mean_return"],
                     "queries": touching, "seed": seed})  # fmt: skip
    return rows


def _log_summary(writer, dataset: TrajectoryDataset, rows: list[dict]) -> None:
    """Per task: success rate, mean return and the histogram of episode returns."""
    for r in rows:
        for key in ("success_rate", "mean_return", "queries"):
            if r[key] is not None:
                writer.add_scalar(f"data/{key}/{r['task']}", r[key], 0)
        returns = [t.episode_return for t in dataset if t.task == r["task"]]
        writer.add_histogram(f"returns/{r['task']}", np.asarray(returns), 0)


def _result(config: Config, path: Path, summary: dict, rows: list[dict], tb: str) -> RunResult:
    q = summary["queries"] or {}
    total = {"task": "all", "episodes": summary["num_trajectories"], "steps": summary["num_steps"],
             "success_rate": summary["success_rate"], "mean_return": summary["mean_return"],
             "queries": q.get("num_queries", 0)}  # fmt: skip
    columns = [
        Column("task"),
        Column("episodes"),
        Column("steps"),
        Column("success_rate", "success rate", ".2f"),
        Column("mean_return", "mean return", ".1f"),
        Column("queries", "queries"),
    ]
    teacher = q.get("teacher") or config.label.teacher.name
    note = (
        f"{q.get('num_queries', 0)} queries of k={q.get('k', config.label.k)} segments of "
        f"{config.label.segment_length} steps, labelled by '{teacher}'; queries: those with a "
        f"segment of the task"
    )
    table = Table(f"collected dataset: {len(rows)} tasks", columns, [*rows, total], note=note)
    metrics = ["episodes", "steps", "success_rate", "mean_return", "queries"]
    return RunResult(
        method="collect",
        rows=rows,
        tables=[table],
        report=ReportSpec(
            metrics=metrics, group_by=["task"], order={"task": [r["task"] for r in rows]}
        ),
        summary={"title": "collect", "dataset": str(path), **summary},
        artefacts={"dataset": str(path)},
        tensorboard=tb,
    )
