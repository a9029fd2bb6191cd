"""Short reprs of the data model: counts, tasks, K, keys and shapes; never the arrays."""

from __future__ import annotations

import numpy as np

from robopref.data import PreferenceQueries, Trajectory, TrajectoryDataset, sample_queries


def _dataset(n: int = 40, T: int = 500) -> TrajectoryDataset:
    rng = np.random.default_rng(0)
    trajs = [
        Trajectory(
            {"state": rng.normal(size=(T, 39)), "image": np.zeros((T, 8, 8, 3), np.uint8)},
            rng.normal(size=(T, 4)).astype(np.float32),
            np.full(T, 0.5),
            task=f"task-{i % 9}",
        )
        for i in range(n)
    ]
    return TrajectoryDataset(trajs, metadata={"source_format": "robomimic", "fps": 10})


def test_dataset_repr_is_a_short_summary():
    ds = _dataset()
    q = sample_queries(ds, 300, k=3, segment_length=10, rng=np.random.default_rng(0))
    q.labels = np.tile([2.0, 1.0, 0.0], (300, 1))
    q.label_kind, q.teacher, q.seed = "graded", "oracle", 0
    ds.queries = q
    text = repr(ds)
    assert str(ds) == text
    assert len(text) < 800, len(text)  # the arrays alone print hundreds of kilobytes
    assert "trajectories: 40," in text and "steps: 20000," in text
    # nine tasks: six shown and the count of the others
    assert (
        "tasks: ['task-0', 'task-1', 'task-2', 'task-3', 'task-4', 'task-5', ... (+3 more)]" in text
    )
    assert "observations: {state: (39,) float64, image: (8, 8, 3) uint8}" in text
    assert "actions: (4,) float32" in text
    assert (
        "queries: PreferenceQueries(num_queries=300, k=3, label_kind='graded', labelled=300, "
        "teacher='oracle', seed=0, segment_length=10)"
    ) in text
    assert "metadata: ['fps', 'source_format']" in text
    assert "0.5" not in text and "[[" not in text


def test_trajectory_and_queries_reprs_are_one_line():
    t = _dataset(1, 50)[0]
    t.instruction = "pick up the red cube and put it into the green bowl on the left"
    text = repr(t)
    assert text == (
        "Trajectory(task='task-0', steps=50, instruction='pick up the red cube and put it into "
        "...', observations={state: (39,) float64, image: (8, 8, 3) uint8}, "
        "actions=(4,) float32, return=25, success=False)"
    )
    q = PreferenceQueries(np.zeros((4, 2), int), np.zeros((4, 2), int), [[5, 8]] * 4)
    assert (
        repr(q) == "PreferenceQueries(num_queries=4, k=2, label_kind='none', segment_length=5..8)"
    )
    assert repr(TrajectoryDataset()) == (
        "TrajectoryDataset({\n    trajectories: 0,\n    steps: 0,\n    tasks: [],\n})"
    )
