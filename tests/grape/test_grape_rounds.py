"""GRAPE's iterative rounds: fresh rollout seeds per round, the more-SFT control's matched update
steps, per-round rows, chunked evaluation and the rejection-sampling options."""

from __future__ import annotations

import json

import numpy as np
import torch

from robopref.methods import grape
from robopref.methods.grape.rounds import greedy_relabel, rollout_seeds
from robopref.policies.vla import EvalProtocol, evaluate, rollout, scripted_demos, sft_train


def _config(**overrides):
    base = {
        "tasks": ["reach-v3", "button-press-v3"],
        "task_specs": {
            "reach-v3": {
                "stages": [{"name": "reach", "a": "hand", "b": "goal", "threshold": 0.05}]
            },
            "button-press-v3": {
                "stages": [{"name": "reach", "a": "hand", "b": "obj1", "threshold": 0.05}]
            },
        },
        "max_episode_steps": 10,
        "model": {"hidden_size": 16, "n_layers": 1},
        "sft": {"demos_per_task": 2, "epochs": 1, "successful_only": False},
        "tpo": {"rounds": 2, "rollouts_per_task": 3, "epochs": 1, "batch_size": 2, "margin": 0.0},
        "eval": {"episodes_per_task": 1},
        "num_threads": 1,
        "tensorboard": False,
        "progress": False,
    }
    base.update(overrides)
    return grape.Config.model_validate(base)


def test_rollout_seeds_are_fresh_every_round_and_shared_by_a_variant():
    config = _config(variants={"efficiency": {"length": 1.0}}, tpo={"rounds": 4})
    rounds = [set(rollout_seeds(config, "task", r, 0)) for r in range(4)]
    assert all(len(s) == 8 for s in rounds)  # tpo.rollouts_per_task (default 8)
    assert len(set().union(*rounds)) == 32  # no seed repeats across rounds
    assert not set(rollout_seeds(config, "task", 0, 0)) & set(rollout_seeds(config, "task", 0, 1))
    assert rollout_seeds(config, "efficiency", 0, 0) != rollout_seeds(config, "task", 0, 0)
    assert rollout_seeds(config, "task", 2, 1) == rollout_seeds(config, "task", 2, 1)


def test_sft_train_steps_makes_exactly_that_many_updates():
    torch.manual_seed(0)
    config = _config()
    pool = grape.make_pool(config)
    demos = scripted_demos(pool, ["reach-v3"], 2, 0.1, False, lambda ti, i: i)
    pool.close()
    policy = grape.build_policy(config)
    n = sum(len(d) for d in demos)  # 20 steps: 3 batches of 8 per epoch
    history = sft_train(policy, demos, batch_size=8, steps=7)
    assert n == 20 and [h["steps"] for h in history] == [3, 6, 7]
    assert sft_train(policy, demos, steps=0) == []


def test_rounds_roll_out_the_current_policy_and_more_sft_matches_tpo_steps(tmp_path):
    torch.set_num_threads(1)
    config = _config(baselines=["more_sft", "rejection_sampling"])
    result = grape.run(config, tmp_path)
    ckpt = tmp_path / "checkpoints"
    tpo = [json.loads((ckpt / "task" / f"round_{r:02d}.json").read_text()) for r in range(2)]
    more = [
        json.loads((ckpt / "more_sft-task" / f"round_{r:02d}.json").read_text()) for r in range(2)
    ]
    rfts = [
        json.loads((ckpt / "rejection_sampling-task" / f"round_{r:02d}.json").read_text())
        for r in range(2)
    ]
    # each round rolls out on its own seeds; every learner of the task cost on the same ones
    assert not set(tpo[0]["rollout_seeds"]) & set(tpo[1]["rollout_seeds"])
    assert [i["rollout_seeds"] for i in rfts] == [i["rollout_seeds"] for i in tpo]
    assert tpo[0]["rollouts"] == rfts[0]["rollouts"]  # the same SFT policy in round 1
    for t, m in zip(tpo, more, strict=True):
        assert t["update_steps"] == t["preference_items"] // 2 + t["preference_items"] % 2
        assert m["update_steps"] == t["update_steps"]
        assert m["history"] == [] or m["history"][-1]["steps"] == t["update_steps"]
        assert "rollouts" not in m
    keys = {(r["policy"], r["variant"], r["round"], r["split"]) for r in result.rows}
    for policy in ("tpo", "more_sft", "rejection_sampling"):
        assert {(policy, "task", r, "in-domain") for r in (1, 2)} <= keys
    assert ("sft", "-", 0, "in-domain") in keys
    assert result.report.order["policy"][:2] == ["sft", "tpo"]
    assert "more_sft" in result.report.order["policy"]
    # where the time went: every part of a made run is counted
    parts = result.summary["seconds_by_part"]
    assert set(parts) == {"demos", "rollouts", "update", "eval"} and min(parts.values()) > 0
    assert more[0]["seconds"]["rollouts"] == 0 and tpo[0]["seconds"]["rollouts"] > 0


def test_chunked_evaluation_runs_every_episode_with_fewer_envs():
    torch.manual_seed(0)
    config = _config(max_episode_steps=5)
    policy = grape.build_policy(config)
    pool = grape.make_pool(config)
    protocol = EvalProtocol(5, 100, greedy=True, chunk=2)
    chunked = evaluate(policy, pool, ["reach-v3"], protocol)
    assert len(pool.envs["reach-v3"]) == 2 and chunked["mean"]["episodes"] == 5
    whole = evaluate(policy, pool, ["reach-v3"], EvalProtocol(5, 100, greedy=True))
    pool.close()
    # greedy decoding draws nothing: chunking changes only how many envs run at once
    assert chunked == whole


def test_greedy_relabel_imitates_the_mode_at_the_visited_states():
    torch.manual_seed(0)
    config = _config(max_episode_steps=6)
    policy = grape.build_policy(config)
    pool = grape.make_pool(config)
    g = torch.Generator().manual_seed(0)
    (traj,) = rollout(policy, pool, "reach-v3", [1], False, 1.0, g)
    pool.close()
    relabelled = greedy_relabel(policy, traj)
    expected = policy.act(traj.state, [traj.instruction] * len(traj), greedy=True)
    np.testing.assert_array_equal(relabelled.actions, expected)
    assert relabelled.observations is traj.observations and not np.array_equal(
        relabelled.actions, traj.actions
    )
