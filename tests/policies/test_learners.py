"""AWR and return-filtered BC: weights and selection by hand, learning the point-mass task,
policy selection by name, non-finite losses, save/load."""

import math

import numpy as np
import pytest
import torch
from test_iql_learning import behaviour, mean_return, rollouts

from robopref.config import ConfigError, load_config
from robopref.data import DataValidationError, Trajectory, TrajectoryDataset
from robopref.methods import pearl
from robopref.policies.offline import (
    AWR,
    IQL,
    AWRConfig,
    FilteredBC,
    FilteredBCConfig,
    IQLConfig,
    NonFiniteLossError,
    PolicyConfig,
    TransitionBuffer,
    awr_weights,
    make_learner,
    select_episodes,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_awr_weights_by_hand():
    adv = torch.tensor([0.0, 0.3, -0.6, 5.0])
    w = awr_weights(adv, beta=0.3, weight_max=20.0)
    # exp(0) = 1, exp(1) = e, exp(-2), exp(16.7) clipped to 20
    torch.testing.assert_close(w, torch.tensor([1.0, math.e, math.exp(-2.0), 20.0]))


def test_awr_step_uses_td_advantage_by_hand():
    """hidden=() makes V linear: set it by hand and check one step's advantage and weights."""
    cfg = AWRConfig(hidden=(), beta=0.5, discount=0.9, device="cpu", lr=1e-9)
    agent = AWR(1, 1, cfg)
    with torch.no_grad():
        for net in (agent.value, agent.value_target):
            net[0].weight.fill_(2.0)  # V(s) = 2 s
            net[0].bias.zero_()
    batch = {
        "obs": torch.tensor([[1.0], [0.0]]),
        "act": torch.zeros(2, 1),
        "reward": torch.tensor([1.0, 0.0]),
        "next_obs": torch.tensor([[2.0], [1.0]]),
        "terminal": torch.tensor([0.0, 1.0]),
    }
    stats = agent.update(batch)
    # y = r + 0.9 (1 - done) V'(s') = [1 + 0.9 * 4, 0] = [4.6, 0]; A = y - V(s) = [2.6, 0]
    assert stats["adv_mean"].item() == pytest.approx(1.3)
    assert stats["weight_mean"].item() == pytest.approx((min(math.exp(2.6 / 0.5), 20.0) + 1) / 2)
    assert stats["value_loss"].item() == pytest.approx((2.6**2 + 0.0) / 2)


def test_select_episodes_by_hand():
    returns = np.array([3.0, 9.0, -1.0, 9.0, 5.0, 100.0])
    present = np.array([True, True, True, True, True, False])  # episode 5 has no transitions
    # 5 candidates, top 40% -> 2: the two 9.0s, lower index first
    np.testing.assert_array_equal(select_episodes(returns, present, 0.4), [1, 3])
    np.testing.assert_array_equal(select_episodes(returns, present, 0.5), [1, 3, 4])  # ceil(2.5)
    np.testing.assert_array_equal(select_episodes(returns, present, 0.01, min_episodes=2), [1, 3])
    np.testing.assert_array_equal(select_episodes(returns, present, 1.0), [1, 3, 4, 0, 2])
    with pytest.raises(DataValidationError, match="no episode"):
        select_episodes(returns, np.zeros(6, bool), 0.5)


def test_filtered_bc_trains_only_on_top_episodes_by_learned_return():
    # 4 episodes of 3 steps (2 transitions each); learned reward = the action, so returns rank
    # the episodes by their constant action: 0.9 > 0.5 > -0.2 > -0.7
    actions = [-0.2, 0.9, -0.7, 0.5]
    trajs = [
        Trajectory(np.arange(3.0)[:, None] + 10 * i, np.full((3, 1), a), np.zeros(3))
        for i, a in enumerate(actions)
    ]
    buf = TransitionBuffer.from_dataset(
        TrajectoryDataset(trajs), reward_fn=lambda o, a: a[:, 0], normalize_rewards="none"
    )
    np.testing.assert_allclose(buf.episode_returns, np.array(actions) * 3, rtol=1e-6)
    np.testing.assert_array_equal(buf.episode, [0, 0, 1, 1, 2, 2, 3, 3])
    agent = FilteredBC(1, 1, FilteredBCConfig(top_fraction=0.5, device="cpu"))
    rows = agent._train_rows(buf)
    np.testing.assert_array_equal(agent.selected_episodes, [1, 3])
    np.testing.assert_array_equal(rows, [2, 3, 6, 7])
    np.testing.assert_allclose(buf.act[rows, 0], [0.9, 0.9, 0.5, 0.5], rtol=1e-6)


@pytest.fixture(scope="module")
def point_mass():
    data = rollouts(behaviour, 200, seed=0)
    return TransitionBuffer.from_dataset(data)


@pytest.fixture(scope="module")
def plain_bc_return(point_mass):
    """BC on all episodes: removes the behaviour's action noise, so it already beats it."""
    agent = FilteredBC(
        4, 2, FilteredBCConfig(hidden=(64, 64), steps=800, top_fraction=1.0, device="cpu")
    )
    agent.train(point_mass, progress=False)
    return mean_return(lambda o, rng: agent.act(o))


@pytest.mark.parametrize(
    "cls, cfg",
    [
        (AWR, AWRConfig(hidden=(64, 64), steps=1000, beta=0.3, device="cpu")),
        (FilteredBC, FilteredBCConfig(hidden=(64, 64), steps=800, top_fraction=0.1, device="cpu")),
    ],
)
def test_learner_beats_behaviour_and_plain_bc(point_mass, plain_bc_return, cls, cfg):
    agent = cls(4, 2, cfg)
    agent.train(point_mass, progress=False)
    ret = mean_return(lambda o, rng: agent.act(o))
    behaviour_return = mean_return(behaviour)
    # Measured: behaviour -25.5, BC on all episodes -18.2, AWR -10.7, filtered BC (10%) -7.5,
    # IQL -10.3 (test_iql_learning), a straight-to-goal expert -4.5.
    assert behaviour_return == pytest.approx(-25.5, abs=2.0)
    assert plain_bc_return == pytest.approx(-18, abs=3.0)
    assert ret > plain_bc_return + 4.0


def _nan_buffer(field):
    rng = np.random.default_rng(0)
    arrays = dict(
        obs=rng.normal(size=(64, 3)),
        act=rng.uniform(-1, 1, (64, 2)),
        reward=rng.normal(size=64),
        next_obs=rng.normal(size=(64, 3)),
        terminal=np.zeros(64),
    )
    return TransitionBuffer(**arrays)


@pytest.mark.parametrize(
    "cls, cfg, loss",
    [
        (IQL, IQLConfig, "critic_loss"),
        (AWR, AWRConfig, "value_loss"),
        (FilteredBC, FilteredBCConfig, "actor_loss"),
    ],
)
def test_non_finite_loss_names_step_and_tensor(cls, cfg, loss):
    buf = _nan_buffer("reward")
    agent = cls(3, 2, cfg(hidden=(8,), steps=30, batch_size=16, log_every=10, device="cpu"))
    agent.train(buf, steps=3, progress=False)  # finite so far

    # from step 4 on, a loss overflows: huge rewards (value/critic) or huge actions (BC)
    if cls is FilteredBC:
        with torch.no_grad():
            agent.actor.log_std.fill_(-5.0)
        buf.act[:] = 1e30
    else:
        buf.reward[:] = 3e38
    with pytest.raises(NonFiniteLossError, match=f"'{loss}' is not finite at gradient step 4 "):
        agent.train(buf, progress=False)
    assert agent.step == 10  # stopped at the first check (log_every), naming step 4


def test_nan_in_the_data_is_a_clear_error():
    buf = _nan_buffer("obs")
    buf.next_obs[5, 1] = np.nan
    with pytest.raises(DataValidationError, match="field 'next_obs': expected finite .* index 5"):
        AWR(3, 2, AWRConfig(hidden=(8,), device="cpu")).train(buf, progress=False)


@pytest.mark.parametrize("cls, cfg", [(AWR, AWRConfig), (FilteredBC, FilteredBCConfig)])
def test_save_load_and_resume(tmp_path, cls, cfg):
    buf = _nan_buffer("obs")
    base = dict(hidden=(16,), steps=20, batch_size=16, device="cpu", seed=2)
    straight = cls(3, 2, cfg(**base))
    straight.train(buf, progress=False)
    first = cls(3, 2, cfg(**base, checkpoint_dir=str(tmp_path), checkpoint_every=5))
    first.train(buf, steps=12, progress=False)
    resumed = cls(3, 2, cfg(**base, checkpoint_dir=str(tmp_path), checkpoint_every=5))
    resumed.train(buf, progress=False)
    obs = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_array_equal(straight.act(obs), resumed.act(obs))
    loaded = cls.load(tmp_path / "checkpoint.pt")
    assert loaded.step == 20 and isinstance(loaded.config, cfg)
    np.testing.assert_array_equal(straight.act(obs), loaded.act(obs))


def test_policy_config_selects_and_rejects():
    agent = make_learner(PolicyConfig(name="filtered_bc"), 3, 2, device="cpu", seed=4)
    assert isinstance(agent, FilteredBC) and agent.config.seed == 4
    for bad, expected in [
        ({"name": "ppo"}, "unknown learner 'ppo'; valid: iql, awr, filtered_bc"),
        (
            {"name": "awr", "awr": {"betta": 1}},
            "unknown option(s) ['betta'] for AWRConfig; valid options: lr,",
        ),
        ({"nme": "awr"}, "unknown key(s) ['nme']; valid: name, iql, awr, filtered_bc"),
    ]:
        with pytest.raises(ValueError) as e:
            PolicyConfig.model_validate(bad)
        assert expected in str(e.value)


def test_pearl_config_policy_block_and_legacy_iql_key():
    cfg = load_config(
        pearl.Config, "robopref/configs/pearl/demo.yaml", ["policy.name=awr", "policy.awr.beta=0.2"]
    )
    assert cfg.policy.name == "awr" and cfg.policy.awr.beta == 0.2
    cfg = load_config(pearl.Config, "robopref/configs/pearl/demo.yaml", ["iql={steps: 7}"])
    assert cfg.policy.iql.steps == 7 and cfg.policy.iql.batch_size == 256  # merged into policy.iql
    with pytest.raises(ConfigError, match="unknown learner 'sac'; valid: iql, awr, filtered_bc"):
        load_config(pearl.Config, "robopref/configs/pearl/demo.yaml", ["policy.name=sac"])
    assert "shuffled" in load_config(pearl.Config, "robopref/configs/pearl/base.yaml").variants


def test_shuffled_labels_permute_rows():
    from robopref.data import PreferenceQueries

    first = np.random.default_rng(0).integers(0, 2, 20).astype(float)
    labels = np.stack([first, 1.0 - first], axis=1)
    q = PreferenceQueries(
        traj_index=np.zeros((20, 2), int),
        start=np.zeros((20, 2), int),
        length=np.full((20, 2), 3),
        labels=labels,
        label_kind="soft_pair",
        teacher="oracle",
    )
    s = pearl.shuffled_labels(q, seed=0)
    assert s.teacher == "oracle-shuffled" and len(s) == 20
    # same multiset of label rows, in another order
    assert sorted(map(tuple, s.labels)) == sorted(map(tuple, labels))
    assert 0.2 < (s.labels == labels).all(axis=1).mean() < 0.8  # agreement near chance
    np.testing.assert_array_equal(s.labels, pearl.shuffled_labels(q, seed=0).labels)
    # another permutation of the same seed: same multiset, another order
    s1 = pearl.shuffled_labels(q, seed=0, permutation=1)
    assert sorted(map(tuple, s1.labels)) == sorted(map(tuple, labels))
    assert not np.array_equal(s1.labels, s.labels)


def test_pearl_runs_the_selected_learner_with_a_shuffled_control(tmp_path):
    import json

    from robopref.cli import main

    episodes = (
        "expert_episodes: 2, noisy_episodes: 1, noise_levels: [0.3], goal_mismatch_episodes: 1, "
        "random_episodes: 2, other_task_episodes: 0, max_episode_steps: 40"
    )
    args = [
        "run",
        "robopref/configs/pearl/demo.yaml",
        f"source={{tasks: [button-press-v3], {episodes}}}",
        f"target={{tasks: [button-press-wall-v3], seed: 1, {episodes}}}",
        "queries={segment_length: 10, source_pool: 20, source_queries: 60, target_pool: 20, "
        "target_queries: 60, eval_queries: 30}",
        "reward.hidden=[16,16]",
        "reward.trainer={epochs: 1, batch_size: 32}",
        "policy={name: filtered_bc, filtered_bc: {steps: 20, hidden: [16], top_fraction: 0.5}}",
        "eval_episodes=3",
        "eval_max_steps=10",
        "eval_seed=77",
        "variants=[oracle,shuffled]",
        "shuffled_permutations=2",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    all_rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    assert [(r["variant"], r.get("permutation")) for r in all_rows] == [
        ("oracle", None),
        ("shuffled", 0),
        ("shuffled", 1),
    ]
    assert (tmp_path / "run" / "ckpt" / "filtered_bc-shuffled-p1").is_dir()
    rows = {r["variant"]: r for r in all_rows[:2]}
    assert set(rows) == {"oracle", "shuffled"}
    assert rows["oracle"]["label_accuracy"] == 1.0 and rows["shuffled"]["label_accuracy"] < 0.9
    for r in rows.values():
        assert r["policy"] == "filtered_bc" and r["policy_steps"] == 20 and r["eval_episodes"] == 3
        p = r["success_rate"]
        assert r["success_se"] == pytest.approx(math.sqrt(p * (1 - p) / 3))
        assert r["num_train_labels"] == 60


@pytest.mark.slow
def test_compiled_iql_update_matches_eager():
    buf = _nan_buffer("obs")
    batch = {
        k: torch.as_tensor(getattr(buf, k)[:32])
        for k in ("obs", "act", "reward", "next_obs", "terminal")
    }
    eager = IQL(3, 2, IQLConfig(hidden=(16, 16), device="cpu", seed=5))
    compiled = IQL(3, 2, IQLConfig(hidden=(16, 16), device="cpu", seed=5, compile=True))
    for _ in range(3):
        a, b = eager.update(batch), compiled.update(batch)
        for k in ("value_loss", "actor_loss", "critic_loss", "adv_mean"):
            assert a[k].item() == pytest.approx(b[k].item(), rel=1e-4, abs=1e-6)
    for p, q in zip(eager.critic.parameters(), compiled.critic.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_fused_adam_fast_step_is_bitwise_torch_adam():
    """FusedAdam.fast_step == torch.optim.Adam(fused=True).step, per group lr, across a reload."""
    from robopref.policies.offline.common import FusedAdam

    torch.manual_seed(0)
    shapes = [(5, 3), (3,), (2, 4, 2), (1,)]
    ref_p = [torch.randn(s, requires_grad=True) for s in shapes]
    new_p = [p.detach().clone().requires_grad_(True) for p in ref_p]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}]

    ref = torch.optim.Adam(groups(ref_p), lr=0.01, fused=True)
    new = FusedAdam(groups(new_p), lr=0.01)
    for step in range(6):
        if step == 3:  # a reload must rebind the fast path to the new state tensors
            state = new.state_dict()
            new = FusedAdam(groups(new_p), lr=0.01)
            new.load_state_dict(state)
        for g in (ref.param_groups[1], new.param_groups[1]):
            g["lr"] = 0.05 / (1 + step)  # a schedule, as IQL's actor group has
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ref_p, new_p, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        new.fast_step()
        for p, q in zip(ref_p, new_p):
            assert torch.equal(p, q)
    assert new._lists is not None  # the fast path ran (after the first step and the reload)
    for p, q in zip(ref_p, new_p):
        assert torch.equal(ref.state[p]["exp_avg_sq"], new.state[q]["exp_avg_sq"])
        assert ref.state[p]["step"].item() == new.state[q]["step"].item() == 6


def test_fused_adam_without_the_private_kernel_is_plain_step(monkeypatch):
    """A torch build without ``torch._fused_adam_``: fast_step falls back to step()."""
    from robopref.policies.offline import common

    monkeypatch.setattr(common, "_FUSED_ADAM_KERNEL", None)
    torch.manual_seed(0)
    ref_p = [torch.randn(4, 3, requires_grad=True)]
    new_p = [ref_p[0].detach().clone().requires_grad_(True)]
    ref = torch.optim.Adam(ref_p, lr=0.01, fused=True)
    new = common.FusedAdam(new_p, lr=0.01)
    for _ in range(3):
        g = torch.randn(4, 3)
        ref_p[0].grad, new_p[0].grad = g.clone(), g.clone()
        ref.step()
        new.fast_step()
        assert torch.equal(ref_p[0], new_p[0])
    assert new._lists is None  # the fast path never ran


def test_iql_compile_auto_compiles_only_long_runs_and_falls_back_to_eager(monkeypatch):
    """compile="auto" (the default): eager below the break-even step count, compiled at or above
    it; a compile that fails warns once and trains eagerly, giving exactly the eager result."""
    from robopref.policies.offline import iql as iql_module

    compiled = []

    def broken_compile(fn, **kwargs):
        compiled.append(fn)

        def run(*args, **kw):
            raise RuntimeError("no working C++ compiler\nlong traceback text")

        return run

    monkeypatch.setattr(iql_module.torch, "compile", broken_compile)
    monkeypatch.setattr(iql_module, "COMPILE_AUTO_MIN_STEPS", 10)
    assert IQLConfig().compile == "auto"
    with pytest.raises(ValueError, match="compile"):
        IQLConfig(compile="sometimes")
    buf = _nan_buffer("obs")
    base = dict(hidden=(8,), batch_size=16, device="cpu", seed=3)
    short = IQL(3, 2, IQLConfig(**base, steps=9))
    short.train(buf, progress=False)
    assert compiled == []  # 9 < 10 steps: eager, never compiled
    eager = IQL(3, 2, IQLConfig(**base, steps=12, compile=False))
    eager.train(buf, progress=False)
    auto = IQL(3, 2, IQLConfig(**base, steps=12))
    with pytest.warns(RuntimeWarning) as record:
        auto.train(buf, progress=False)
    messages = [str(w.message) for w in record if "torch.compile" in str(w.message)]
    assert messages == [
        "IQL: torch.compile failed (RuntimeError: no working C++ compiler); training eagerly"
    ]
    assert len(compiled) == 1 and auto.step == 12
    for p, q in zip(eager.critic.parameters(), auto.critic.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(eager.actor.parameters(), auto.actor.parameters()):
        assert torch.equal(p, q)
