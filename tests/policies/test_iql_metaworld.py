"""Slow: IQL on a small Meta-World button-press-v3 dataset (scripted policy + noise, random)."""

import warnings

import numpy as np
import pytest
import torch

from robopref.data import Trajectory, TrajectoryDataset
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.policies.offline.iql import IQL, IQLConfig

TASK = "button-press-v3"
EPISODE_STEPS = 150  # the expert presses the button in ~60 steps; shorter than the default 500


def _make_env(seed):
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("metaworld")
    warnings.filterwarnings("ignore", module="gymnasium")
    return gym.make("Meta-World/MT1", env_name=TASK, seed=seed, max_episode_steps=EPISODE_STEPS)


def _rollouts(env, policy, n_episodes, rng):
    trajs = []
    for _ in range(n_episodes):
        o, _ = env.reset(seed=int(rng.integers(2**31)))
        obs, acts, rews, succ = [], [], [], []
        for _ in range(EPISODE_STEPS):
            a = np.clip(policy(o), -1.0, 1.0)
            o_next, r, terminated, truncated, info = env.step(a)
            obs.append(o)
            acts.append(a)
            rews.append(r)
            succ.append(bool(info["success"]))
            o = o_next
            if terminated or truncated:
                break
        trajs.append(
            Trajectory(np.array(obs), np.array(acts), np.array(rews), np.array(succ), task=TASK)
        )
    return trajs


@pytest.mark.slow
def test_iql_solves_button_press_from_noisy_data():
    from metaworld.policies import SawyerButtonPressV3Policy

    torch.set_num_threads(1)
    env = _make_env(seed=0)
    rng = np.random.default_rng(0)
    expert = SawyerButtonPressV3Policy()
    noisy = _rollouts(env, lambda o: expert.get_action(o) + rng.normal(0.0, 1.0, 4), 20, rng)
    random = _rollouts(env, lambda o: rng.uniform(-1.0, 1.0, 4), 20, rng)
    data = TrajectoryDataset(noisy + random)
    buf = TransitionBuffer.from_dataset(data)
    assert len(buf) == 40 * (EPISODE_STEPS - 1)

    agent = IQL(39, 4, IQLConfig(steps=10_000, device="auto", seed=0))
    agent.train(buf, progress=False)

    eval_rng = np.random.default_rng(1)
    iql = _rollouts(env, lambda o: agent.act(o), 10, eval_rng)
    rand = _rollouts(env, lambda o: eval_rng.uniform(-1.0, 1.0, 4), 10, eval_rng)
    iql_success = np.mean([t.success for t in iql])
    random_success = np.mean([t.success for t in rand])
    print(
        f"IQL success {iql_success:.2f}, random {random_success:.2f}, "
        f"noisy-expert data {np.mean([t.success for t in noisy]):.2f}"
    )
    assert iql_success >= 0.8
    assert iql_success > random_success + 0.5
