"""TransitionBuffer: terminals vs truncations, relabelling, normalisation, exact arrays."""

import numpy as np
import pytest

from robopref.data import DataValidationError, Trajectory, TrajectoryDataset
from robopref.policies.offline.buffer import TransitionBuffer


def _traj(obs, act, rew, **metadata):
    return Trajectory(
        np.array(obs, float), np.array(act, float), np.array(rew, float), metadata=metadata
    )


@pytest.fixture
def dataset():
    # Trajectory A (truncated, T=3) and B (truncated, T=2); 1-D observations and actions.
    a = _traj([[0.0], [1.0], [2.0]], [[0.1], [0.2], [0.3]], [1.0, 2.0, 3.0])
    b = _traj([[10.0], [11.0]], [[-0.5], [2.0]], [-1.0, -1.0])
    return TrajectoryDataset([a, b])


def test_truncated_trajectories_drop_last_step_and_never_terminate(dataset):
    buf = TransitionBuffer.from_dataset(dataset, normalize_rewards="none")
    np.testing.assert_array_equal(buf.obs, [[0.0], [1.0], [10.0]])
    np.testing.assert_array_equal(buf.next_obs, [[1.0], [2.0], [11.0]])
    np.testing.assert_allclose(buf.act, [[0.1], [0.2], [-0.5]], rtol=1e-6)
    np.testing.assert_array_equal(buf.reward, [1.0, 2.0, -1.0])
    np.testing.assert_array_equal(buf.terminal, [0.0, 0.0, 0.0])
    assert buf.obs.dtype == np.float32 and len(buf) == 3
    assert (buf.obs_dim, buf.act_dim) == (1, 1)


def test_terminated_trajectory_keeps_last_step_as_terminal(dataset):
    dataset.trajectories[0].metadata["terminated"] = True
    buf = TransitionBuffer.from_dataset(dataset, normalize_rewards="none")
    np.testing.assert_array_equal(buf.obs, [[0.0], [1.0], [2.0], [10.0]])
    np.testing.assert_array_equal(buf.next_obs, [[1.0], [2.0], [2.0], [11.0]])
    np.testing.assert_array_equal(buf.reward, [1.0, 2.0, 3.0, -1.0])
    np.testing.assert_array_equal(buf.terminal, [0.0, 0.0, 1.0, 0.0])


def test_reward_fn_relabels_rewards(dataset):
    calls = []

    def reward_fn(obs, act):
        calls.append((obs.shape, act.shape))
        return obs[:, 0] * 10 + act[:, 0]

    buf = TransitionBuffer.from_dataset(
        dataset, reward_fn=reward_fn, normalize_rewards="none", reward_scale=2.0
    )
    # 2 * (10 * obs + act), on the kept transitions
    np.testing.assert_allclose(buf.reward, [0.2, 20.4, 199.0], rtol=1e-6)
    assert calls == [((3, 1), (3, 1)), ((2, 1), (2, 1))]  # whole trajectories, once each


def test_returns_normalisation(dataset):
    # returns: A = 6, B = -2 -> spread 8; default return_scale = longest length = 3
    buf = TransitionBuffer.from_dataset(dataset)
    np.testing.assert_allclose(buf.reward, np.array([1.0, 2.0, -1.0]) * 3 / 8, rtol=1e-6)
    buf = TransitionBuffer.from_dataset(dataset, return_scale=1000.0, reward_scale=0.5)
    np.testing.assert_allclose(buf.reward, np.array([1.0, 2.0, -1.0]) * 1000 / 8 * 0.5, rtol=1e-6)


def test_equal_returns_are_left_unscaled():
    ds = TrajectoryDataset([_traj([[0.0], [1.0]], [[0.0], [0.0]], [1.0, 1.0])] * 2)
    np.testing.assert_array_equal(TransitionBuffer.from_dataset(ds).reward, [1.0, 1.0])


def test_actions_are_clipped_unless_asked_not_to(dataset):
    dataset.trajectories[1].actions[0, 0] = -3.0
    assert TransitionBuffer.from_dataset(dataset).act[2, 0] == -1.0
    assert TransitionBuffer.from_dataset(dataset, clip_actions=False).act[2, 0] == -3.0


def test_dict_observations_use_state_key():
    obs = {"state": np.array([[0.0, 1.0], [2.0, 3.0]]), "image": np.zeros((2, 4, 4, 3), np.uint8)}
    ds = TrajectoryDataset([Trajectory(obs, np.zeros((2, 1)), np.zeros(2))])
    buf = TransitionBuffer.from_dataset(ds)
    np.testing.assert_array_equal(buf.obs, [[0.0, 1.0]])
    np.testing.assert_array_equal(buf.next_obs, [[2.0, 3.0]])


def test_sample_is_uniform_with_replacement(dataset):
    buf = TransitionBuffer.from_dataset(dataset, normalize_rewards="none")
    batch = buf.sample(3000, np.random.default_rng(0))
    assert batch["obs"].shape == (3000, 1) and batch["terminal"].shape == (3000,)
    counts = np.array([(batch["obs"][:, 0] == v).sum() for v in (0.0, 1.0, 10.0)])
    assert np.all(np.abs(counts - 1000) < 100)
    # rows stay aligned
    np.testing.assert_array_equal(batch["next_obs"][:, 0] - batch["obs"][:, 0], 1.0)


def test_bad_inputs_raise_clear_errors(dataset):
    with pytest.raises(DataValidationError, match="reward_fn output: expected shape \\(3,\\)"):
        TransitionBuffer.from_dataset(dataset, reward_fn=lambda o, a: np.zeros(5))
    with pytest.raises(ValueError, match="normalize_rewards"):
        TransitionBuffer.from_dataset(dataset, normalize_rewards="minmax")
    with pytest.raises(DataValidationError, match="'reward': expected \\[2\\]"):
        TransitionBuffer(
            np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(3), np.zeros((2, 3)), np.zeros(2)
        )
    with pytest.raises(DataValidationError, match="'next_obs'"):
        TransitionBuffer(
            np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 4)), np.zeros(2)
        )
    with pytest.raises(DataValidationError, match="no transitions"):
        TransitionBuffer.from_dataset(TrajectoryDataset([_traj([[0.0]], [[0.0]], [1.0])]))
