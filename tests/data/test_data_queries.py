"""Segment sampling and preference-query validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    check_segments,
    sample_queries,
    segment_rewards,
    sliding_segments,
)


def _dataset(lengths) -> TrajectoryDataset:
    trajs = [
        Trajectory(np.zeros((T, 2)), np.zeros((T, 1)), np.arange(T, dtype=float) + 100 * i)
        for i, T in enumerate(lengths)
    ]
    return TrajectoryDataset(trajs)


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    k=st.integers(2, 4),
    H=st.integers(1, 12),
    Q=st.integers(0, 25),
    seed=st.integers(0, 2**32 - 1),
)
def test_sample_queries_properties(lengths, k, H, Q, seed):
    ds = _dataset(lengths)
    lengths = np.array(lengths)
    eligible = np.flatnonzero(lengths >= H)
    if len(eligible) == 0:
        with pytest.raises(DataValidationError, match=f"no trajectory has at least {H} steps"):
            sample_queries(ds, Q, k, H, np.random.default_rng(seed))
        return
    q = sample_queries(ds, Q, k, H, np.random.default_rng(seed))
    assert q.traj_index.shape == (Q, k) and q.label_kind == "none" and np.isnan(q.labels).all()
    assert (q.length == H).all() and q.mask.all() and (q.confidence == 1).all()
    assert np.isin(q.traj_index, eligible).all()  # short trajectories are never used
    assert (q.start >= 0).all() and (q.start + H <= lengths[q.traj_index]).all()
    if len(eligible) >= k:  # distinct trajectories within a query
        assert all(len(set(row)) == k for row in q.traj_index.tolist())
    q.validate("sampled", ds)
    again = sample_queries(ds, Q, k, H, np.random.default_rng(seed))
    assert np.array_equal(q.traj_index, again.traj_index) and np.array_equal(q.start, again.start)


def test_sample_queries_respects_trajectory_ids_and_is_uniform():
    ds = _dataset([12, 12, 12, 12])
    q = sample_queries(ds, 4000, 2, 3, np.random.default_rng(0), trajectory_ids=np.array([1, 3]))
    assert set(q.traj_index.ravel().tolist()) == {1, 3}
    # with 2 ids and K = 2 each query holds both, in a uniformly random order
    assert abs((q.traj_index[:, 0] == 1).mean() - 0.5) < 0.03
    # starts are uniform over the 10 windows of a 12-step trajectory: chi-square, 9 dof
    counts = np.bincount(q.start.ravel(), minlength=10)
    assert counts.shape == (10,) and counts.sum() == 8000
    chi2 = ((counts - 800) ** 2 / 800).sum()
    assert chi2 < 27.9  # p = 0.001 critical value for 9 degrees of freedom


def test_sample_queries_argument_errors():
    ds = _dataset([10])
    with pytest.raises(DataValidationError, match="field 'k': expected K >= 2, found 1"):
        sample_queries(ds, 3, k=1)
    with pytest.raises(DataValidationError, match="field 'segment_length': expected >= 1, found 0"):
        sample_queries(ds, 3, segment_length=0)
    # fewer trajectories than K: items may repeat a trajectory
    q = sample_queries(ds, 5, k=3, segment_length=4, rng=np.random.default_rng(1))
    assert (q.traj_index == 0).all()


@settings(max_examples=100, deadline=None)
@given(T=st.integers(0, 60), H=st.integers(1, 20), stride=st.integers(1, 7))
def test_sliding_segments_properties(T, H, stride):
    s = sliding_segments(T, H, stride)
    assert s.dtype == np.int64
    assert len(s) == (max(0, (T - H) // stride + 1) if T >= H else 0)
    if len(s):
        assert s[0] == 0 and (np.diff(s) == stride).all()
        assert s[-1] + H <= T < s[-1] + stride + H  # the last window fits, the next would not


def test_sliding_segments_values_and_errors():
    assert sliding_segments(10, 4, 3).tolist() == [0, 3, 6]
    assert sliding_segments(3, 4).tolist() == []
    with pytest.raises(ValueError, match="stride >= 1"):
        sliding_segments(10, 4, 0)


def test_segment_rewards_hand_computed():
    ds = _dataset([5, 6])
    q = PreferenceQueries(
        np.array([[0, 1, 1]]), np.array([[1, 2, 0]]), 2, mask=np.array([[True, True, False]])
    )
    (row,) = segment_rewards(ds, q)
    assert row[0].tolist() == [1.0, 2.0] and row[1].tolist() == [102.0, 103.0] and row[2].size == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"traj_index": np.zeros(3)},
            r"field 'traj_index': expected \[Q, K\] with K >= 2, found shape \(3,\)",
        ),
        (
            {"traj_index": np.zeros((3, 1))},
            r"field 'traj_index': expected \[Q, K\] with K >= 2, found shape \(3, 1\)",
        ),
        (
            {"length": np.ones((3, 3))},
            r"field 'length': expected a scalar or shape \(3, 2\), found shape \(3, 3\)",
        ),
        (
            {"labels": np.zeros((3, 3))},
            r"field 'labels': expected shape \(3, 2\), found shape \(3, 3\)",
        ),
        (
            {"confidence": np.ones(2)},
            r"field 'confidence': expected shape \(3,\), found shape \(2,\)",
        ),
        (
            {"confidence": np.array([1.0, 1.5, 0.0])},
            r"field 'confidence': expected values in \[0, 1\], found values in \[0.0, 1.5\]",
        ),
        (
            {"mask": np.array([[True, False], [True, True], [True, True]])},
            r"field 'mask': expected >= 2 valid items",
        ),
        ({"length": 0}, "field 'length': expected positive segment lengths"),
        ({"start": -np.ones((3, 2))}, "field 'start': expected non-negative starts"),
        ({"label_kind": "ranked"}, "field 'label_kind'"),
        (
            {"label_kind": "graded", "labels": np.array([[1, 0], [0, np.nan], [1, 1.0]])},
            "expected finite graded scores, found 1 NaN/inf",
        ),
        (
            {"label_kind": "soft_pair", "labels": np.array([[0.2, 0.8], [1.2, -0.2], [0.5, 0.5]])},
            r"field 'labels': expected probabilities in \[0, 1\].*found values in \[-0.2, 1.2\]",
        ),
        (
            {"label_kind": "soft_pair", "labels": np.array([[0.2, 0.7], [0, 1], [0.5, 0.5]])},
            r"max \|sum - 1\| = 0.1",
        ),
    ],
)
def test_preference_queries_validation_names_the_field(kwargs, match):
    args = {"traj_index": np.zeros((3, 2)), "start": np.zeros((3, 2)), "length": 2, **kwargs}
    with pytest.raises(DataValidationError, match=match):
        PreferenceQueries(**args)


def test_queries_inside_trajectories_and_empty_query_sets():
    ds = _dataset([5, 8])
    q = PreferenceQueries(np.array([[0, 1], [1, 0]]), np.array([[0, 4], [3, 2]]), 4)
    with pytest.raises(
        DataValidationError,
        match=r"start/length.*1 segment\(s\) running past the end, e\.g\. query 1 item 1: \[2, 6\) in trajectory 0 of 5 steps",
    ):
        q.validate("q", ds)
    with pytest.raises(DataValidationError, match=r"traj_index': expected indices in \[0, 1\)"):
        check_segments(q, [8], "one")
    q.start[1, 1] = 1
    q.validate("q", ds)
    empty = PreferenceQueries(np.zeros((0, 3)), np.zeros((0, 3)), 4)
    assert empty.labels.shape == (0, 3) and empty.confidence.shape == (0,)
    empty.validate("empty", ds)  # used to fail on an empty query set with a dataset
    assert sample_queries(ds, 0, k=3, segment_length=4).traj_index.shape == (0, 3)
