"""Hand-computed labels of every teacher on tiny datasets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robopref.config import ConfigError, load_config, save_config
from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    segment_rewards,
)
from robopref.teachers import (
    PRESETS,
    Teacher,
    TeacherConfig,
    knn_values,
    make_teacher,
    reward_to_go,
)
from robopref.teachers.teacher import _segment_steps


def traj(rewards, states=None, task="t", **metadata) -> Trajectory:
    r = np.asarray(rewards, dtype=np.float64)
    obs = np.arange(len(r), dtype=np.float64)[:, None] if states is None else np.asarray(states)
    return Trajectory(obs, np.zeros((len(r), 1)), r, task=task, metadata=metadata)


# A=[1,1,1,1] (R 4), B=[0,0,0,2] (R 2), C=[2,0,0,0] (R 2), D=[0,0,0,3.5] (R 3.5)
DATA = TrajectoryDataset(
    [traj([1, 1, 1, 1]), traj([0, 0, 0, 2]), traj([2, 0, 0, 0]), traj([0, 0, 0, 3.5])]
)


def pairs(rows):
    """rows of (traj_a, start_a, traj_b, start_b, length) -> PreferenceQueries."""
    rows = np.asarray(rows)
    return PreferenceQueries(rows[:, [0, 2]], rows[:, [1, 3]], rows[:, [4, 4]])


def test_oracle_pairs_and_exact_ties():
    q = pairs([[0, 0, 1, 0, 4], [1, 0, 2, 0, 4], [1, 2, 0, 0, 2], [2, 0, 1, 0, 2], [1, 0, 3, 0, 4]])
    out = make_teacher("oracle").label(DATA, q)
    expected = [[1, 0], [0.5, 0.5], [0.5, 0.5], [1, 0], [0, 1]]
    np.testing.assert_array_equal(out.labels, expected)
    assert out.label_kind == "graded" and out.teacher == "oracle" and out.seed == 0
    assert out.metadata["teacher_config"]["name"] == "oracle"
    assert out.metadata["num_skipped"] == 0 and out.metadata["kept_index"] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(out.pair_probability(), [1, 0.5, 0.5, 1, 0])
    assert np.isnan(q.labels).all()  # the input is not modified


def test_myopic_flips_oracle_decisions():
    # B vs C: returns tie (2 = 2); myopic u_B = 2, u_C = 2 * 0.9^3 = 1.458 -> B preferred.
    # A vs D: oracle prefers A (4 > 3.5); myopic u_A = 1 + .9 + .81 + .729 = 3.439 < 3.5 -> D.
    q = pairs([[1, 0, 2, 0, 4], [0, 0, 3, 0, 4]])
    teacher = make_teacher("myopic")
    assert teacher.config.gamma == 0.9
    R, u = teacher.returns(DATA, q)
    np.testing.assert_allclose(u, [[2.0, 1.458], [3.439, 3.5]])
    np.testing.assert_allclose(R, [[2.0, 2.0], [4.0, 3.5]])
    np.testing.assert_array_equal(teacher.label(DATA, q).labels, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(
        make_teacher("oracle").label(DATA, q).labels, [[0.5, 0.5], [1, 0]]
    )


def test_stochastic_and_mistake_soft_labels():
    q = pairs([[0, 0, 1, 0, 4], [1, 0, 2, 0, 4], [2, 0, 1, 0, 2]])  # dR = 2, 0, 2
    y = make_teacher("stochastic", beta=0.5, soft=True).label(DATA, q)
    assert y.label_kind == "soft_pair"
    s = 1 / (1 + math.exp(-1.0))
    np.testing.assert_allclose(y.labels, [[s, 1 - s], [0.5, 0.5], [s, 1 - s]], rtol=1e-12)
    # a rational teacher with mistakes: the label is the probability of its answer.
    m = make_teacher("mistake", eps=0.1, soft=True).label(DATA, q)
    np.testing.assert_allclose(m.labels, [[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]])
    # both: (1 - eps) p + eps (1 - p)
    b = make_teacher("stochastic", beta=0.5, eps=0.2, soft=True).label(DATA, q)
    np.testing.assert_allclose(b.labels[0, 0], 0.8 * s + 0.2 * (1 - s))


def test_skip_threshold_is_exact():
    data = TrajectoryDataset([traj([0.5] * 4), traj([0.25] * 4), traj([1.0, 1.0, -0.5, 0.25])])
    # max returns: q0 = max(2.0, 1.0) (kept: >= threshold), q1 = max(1.75, 1.0) dropped,
    # q2 = max([1, -0.5] -> 0.5, 1.0) dropped
    q = PreferenceQueries(
        [[0, 1], [2, 1], [2, 1]], [[0, 0], [0, 0], [1, 0]], [[4, 4], [4, 4], [2, 4]]
    )
    out = make_teacher("oracle", skip_threshold=2.0).label(data, q)
    np.testing.assert_array_equal(out.metadata["kept_index"], [0])
    assert out.num_queries == 1 and out.metadata["num_skipped"] == 2
    np.testing.assert_array_equal(out.labels, [[1, 0]])
    out = make_teacher("oracle", skip_threshold=1.75).label(data, q)
    assert out.metadata["kept_index"] == [0, 1]  # 1.75 >= 1.75 kept, q2 (1.0) dropped
    none = make_teacher("oracle", skip_threshold=10.0).label(data, q)
    assert none.num_queries == 0 and none.labels.shape == (0, 2)


def test_equal_threshold_is_strict():
    data = TrajectoryDataset([traj([0.5] * 4), traj([0.25] * 4), traj([0.0] * 4)])
    # dR: q0 = 1.0 (not < 1: strict label), q1 = 1.0, q2 = 2.0, q3 = 0 (tie)
    q = pairs([[0, 0, 1, 0, 4], [1, 0, 2, 0, 4], [0, 0, 2, 0, 4], [0, 0, 0, 0, 4]])
    np.testing.assert_array_equal(
        make_teacher("equal", equal_threshold=1.0, threshold_mode="absolute").label(data, q).labels,
        [[1, 0], [1, 0], [1, 0], [0.5, 0.5]],
    )
    np.testing.assert_array_equal(
        make_teacher("oracle", equal_threshold=1.0 + 1e-9).label(data, q).labels,
        [[0.5, 0.5], [0.5, 0.5], [1, 0], [0.5, 0.5]],
    )


def test_relative_thresholds_scale_by_mean_segment_return():
    data = TrajectoryDataset([traj([0.5] * 4), traj([0.25] * 4), traj([0.0] * 4)])
    # mean reward per step = 0.25, segment length 4 -> scale 1.0; equal 1.5 -> threshold 1.5
    q = pairs([[0, 0, 1, 0, 4], [0, 0, 2, 0, 4]])
    teacher = make_teacher("equal", equal_threshold=1.5)
    assert teacher.config.threshold_mode == "relative"
    np.testing.assert_allclose(teacher.thresholds(data, q)[1], [1.5, 1.5])
    np.testing.assert_array_equal(teacher.label(data, q).labels, [[0.5, 0.5], [1, 0]])
    skip = make_teacher("skip", skip_threshold=1.9)  # threshold 1.9: max R 2.0 kept
    assert skip.label(data, q).num_queries == 2
    assert make_teacher("skip", skip_threshold=2.1).label(data, q).num_queries == 0


def test_lists_graded_labels_ties_groups_and_padding():
    data = TrajectoryDataset([traj([r]) for r in [4.0, 2.0, 3.0, 2.0, 0.0, 0.5, 1.0, 5.0]])
    q = PreferenceQueries(
        [[0, 1, 2, 0], [1, 3, 0, 0], [4, 5, 6, 7], [0, 1, 2, 3]],
        np.zeros((4, 4)),
        1,
        mask=[[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
    )
    out = make_teacher("oracle").label(data, q)
    np.testing.assert_array_equal(
        out.labels,
        [[2, 0, 1, 0], [0.5, 0.5, 2, 0], [0, 1, 2, 3], [3, 0.5, 2, 0.5]],
    )
    # equal threshold 0.6 chains 0 - 0.5 - 1.0 into one tie group (grades 2, 1, 0 -> 1 each)
    eq = make_teacher("oracle", equal_threshold=0.6).label(data, q)
    np.testing.assert_array_equal(eq.labels[2], [1, 1, 1, 3])
    np.testing.assert_array_equal(eq.labels[0], [2, 0, 1, 0])
    with pytest.raises(DataValidationError, match="K = 2 for soft labels"):
        make_teacher("stochastic", soft=True).label(data, q)


def test_mistake_swaps_two_items_of_a_list():
    data = TrajectoryDataset([traj([r]) for r in [0.0, 1.0, 2.0, 3.0]])
    q = PreferenceQueries(np.tile([0, 1, 2, 3], (2000, 1)), np.zeros((2000, 4)), 1)
    out = make_teacher("mistake", eps=1.0, seed=3).label(data, q)
    truth = np.array([0, 1, 2, 3])
    diff = out.labels != truth
    assert (diff.sum(1) == 2).all()  # always exactly two items swapped
    np.testing.assert_array_equal(np.sort(out.labels, 1), np.tile([0, 1, 2, 3], (2000, 1)))
    pair_freq = np.bincount(np.flatnonzero(diff.ravel()) % 4, minlength=4) / (2 * 2000)
    np.testing.assert_allclose(pair_freq, 0.25, atol=0.04)  # uniform over items


def test_regret_with_metadata_values_and_value_fn():
    a = traj([1, 1, 1, 1], values=[0, 0, 0, 0, 10.0])  # T + 1 values: V(after last step) = 10
    b = traj([2, 2, 2, 2], values=[5.0, 4, 3, 2])  # T values: end of trajectory uses V[T-1]
    data = TrajectoryDataset([a, b])
    q = pairs([[0, 2, 1, 0, 2], [0, 0, 1, 2, 2]])
    # q0: u_A = 2 + V_A[4] - V_A[2] = 12; u_B = 4 + V_B[2] - V_B[0] = 2 -> A (oracle: B)
    # q1: u_A = 2 + 0 - 0 = 2; u_B = 4 + V_B[3] (clamped end) - V_B[2] = 3 -> B
    t = make_teacher("regret", beta=None)
    np.testing.assert_allclose(t.returns(data, q)[1], [[12, 2], [2, 3]])
    np.testing.assert_array_equal(t.label(data, q).labels, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(make_teacher("oracle").label(data, q).labels, [[0, 1], [0, 1]])
    soft = make_teacher("regret", beta=0.1, soft=True).label(data, q)
    np.testing.assert_allclose(soft.labels[:, 0], 1 / (1 + np.exp(-0.1 * np.array([10, -1]))))
    # value_fn on observations (states = step index): V(s) = 3 s
    data2 = TrajectoryDataset([traj([1, 1, 1, 1]), traj([2, 2, 2, 2])])
    fn_t = make_teacher("regret", beta=None, value_fn=lambda obs: 3.0 * obs[:, 0])
    # q0: u_A = 2 + 3*(3 (end clamped to T-1) - 2) = 5; u_B = 4 + 3*(2 - 0) = 10
    # q1: u_A = 2 + 3*2 = 8; u_B = 4 + 3*(3 - 2) = 7
    np.testing.assert_allclose(fn_t.returns(data2, q)[1], [[5, 10], [8, 7]])
    np.testing.assert_array_equal(fn_t.label(data2, q).labels, [[0, 1], [1, 0]])
    bad = make_teacher("regret", value_fn=lambda obs: np.zeros((len(obs), 2)))
    with pytest.raises(DataValidationError, match="value_fn: output"):
        bad.label(data2, q)
    data3 = TrajectoryDataset([traj([1, 1, 1, 1], values=[1.0, 2.0]), b])
    with pytest.raises(DataValidationError, match="metadata\\['values'\\]"):
        t.label(data3, q)


def test_regret_default_knn_values():
    # reward-to-go with gamma 0.5 of [1, 2, 4]: [1 + 1 + 1, 2 + 2, 4] = [3, 4, 4]
    np.testing.assert_allclose(reward_to_go(np.array([1.0, 2.0, 4.0]), 0.5), [3, 4, 4])
    rng = np.random.default_rng(0)
    ref, qs = rng.normal(size=(50, 3)), rng.normal(size=(7, 3))
    g = rng.normal(size=50)
    tasks = np.array(["a"] * 25 + ["b"] * 25, dtype=object)
    qt = np.array(["a", "b", "a", "b", "a", "a", "b"], dtype=object)
    got = knn_values(qs, qt, ref, tasks, g, k=3, chunk=2)
    for i in range(7):
        same = np.flatnonzero(tasks == qt[i])
        d = ((ref[same] - qs[i]) ** 2).sum(1)
        np.testing.assert_allclose(got[i], g[same[np.argsort(d)[:3]]].max(), rtol=1e-12)
    # With k = 1 and distinct states, V(s) = its own discounted reward-to-go.
    data = TrajectoryDataset(
        [traj([1, 1, 1, 1]), traj([2, 2, 2, 2], states=np.arange(4)[:, None] + 0.5)]
    )
    t = make_teacher("regret", beta=None, value_knn=1, value_gamma=0.5)
    g_a = reward_to_go(np.ones(4), 0.5)  # [1.875, 1.75, 1.5, 1]
    g_b = 2 * g_a
    q = pairs([[0, 0, 1, 1, 2]])
    u = t.returns(data, q)[1]
    np.testing.assert_allclose(u, [[2 + g_a[2] - g_a[0], 4 + g_b[3] - g_b[1]]])


def test_segment_gather_matches_segment_rewards():
    rng = np.random.default_rng(1)
    data = TrajectoryDataset([traj(rng.normal(size=n)) for n in (5, 9, 12)])
    q = PreferenceQueries(
        [[0, 1, 2], [2, 2, 1]],
        [[0, 3, 7], [1, 0, 2]],
        [[5, 6, 5], [3, 12, 7]],
        mask=[[1, 1, 1], [1, 1, 0]],
    )
    steps, valid = _segment_steps(data, q)
    ref = segment_rewards(data, q)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(steps[i, j][valid[i, j]], ref[i][j])


def test_config_yaml_round_trip_and_errors(tmp_path):
    cfg = make_teacher("mistake", eps=0.25, seed=7).config
    save_config(cfg, tmp_path / "t.yaml")
    back = load_config(TeacherConfig, tmp_path / "t.yaml")
    assert back == cfg and back.beta is None and back.eps == 0.25
    assert make_teacher(back).config == cfg
    assert make_teacher(cfg.model_dump(), eps=0.3).config.eps == 0.3
    assert make_teacher(cfg, gamma=0.5).config.gamma == 0.5
    with pytest.raises(ConfigError, match="epz"):
        load_config(TeacherConfig, tmp_path / "t.yaml", ["epz=0.1"])
    with pytest.raises(ValueError, match="beta"):
        TeacherConfig(beta=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        make_teacher("myopic", gamma=1.5)
    with pytest.raises(ValueError, match="unknown teacher preset 'orcale'"):
        make_teacher("orcale")
    assert set(PRESETS) == {"oracle", "stochastic", "myopic", "mistake", "skip", "equal", "regret"}
    assert isinstance(Teacher(), Teacher) and Teacher().name == "oracle"


def test_bad_queries_raise_clear_errors():
    q = pairs([[0, 2, 1, 0, 4]])  # segment [2, 6) runs past a 4-step trajectory
    with pytest.raises(DataValidationError, match="start/length"):
        make_teacher("oracle").label(DATA, q)


@pytest.mark.parametrize("preset", ["oracle", "stochastic", "myopic", "mistake", "equal"])
def test_graded_label_invariants_on_random_lists(preset):
    rng = np.random.default_rng(sum(map(ord, preset)))
    data = TrajectoryDataset([traj(np.round(rng.normal(size=6), 1)) for _ in range(12)])
    Q, K = 500, 5
    mask = rng.random((Q, K)) < 0.8
    mask[:, :2] = True
    q = PreferenceQueries(rng.integers(0, 12, (Q, K)), rng.integers(0, 3, (Q, K)), 3, mask=mask)
    out = make_teacher(preset, seed=1).label(data, q)
    n = mask.sum(1)
    # fractional grades of n items always sum to n (n - 1) / 2, lie in [0, n - 1], 0 on padding
    np.testing.assert_allclose(out.labels.sum(1), n * (n - 1) / 2)
    assert (out.labels <= (n - 1)[:, None]).all() and (out.labels >= 0).all()
    assert (out.labels[~mask] == 0).all()
    if preset in ("oracle", "equal"):  # rational teachers never invert the return order
        R = make_teacher("oracle").returns(data, q)[0]
        inverted = (R[:, :, None] > R[:, None, :]) & (
            out.labels[:, :, None] < out.labels[:, None, :]
        )
        assert not (inverted & mask[:, :, None] & mask[:, None, :]).any()
