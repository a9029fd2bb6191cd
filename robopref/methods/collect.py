"""Recipe ``collect``: collect a Meta-World dataset, label it with a simulated teacher, summarise it.

This is the foundation's end-to-end job: ``robopref run configs/collect/demo.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

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
from robopref.methods.common import start_run
from robopref.teachers import TeacherConfig, label_queries, make_teacher
from robopref.utils import atomic_path

#: Most segment steps one labelling run may score (num_queries x k x segment_length): the
#: teacher holds them in memory at once (~8 bytes each), so larger requests would exhaust memory.
MAX_LABEL_STEPS = 50_000_000


class LabelConfig(StrictModel):
    """How many queries to sample and which simulated teacher labels them."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    num_queries: int = Field(default=500, ge=1)
    k: int = Field(default=2, ge=2)
    segment_length: int = Field(default=25, ge=1)
    budget: int | None = Field(default=None, ge=1)
    seed: Seed = 0

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
    method: str = "collect"
    collect: CollectConfig
    label: LabelConfig = Field(default_factory=LabelConfig)
    dataset_path: str = "dataset.h5"  # relative paths are inside the run directory


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
        queries = label_queries(
            dataset,
            teacher,
            num_queries=label.num_queries,
            k=label.k,
            segment_length=label.segment_length,
            budget=label.budget,
            seed=label.seed,
        )
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


def run(config: Config, out_dir: Path) -> dict:
    out_dir, _ = start_run(config, out_dir)
    path = Path(config.dataset_path)
    path = path if path.is_absolute() else out_dir / path
    dataset = collect_dataset(config.collect, progress=True)
    save_dataset(dataset, path)
    dataset = label_file(path, config.label)
    summary = summarize(dataset)
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))
    return {"dataset": str(path), **summary}
