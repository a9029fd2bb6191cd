"""summarize / format_summary against hand-computed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from robopref.data import (
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    load_dataset,
    save_dataset,
)
from robopref.data.summary import format_summary, summarize, summarize_queries


def _dataset() -> TrajectoryDataset:
    def traj(rewards, success_at, task, mode):
        T = len(rewards)
        succ = np.zeros(T, bool)
        if success_at is not None:
            succ[success_at] = True
        obs = {"state": np.zeros((T, 3), np.float32), "image": np.zeros((T, 2, 2, 3), np.uint8)}
        return Trajectory(obs, np.zeros((T, 4)), rewards, succ, task=task, metadata={"mode": mode})

    return TrajectoryDataset(
        [
            traj([1.0, 2.0, 3.0], 2, "reach", "expert"),
            traj([0.0, 0.0, 1.0], None, "reach", "random"),
            traj([5.0, -1.0], None, "push", "expert"),
        ]
    )


def test_summary_hand_computed():
    ds = _dataset()
    ds.queries = PreferenceQueries(
        np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]),
        np.zeros((4, 3)),
        2,
        labels=np.array([[1, 0, 0], [0, 2, 2], [1, 1, 0], [0, 5, -1]], dtype=float),
        mask=np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=bool),
        confidence=np.array([1.0, 0.5, 0.5, 0.0]),
        label_kind="graded",
        teacher="oracle",
        seed=4,
    )
    s = summarize(ds)
    assert s["num_trajectories"] == 3 and s["num_steps"] == 8
    assert s["success_rate"] == pytest.approx(1 / 3)
    assert s["mean_return"] == pytest.approx((6 + 1 + 4) / 3)
    assert s["act_dim"] == 4
    assert s["observations"] == {"state": [3, "float32"], "image": [2, 2, 3, "uint8"]}
    assert s["tasks"] == {
        "push": {
            "episodes": 1,
            "steps": 2,
            "success_rate": 0.0,
            "mean_return": 4.0,
            "mean_length": 2.0,
            "modes": {"expert": 1},
        },
        "reach": {
            "episodes": 2,
            "steps": 6,
            "success_rate": 0.5,
            "mean_return": 3.5,
            "mean_length": 3.0,
            "modes": {"expert": 1, "random": 1},
        },
    }
    q = s["queries"]
    # q0: item 0 wins; q1, q2: ties for the best; q3: item 1 wins (item 2 is padding)
    assert q["label_counts"] == {"preferred_item": [1, 1, 0], "ties": 2, "unlabelled": 0}
    assert (q["num_queries"], q["k"], q["label_kind"], q["teacher"], q["seed"]) == (
        4,
        3,
        "graded",
        "oracle",
        4,
    )
    assert q["segment_lengths"] == [2] and q["mean_confidence"] == pytest.approx(0.5)
    json.dumps(s)  # plain Python values only


def test_soft_and_unlabelled_query_counts():
    y = np.array([0.9, 0.5, 0.2, 0.7])
    soft = PreferenceQueries(
        np.zeros((4, 2)), np.zeros((4, 2)), 3, np.stack([y, 1 - y], 1), label_kind="soft_pair"
    )
    assert summarize_queries(soft)["label_counts"] == {
        "preferred_item": [2, 1],
        "ties": 1,
        "unlabelled": 0,
    }
    none = PreferenceQueries(np.zeros((5, 2)), np.zeros((5, 2)), 3)
    assert summarize_queries(none)["label_counts"] == {
        "preferred_item": [0, 0],
        "ties": 0,
        "unlabelled": 5,
    }
    empty = summarize_queries(
        PreferenceQueries(np.zeros((0, 2)), np.zeros((0, 2)), 3, label_kind="graded")
    )
    assert empty["num_queries"] == 0 and empty["mean_confidence"] is None


def test_unknown_successes_give_no_success_rate(tmp_path):
    ds = _dataset()
    ds[1].metadata["successes_recorded"] = False
    s = summarize(ds)
    assert s["success_rate"] is None and s["tasks"]["reach"]["success_rate"] is None
    assert s["tasks"]["push"]["success_rate"] == 0.0
    empty = summarize(TrajectoryDataset())
    assert (
        empty["num_trajectories"],
        empty["mean_return"],
        empty["success_rate"],
        empty["queries"],
    ) == (0, None, None, None)


def test_format_summary_renders(tmp_path):
    ds = _dataset()
    ds.queries = PreferenceQueries(
        np.array([[0, 1]]),
        np.zeros((1, 2)),
        2,
        np.array([[1.0, 0.0]]),
        label_kind="graded",
        teacher="mistake",
        seed=2,
    )
    save_dataset(ds, tmp_path / "d.h5")
    summary = summarize(load_dataset(tmp_path / "d.h5"))
    console = Console(record=True, width=160)
    console.print(format_summary(summary))
    text = console.export_text()
    assert "3 trajectories, 8 steps, act_dim 4" in text
    assert "obs/state [3] float32" in text and "obs/image [2, 2, 3] uint8" in text
    assert (
        "reach" in text
        and "0.50" in text
        and "3.50" in text
        and "expert=1" in text
        and "random=1" in text
    )
    assert "all" in text and "3.67" in text
    assert "1 queries of K=2" in text and "graded by 'mistake' (seed 2)" in text
    assert "preferred item counts [1, 0], ties 0" in text
    console = Console(record=True, width=160)
    console.print(format_summary(summarize(TrajectoryDataset())))
    assert "0 trajectories" in console.export_text()
