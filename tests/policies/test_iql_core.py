"""IQL: expectile loss by hand, a one-step bandit with known fixed point, save/load, resume."""

import math

import numpy as np
import pydantic
import pytest
import torch

from robopref.data import DataValidationError
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.policies.offline.iql import IQL, IQLConfig, expectile_loss


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Tiny networks: one thread is as fast, and several threads thrash on a shared 2-core CPU.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_expectile_loss_hand_computed():
    diff = torch.tensor([1.0, -2.0, 0.5])
    # weights 0.7, 0.3, 0.7 -> (0.7 * 1 + 0.3 * 4 + 0.7 * 0.25) / 3
    assert expectile_loss(diff, 0.7).item() == pytest.approx(2.075 / 3, rel=1e-6)
    # expectile 0.5 is half the mean squared error
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (1 + 4 + 0.25) / 3, rel=1e-6)


def _bandit_buffer(n=512):
    """One state, two actions: a = +0.5 pays 1, a = -0.5 pays 0; every step is terminal."""
    act = np.where(np.arange(n) % 2 == 0, 0.5, -0.5)[:, None]
    rew = (act[:, 0] > 0).astype(float)
    obs = np.ones((n, 1))
    return TransitionBuffer(obs, act, rew, obs, np.ones(n))


def test_bandit_reaches_iql_fixed_point():
    """V -> the 0.7-expectile of Q over the data, the actor mean -> the AWR-weighted mean action."""
    cfg = IQLConfig(hidden=(32, 32), steps=1500, batch_size=128, lr=1e-3, device="cpu", seed=0)
    agent = IQL(1, 1, cfg)
    out = agent.train(_bandit_buffer(), progress=False)
    assert out["step"] == 1500
    obs = torch.ones(2, 1)
    with torch.no_grad():
        v = agent.value(obs[:1]).item()
        q = torch.min(*agent.critic(obs, torch.tensor([[0.5], [-0.5]]))).numpy()
    # Q(s, +0.5) = 1, Q(s, -0.5) = 0; expectile 0.7 of {0, 1} w.p. 1/2: 0.7 (1 - v) = 0.3 v -> v = 0.7
    np.testing.assert_allclose(q, [1.0, 0.0], atol=0.02)
    assert v == pytest.approx(0.7, abs=0.04)
    # AWR with beta = 3: weights exp(3 * 0.3) and exp(3 * -0.7) -> weighted mean action
    w_pos, w_neg = math.exp(0.9), math.exp(-2.1)
    expected = 0.5 * (w_pos - w_neg) / (w_pos + w_neg)  # 0.4526
    assert agent.act(np.ones(1))[0] == pytest.approx(expected, abs=0.02)


def _random_buffer(n=200, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return TransitionBuffer(
        rng.normal(size=(n, obs_dim)),
        rng.uniform(-1, 1, (n, act_dim)),
        rng.normal(size=n),
        rng.normal(size=(n, obs_dim)),
        (rng.random(n) < 0.1).astype(float),
    )


def _params(agent):
    return [
        p.detach().clone()
        for m in (agent.actor, agent.critic, agent.critic_target, agent.value)
        for p in m.parameters()
    ]


def test_save_load_round_trip(tmp_path):
    cfg = IQLConfig(hidden=(16, 16), steps=20, batch_size=32, device="cpu")
    agent = IQL(3, 2, cfg)
    agent.train(_random_buffer(), progress=False)
    agent.save(tmp_path / "iql.pt")
    loaded = IQL.load(tmp_path / "iql.pt")
    assert loaded.step == 20 and loaded.config == cfg
    obs = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(agent.act(obs), loaded.act(obs))
    np.testing.assert_array_equal(
        agent.act(obs, deterministic=False), loaded.act(obs, deterministic=False)
    )
    for a, b in zip(_params(agent), _params(loaded)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    buf = _random_buffer()
    base = dict(hidden=(16, 16), steps=40, batch_size=32, device="cpu", seed=3)
    straight = IQL(3, 2, IQLConfig(**base))
    straight.train(buf, progress=False)

    cfg = IQLConfig(**base, checkpoint_dir=str(tmp_path), checkpoint_every=10)
    first = IQL(3, 2, cfg)
    first.train(buf, steps=25, progress=False)  # stops at 25, checkpoint written at 25
    assert IQL.load(tmp_path / "checkpoint.pt").step == 25
    resumed = IQL(3, 2, cfg)  # fresh process: picks the checkpoint up
    out = resumed.train(buf, progress=False)
    assert out["step"] == 40 and resumed.step == 40
    for a, b in zip(_params(straight), _params(resumed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert IQL.load(tmp_path / "checkpoint.pt").step == 40
    # a different (untrained) agent differs: the comparison above can fail
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_params(straight), _params(IQL(3, 2, IQLConfig(**base))))
    )


def test_act_shapes_and_range():
    agent = IQL(3, 2, IQLConfig(hidden=(8,), device="cpu"))
    with torch.no_grad():
        agent.actor.log_std.fill_(2.0)  # wide policy: samples must still be clipped
    assert agent.act(np.zeros(3)).shape == (2,)
    acts = agent.act(np.zeros((100, 3)), deterministic=False)
    assert acts.shape == (100, 2) and acts.dtype == np.float32
    assert acts.min() >= -1.0 and acts.max() <= 1.0 and (np.abs(acts) == 1.0).any()
    with pytest.raises(
        ValueError, match="'obs': expected \\[3\\] or \\[N, 3\\], found shape \\(4,\\)"
    ):
        agent.act(np.zeros(4))


def test_tensorboard_scalars(tmp_path):
    cfg = IQLConfig(
        hidden=(8,), steps=10, batch_size=8, device="cpu", log_dir=str(tmp_path), log_every=5
    )
    IQL(3, 2, cfg).train(_random_buffer(), progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {"iql/value_loss", "iql/critic_loss", "iql/actor_loss", "iql/actor_lr"} <= set(
        acc.Tags()["scalars"]
    )
    assert [e.step for e in acc.Scalars("iql/critic_loss")] == [5, 10]


def test_bad_buffer_and_config_raise():
    with pytest.raises(DataValidationError, match="expected dims \\(4, 2\\), found \\(3, 2\\)"):
        IQL(4, 2, IQLConfig(hidden=(8,), device="cpu")).train(_random_buffer(), progress=False)
    with pytest.raises(pydantic.ValidationError):
        IQLConfig(expectile=1.5)
    with pytest.raises(pydantic.ValidationError):
        IQLConfig(expectiles=0.7)
