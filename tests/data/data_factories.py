"""Small datasets and an exact-equality check shared by the data room's tests."""

from __future__ import annotations

import numpy as np

from robopref.data import PreferenceQueries, Trajectory, TrajectoryDataset


def vector_dataset(n: int = 3, T: int = 12, obs_dim: int = 5, act_dim: int = 3, seed: int = 0):
    """``n`` trajectories with array observations [T, obs_dim] float32, float32 actions."""
    rng = np.random.default_rng(seed)
    trajs = []
    for i in range(n):
        trajs.append(
            Trajectory(
                observations=rng.normal(size=(T + i, obs_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, size=(T + i, act_dim)).astype(np.float32),
                rewards=rng.normal(size=T + i),
                successes=rng.random(T + i) < 0.3,
                task=f"task-{i % 2}",
                instruction=f"do task {i % 2}",
                metadata={
                    "mode": ["expert", "noisy"][i % 2],
                    "seed": i,
                    "noise": 0.1 * i,
                    "none": None,
                },
            )
        )
    return TrajectoryDataset(
        trajs, metadata={"source": "test", "obs_dim": obs_dim, "nested": {"a": [1, 2.5]}}
    )


def image_dataset(n: int = 3, T: int = 6, seed: int = 1):
    """Dict observations: ``state`` [T, 4] float64, ``image`` [T, 8, 6, 3] uint8, ``gripper``
    [T] bool; float64 actions."""
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n):
        obs = {
            "state": rng.normal(size=(T, 4)),
            "image": rng.integers(0, 256, size=(T, 8, 6, 3), dtype=np.uint8),
            "gripper": rng.random(T) < 0.5,
        }
        trajs.append(
            Trajectory(
                obs, rng.normal(size=(T, 2)), rng.normal(size=T), task="pixels", instruction=""
            )
        )
    return TrajectoryDataset(trajs)


def graded_queries(dataset: TrajectoryDataset, seed: int = 0) -> PreferenceQueries:
    """K = 3 graded queries, the last one ragged (2 valid items), segment length 4."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    ti = np.array([[0, 1, 2], [2, 0, 1], [1 % n, 2 % n, 0]])
    start = np.array([[0, 1, 2], [2, 0, 1], [2, 2, 0]])
    labels = rng.integers(0, 3, size=(3, 3)).astype(np.float64)
    mask = np.array([[True, True, True], [True, True, True], [True, True, False]])
    return PreferenceQueries(
        ti,
        start,
        4,
        labels,
        mask,
        np.array([1.0, 0.5, 0.25]),
        "graded",
        "oracle",
        7,
        {"teacher_config": {"name": "oracle", "beta": None}, "num_asked": 3},
    )


def soft_queries() -> PreferenceQueries:
    y = np.array([0.9, 0.5, 0.125])
    return PreferenceQueries(
        np.array([[0, 1], [1, 2], [2, 0]]),
        np.array([[0, 0], [1, 2], [3, 1]]),
        np.array([[3, 3], [4, 4], [2, 2]]),
        np.stack([y, 1 - y], 1),
        None,
        np.array([1.0, 0.75, 0.0]),
        "soft_pair",
        "pearl-cpa",
        3,
        {"mass": [0.1, 0.2]},
    )


def _same_array(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert isinstance(b, np.ndarray), what
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), what


def assert_same_queries(a: PreferenceQueries | None, b: PreferenceQueries | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    for name in ("traj_index", "start", "length", "labels", "mask", "confidence"):
        _same_array(getattr(a, name), getattr(b, name), f"queries.{name}")
    assert (a.label_kind, a.teacher, a.seed, a.metadata) == (
        b.label_kind,
        b.teacher,
        b.seed,
        b.metadata,
    )


def assert_same_dataset(a: TrajectoryDataset, b: TrajectoryDataset) -> None:
    """Exact equality: every array's dtype, shape and values, dict key order, strings, metadata."""
    assert len(a) == len(b)
    assert a.metadata == b.metadata
    for i, (s, t) in enumerate(zip(a, b)):
        assert type(s.observations) is type(t.observations), i
        if isinstance(s.observations, dict):
            assert list(s.observations) == list(t.observations), i
            for k in s.observations:
                _same_array(s.observations[k], t.observations[k], f"{i} obs/{k}")
        else:
            _same_array(s.observations, t.observations, f"{i} observations")
        for name in ("actions", "rewards", "successes", "dones"):
            _same_array(getattr(s, name), getattr(t, name), f"{i} {name}")
        assert (s.task, s.instruction, s.metadata) == (t.task, t.instruction, t.metadata), i
    assert_same_queries(a.queries, b.queries)
