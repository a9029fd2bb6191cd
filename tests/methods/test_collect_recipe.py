"""The ``collect`` recipe: a stage for the collected dataset, labels redone on every run, and a
result with one row per task."""

from __future__ import annotations

from unittest import mock

import numpy as np

from robopref.data import load_dataset
from robopref.envs import collect_dataset
from robopref.methods import collect


def _config(**label):
    return collect.Config.model_validate(
        {
            "collect": {"tasks": ["reach-v3", "button-press-v3"], "expert_episodes": 2,
                        "noisy_episodes": 0, "goal_mismatch_episodes": 0, "random_episodes": 2,
                        "other_task_episodes": 0, "max_episode_steps": 15, "seed": 4},
            "label": {"num_queries": 12, "segment_length": 5, **label},
        }
    )  # fmt: skip


def test_rows_per_task_and_a_report_spec_over_them(tmp_path):
    res = collect.run(_config(), tmp_path)
    assert [r["task"] for r in res.rows] == ["button-press-v3", "reach-v3"]
    for r in res.rows:
        assert (r["episodes"], r["steps"], r["seed"]) == (4, 60, 4)
        assert 0.0 <= r["success_rate"] <= 1.0 and 0 < r["queries"] <= 12
        for m in res.report.metrics:  # bench aggregates these: numbers in every row
            assert isinstance(r[m], (int, float)) and not isinstance(r[m], bool), m
    assert res.report.group_by == ["task"]
    table = res.tables[0]  # the table adds the whole dataset
    assert table.rows[-1]["task"] == "all" and table.rows[-1]["queries"] == 12
    ds = load_dataset(tmp_path / "dataset.h5")
    for r in res.rows:
        solved = [t.success for t in ds if t.task == r["task"]]
        assert r["success_rate"] == np.mean(solved)
    assert ds.queries.num_queries == 12 and res.artefacts["dataset"] == str(tmp_path / "dataset.h5")
    assert res.tensorboard == str(tmp_path / "tb") and any((tmp_path / "tb").iterdir())


def test_a_rerun_reuses_the_collected_data_and_labels_it_again(tmp_path):
    collect.run(_config(), tmp_path)
    with mock.patch.object(collect, "collect_dataset", wraps=collect_dataset) as spy:
        res = collect.run(_config(num_queries=7), tmp_path)
        assert spy.call_count == 0
        assert load_dataset(tmp_path / "dataset.h5").queries.num_queries == 7
        assert res.tables[0].rows[-1]["queries"] == 7
        other = _config().model_copy(deep=True)
        other.collect.random_episodes = 1
        res = collect.run(other, tmp_path)
        assert spy.call_count == 1  # another collect section: collected again
    assert [r["episodes"] for r in res.rows] == [3, 3]
    assert np.isfinite(res.rows[0]["mean_return"])
