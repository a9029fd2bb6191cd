"""Recipe ``collect``: collect a Meta-World dataset, label it with a simulated teacher, summarise it.

This is the foundation's end-to-end job: ``robopref run configs/collect/demo.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from robopref.config import StrictModel
from robopref.data import TrajectoryDataset, load_dataset, save_dataset, save_queries
from robopref.data.summary import summarize
from robopref.envs import CollectConfig, collect_dataset
from robopref.methods.common import start_run
from robopref.teachers import TeacherConfig, label_queries, make_teacher
from robopref.utils import atomic_path


class LabelConfig(StrictModel):
    """How many queries to sample and which simulated teacher labels them."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    num_queries: int = 500
    k: int = 2
    segment_length: int = 25
    budget: int | None = None
    seed: int = 0


class Config(StrictModel):
    method: str = "collect"
    collect: CollectConfig
    label: LabelConfig = Field(default_factory=LabelConfig)
    dataset_path: str = "dataset.h5"  # relative paths are inside the run directory


def label_file(path: str | Path, label: LabelConfig) -> TrajectoryDataset:
    """Sample and label queries over the dataset at ``path`` and store them in it atomically."""
    dataset = load_dataset(path)
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
    save_queries(path, queries)
    dataset.queries = queries
    return dataset


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
