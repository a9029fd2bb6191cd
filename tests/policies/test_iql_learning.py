"""IQL learns a 2-D point-mass navigation task from noisy, suboptimal offline data."""

import numpy as np
import pytest
import torch

from robopref.data import Trajectory, TrajectoryDataset
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.policies.offline.iql import IQL, IQLConfig

HORIZON = 40


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rollouts(policy, n_episodes, seed):
    """Point mass in [-1, 1]^2: obs = [pos, goal], pos += 0.1 * action, reward = -|pos - goal|.

    Episodes end by the time limit (truncation), as in Meta-World.
    """
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n_episodes):
        pos, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        obs, acts, rews = [], [], []
        for _ in range(HORIZON):
            o = np.concatenate([pos, goal])
            a = np.clip(policy(o, rng), -1.0, 1.0)
            pos = np.clip(pos + 0.1 * a, -1.0, 1.0)
            obs.append(o)
            acts.append(a)
            rews.append(-np.linalg.norm(pos - goal))
        trajs.append(Trajectory(np.array(obs), np.array(acts), np.array(rews)))
    return TrajectoryDataset(trajs)


def behaviour(o, rng):
    """Slow and very noisy: a small push towards the goal plus large Gaussian noise."""
    d = o[2:] - o[:2]
    return 0.4 * d / (np.linalg.norm(d) + 1e-8) + rng.normal(0.0, 0.8, 2)


def random_policy(o, rng):
    return rng.uniform(-1.0, 1.0, 2)


def mean_return(policy, seed=123, n_episodes=50):
    return float(np.mean([t.episode_return for t in rollouts(policy, n_episodes, seed)]))


def test_iql_beats_behaviour_and_random_policy():
    data = rollouts(behaviour, 200, seed=0)
    buf = TransitionBuffer.from_dataset(data)
    assert len(buf) == 200 * (HORIZON - 1) and buf.terminal.sum() == 0
    agent = IQL(4, 2, IQLConfig(hidden=(64, 64), steps=2000, device="cpu", seed=0))
    agent.train(buf, progress=False)

    iql = mean_return(lambda o, rng: agent.act(o))
    behaviour_return = mean_return(behaviour)
    random_return = mean_return(random_policy)
    # Measured: behaviour -25.5, random -38.3, a scripted straight-to-goal expert -4.5, IQL ~ -10.
    assert behaviour_return == pytest.approx(-25.5, abs=2.0)
    assert random_return < behaviour_return
    assert iql > behaviour_return + 8.0
