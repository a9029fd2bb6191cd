"""RLPD-style SAC (robopref/policies/online/rlpd.py): symmetric demo/online batches, LayerNorm critics,
update-to-data ratio, and its options in the RAPL recipe."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from robopref.config import ConfigError, load_config
from robopref.methods import rapl
from robopref.methods.rapl import rl as rapl_rl
from robopref.policies.online.rlpd import (
    MixedReplayBuffer,
    RLPDConfig,
    demo_buffer,
    make_rlpd_sac,
)

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _demos(n: int = 10):
    """``n`` demo transitions, all with reward +1 and observations >= 10 (told apart below)."""
    rng = np.random.default_rng(0)
    return [(10 + rng.random(3), 10 + rng.random(3), rng.uniform(-1, 1, 2), 1.0) for _ in range(n)]


def test_each_batch_is_half_demo_half_online():
    demos = demo_buffer(_demos(), OBS, ACT)
    buf = MixedReplayBuffer(100, OBS, ACT, demo=demos, demo_fraction=0.5)
    for _ in range(30):  # online transitions: reward -1, observations in [0, 1)
        buf.add(np.random.rand(1, 3), np.random.rand(1, 3), np.zeros((1, 2)),
                np.array([-1.0]), np.array([False]), [{}])  # fmt: skip
    batch = buf.sample(64)
    assert batch.rewards.shape == (64, 1) and batch.observations.shape == (64, 3)
    # the first half is all demo (reward +1, obs >= 10), the second all online
    assert torch.equal(batch.rewards[:32], torch.ones(32, 1))
    assert torch.equal(batch.rewards[32:], -torch.ones(32, 1))
    assert bool((batch.observations[:32] >= 10).all()) and bool((batch.observations[32:] < 1).all())
    assert torch.equal(batch.dones, torch.zeros(64, 1))
    # another fraction: round(0.25 * 10) = 2 demo transitions (2.5 rounds to even)
    buf.demo_fraction = 0.25
    assert int((buf.sample(10).rewards > 0).sum()) == 2


def test_demo_buffer_holds_exactly_the_demos():
    demos = demo_buffer(_demos(7), OBS, ACT)
    assert demos.size() == 7 and demos.full
    with pytest.raises(ValueError, match="rl.rlpd: needs demo transitions"):
        demo_buffer([], OBS, ACT)


class _Tiny(gym.Env):
    """3-d observation, 2-d action, reward -|a|; 10-step episodes."""

    observation_space, action_space = OBS, ACT

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(3, 0.1 * self.t, np.float32)
        return obs, -float(np.abs(action).sum()), False, self.t >= 10, {}


def _agent(num_envs: int, layer_norm: bool = True, utd: int = 2):
    from stable_baselines3.common.vec_env import DummyVecEnv

    cfg = RLPDConfig(utd=utd, layer_norm=layer_norm, num_envs=num_envs, batch_size=8,
                     net_arch=(16, 16))  # fmt: skip
    env = DummyVecEnv([_Tiny for _ in range(num_envs)])
    return make_rlpd_sac(env, demo_buffer(_demos(), OBS, ACT), cfg, learning_starts=20, seed=0,
                         device="cpu")  # fmt: skip


def test_critics_have_layer_norm_and_the_actor_none():
    agent = _agent(1)
    for critic in (agent.critic, agent.critic_target):
        for q in critic.q_networks:
            kinds = [type(m) for m in q]
            # Linear -> LayerNorm -> ReLU, Linear -> LayerNorm -> ReLU, Linear(1)
            assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]
            assert q[1].normalized_shape == (16,) and q[-1].out_features == 1
    # per Q-net: (W, b, gamma, beta) x 2 hidden layers + (W, b) out; no leftover plain MLP
    assert len(list(agent.critic.parameters())) == 2 * (2 * 4 + 2)
    assert not any(isinstance(m, nn.LayerNorm) for m in agent.actor.modules())
    # the target starts as a copy, so its state dict loads (same module names and shapes)
    agent.critic_target.load_state_dict(agent.critic.state_dict())
    plain = _agent(1, layer_norm=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in plain.critic.modules())


@pytest.mark.parametrize("num_envs", [1, 2])
def test_update_to_data_ratio(num_envs):
    agent = _agent(num_envs, utd=2)
    agent.learn(60)
    # training starts once more than learning_starts=20 transitions were collected: the last 40
    # transitions each bring utd=2 gradient steps, whether they come 1 or 2 per vector step
    assert agent.num_timesteps == 60
    assert agent._n_updates == 2 * 40
    assert agent.replay_buffer.size() * num_envs == 60


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.algo=ppo", "field 'rl.algo'"),
        ("rl.rlpd.demo_fraction=1.5", "field 'rl.rlpd.demo_fraction'"),
        ("rl.rlpd.utd=0", "field 'rl.rlpd.utd'"),
        ("rl.rlpd.ratio=2", "unknown key 'rl.rlpd.ratio'"),
        ("rl.fixed_configuration=false", "'rlpd' needs rl.fixed_configuration: true"),
    ],
)
def test_bad_rlpd_option_is_one_line_error(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(rapl.Config, "robopref/configs/rapl/reach-rlpd.yaml", [override])
    assert "\n" not in str(err.value)


def test_rlpd_config_loads():
    cfg = load_config(rapl.Config, "robopref/configs/rapl/reach-rlpd.yaml")
    assert cfg.rl.algo == "rlpd" and cfg.rl.rlpd == RLPDConfig(utd=2, demo_fraction=0.5)


def test_rlpd_in_the_rapl_rl_stage(tmp_path):
    """The recipe's RL stage with rl.algo=rlpd on reach-v3's GT reward, 2 vector envs: the scene
    demos fill the demo buffer, and the counts follow utd and num_envs."""
    cfg = load_config(
        rapl.Config,
        "robopref/configs/rapl/reach-rlpd.yaml",
        ["num_demos=2", "rl.max_episode_steps=10", "rl.total_steps=40", "rl.learning_starts=20",
         "rl.eval_episodes=2", "rl.rlpd.num_envs=2", "rl.rlpd.batch_size=8",
         "rl.rlpd.net_arch=[16,16]"],
    )  # fmt: skip
    row = rapl.run_gt_rl(cfg, tmp_path)
    assert row["algo"] == "rlpd" and row["env_steps"] == 40
    assert row["gradient_steps"] == 2 * 20  # utd=2 per transition after the 20 warm-up ones
    assert row["buffer_transitions"] == 20  # per env: 2 envs x 20 steps = 40 transitions
    assert row["sampled_episodes"] == 2 and 0.0 <= row["sampled_success_rate"] <= 1.0
    assert row["demo_success"] in (0.0, 0.5, 1.0)


def test_rlpd_demo_transitions_get_the_online_ot_rewards(tmp_path, monkeypatch):
    """The scene demos in RLPD's demo buffer are paid the OT reward the wrapper pays online for
    the same actions (frames after each action), not the demo video's (frames before)."""
    seen = {}

    def fake_train_sac(setup, name, reward, log_dir, transitions):
        seen[name] = (setup, reward, list(transitions))
        return {"reward": name, "success_rate": 0.0, "mean_return": 0.0}

    monkeypatch.setattr(rapl_rl, "train_sac", fake_train_sac)
    cfg = load_config(
        rapl.Config,
        "robopref/configs/rapl/reach-rlpd.yaml",
        ["budgets=[6]", "rl.budget=6", "rl.rewards=[rapl]", "eval_queries=10", "num_demos=2",
         "collect.expert_episodes=4", "collect.noisy_episodes=2", "collect.noise_levels=[1.0]",
         "collect.goal_mismatch_episodes=2", "collect.random_episodes=3",
         "collect.other_task_episodes=0", "collect.max_episode_steps=12", "render.width=16",
         "render.height=16", "render.frame_stride=4", "encoder.cnn_width=4", "encoder.out_dim=8",
         "align.epochs=2", "align.batch_size=6", "rlhf.inputs=[state]", "rlhf.trainer.epochs=5"],
    )  # fmt: skip
    rapl.run(cfg, tmp_path)
    setup, reward, transitions = seen["rapl"]
    assert len(transitions) == 2 * 12  # 2 demos of 12 steps
    _, _, episodes = rapl_rl.scene_demos(setup.config, setup.horizon)
    for k, ep in enumerate(episodes):
        env = setup.make_env(reward)
        obs, _ = env.reset()
        for t, action in enumerate(ep.actions):
            np.testing.assert_allclose(obs, transitions[12 * k + t][0])
            obs, _, term, trunc, info = env.step(action)
        env.close()
        assert term or trunc
        paid = [tr[3] for tr in transitions[12 * k : 12 * (k + 1)]]
        np.testing.assert_allclose(paid, info["ot_rewards"], rtol=1e-9)
        assert np.ptp(paid) > 0  # not a constant reward that any timing would match
