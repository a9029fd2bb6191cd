"""The GRAPE recipe: contact counting, rollouts, config validation and (slow) the end-to-end loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from robopref.config import ConfigError, load_config
from robopref.methods import grape
from robopref.methods.result import print_result
from robopref.policies.vla import CollisionCounter, rollout, score_components


def _config(**overrides):
    base = {
        "tasks": ["reach-v3"],
        "task_specs": {
            "reach-v3": {"stages": [{"name": "reach", "a": "hand", "b": "goal", "threshold": 0.05}]}
        },
        "max_episode_steps": 20,
        "model": {"hidden_size": 32, "n_layers": 1},
        "num_threads": 1,
        "tensorboard": False,
        "progress": False,
    }
    base.update(overrides)
    return grape.Config.model_validate(base)


def test_collision_counter_counts_robot_contacts_with_non_targets():
    from robopref.envs import make_env

    env = make_env("button-press-v3", seed=0, max_episode_steps=60)
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    count_all = CollisionCounter(model, [], "button-press-v3")
    count_safe = CollisionCounter(model, ["box"], "button-press-v3")  # box + children
    touched = 0
    for _ in range(60):  # drive the hand down into the table, then forward into the button box
        env.step(np.array([0.0, 0.3, -1.0, 0.0], dtype=np.float32))
        n_all, n_safe = count_all(data), count_safe(data)
        assert 0 <= n_safe <= n_all
        touched += n_all
    assert touched > 0
    with pytest.raises(ValueError, match="unknown body 'nope'"):
        CollisionCounter(model, ["nope"], "button-press-v3")
    env.close()


def test_rollout_records_costs_and_retokenises_exactly():
    torch.set_num_threads(1)
    config = _config()
    policy = grape.build_policy(config)
    pool = grape.make_pool(config)
    trajs = rollout(
        policy, pool, "reach-v3", [3, 4], greedy=False, generator=torch.Generator().manual_seed(0)
    )
    pool.close()
    assert all(len(t) == 20 or (t.success and t.successes[-1]) for t in trajs)
    for t in trajs:
        assert t.instruction == "reach the goal position" and t.state.shape == (len(t), 39)
        assert len(t.metadata["stage_costs"]) == 1 and t.metadata["collisions"] >= 0
        tok = policy.action_tokenizer
        np.testing.assert_array_equal(tok.decode(tok.encode(t.actions)), t.actions)
    comps = score_components(policy, trajs, 20, 0.1)
    assert set(comps) == {"success", "stages", "logp", "length", "collisions", "action"}
    assert (
        (comps["logp"] < 0).all() and (comps["stages"] > 0).all() and (comps["stages"] <= 1).all()
    )


def test_config_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="reach-v3.stages"):
        _config(task_specs={})
    path = tmp_path / "bad.yaml"
    path.write_text("method: grape\ntasks: [reach-v3]\ntpo: {pairs: some}\n")
    with pytest.raises(ConfigError, match="pairs"):
        load_config(grape.Config, path)
    cfg = load_config(grape.Config, "robopref/configs/grape/tiny.yaml")
    assert cfg.method == "grape" and cfg.tpo.loss == "dpo"


def _checkpoint_times(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*.pt")}


def test_rerun_resumes_every_stage_and_a_tpo_change_remakes_the_rounds_only(tmp_path):
    torch.set_num_threads(1)
    config = _config(
        max_episode_steps=10,
        model={"hidden_size": 16, "n_layers": 1},
        sft={"demos_per_task": 2, "epochs": 1, "successful_only": False},
        tpo={"rounds": 2, "rollouts_per_task": 2, "epochs": 1},
        eval={"episodes_per_task": 1},
    )
    first = grape.run(config, tmp_path)
    ckpt = tmp_path / "checkpoints"
    made = _checkpoint_times(ckpt)
    assert set(made) == {Path("sft.pt"), Path("task/round_00.pt"), Path("task/round_01.pt")}
    again = grape.run(config, tmp_path)
    assert _checkpoint_times(ckpt) == made  # nothing made again
    assert again.rows == first.rows and again.tables == first.tables
    # another TPO beta: the SFT checkpoint is reused, both rounds (made by the old one) are not
    changed = config.model_copy(update={"tpo": config.tpo.model_copy(update={"beta": 0.5})})
    grape.run(changed, tmp_path)
    now = _checkpoint_times(ckpt)
    assert now[Path("sft.pt")] == made[Path("sft.pt")]
    assert all(now[p] != made[p] for p in made if p.name.startswith("round"))
    record = json.loads((ckpt / "task" / "round_01.pt.config.json").read_text())
    assert record["config"]["tpo"]["beta"] == 0.5
    # no resume: every stage is made again
    grape.run(changed.model_copy(update={"resume": False}), tmp_path)
    assert all(t != now[p] for p, t in _checkpoint_times(ckpt).items())


@pytest.mark.slow
def test_grape_end_to_end(tmp_path):
    config = _config(
        held_out_tasks=["reach-wall-v3"],
        sft={"demos_per_task": 4, "epochs": 5, "batch_size": 128, "successful_only": False},
        tpo={"rounds": 2, "rollouts_per_task": 4, "epochs": 1, "batch_size": 4},
        eval={"episodes_per_task": 2},
        variants={"efficiency": {"length": 2.0}},
        baselines=["rejection_sampling", "step_dpo"],
        tensorboard=True,
    )
    result = grape.run(config, tmp_path)
    table = result.tables[0].rows
    assert [(row["policy"], row["variant"], row["round"]) for row in table] == [
        ("sft", "-", 0),
        ("tpo", "task", 1),
        ("tpo", "task", 2),
        ("tpo", "efficiency", 1),
        ("tpo", "efficiency", 2),
        ("rejection_sampling", "task", 1),
        ("rejection_sampling", "task", 2),
        ("step_dpo", "task", 1),
        ("step_dpo", "task", 2),
    ]
    # one row per (policy, variant, round, split), the fields of docs/results/grape.jsonl
    assert len(result.rows) == 2 * len(table)
    assert [r["split"] for r in result.rows[:2]] == ["in-domain", "held-out"]
    fields = set(json.loads(open("docs/results/grape.jsonl").readline())) - {"config", "obs_mode"}
    assert all(set(r) == fields for r in result.rows)
    assert result.rows[0]["episodes"] == 2 and result.rows[0]["policy"] == "sft"
    assert all(0 <= r["success"] <= 1 and r["seed"] == 0 for r in result.rows)
    assert result.report.group_by == ["policy", "variant", "round", "split"]
    assert result.report.order["variant"] == ["-", "task", "efficiency"]
    ckpt = tmp_path / "checkpoints"
    infos = {
        name: json.loads((ckpt / name / "round_00.json").read_text())
        for name in ("task", "rejection_sampling-task", "step_dpo-task")
    }
    # the baselines see TPO's round-1 rollouts (same seeds and sampling stream, same SFT policy)
    assert len({json.dumps(i["rollouts"], sort_keys=True) for i in infos.values()}) == 1
    assert all(i["preference_items"] > 0 for i in infos.values())
    assert (ckpt / "efficiency" / "round_01.pt").exists()
    change = result.summary["change_vs_sft"]["tpo/task"]
    assert change["in_domain_success_pp"] == pytest.approx(
        100 * (table[2]["in_success"] - table[0]["in_success"])
    )
    assert result.tensorboard == str(tmp_path / "tb") and any((tmp_path / "tb").iterdir())
    # the printed tables fit 100 columns
    result.save(tmp_path)
    console = Console(width=100, record=True, force_terminal=False)
    print_result(result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100 and "(1/2)" not in text
    assert grape.collect_rows([tmp_path], config="x")[0] == {**result.rows[0], "config": "x"}


@pytest.mark.slow
def test_image_mode_rollout_renders_and_scores(monkeypatch):
    # CPU rendering through OSMesa is slow (~0.1-0.3 s per 32x32 frame): 2 short episodes only.
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    torch.set_num_threads(1)
    config = _config(
        max_episode_steps=5,
        model={"hidden_size": 32, "n_layers": 1, "obs_mode": "image+state", "image_size": 32},
    )
    policy = grape.build_policy(config)
    pool = grape.make_pool(config)
    trajs = rollout(policy, pool, "reach-v3", [0, 1], greedy=True)
    pool.close()
    for t in trajs:
        assert t.observations["image"].shape == (5, 32, 32, 3)
        assert t.observations["image"].dtype == np.uint8 and t.observations["image"].std() > 0
    comps = score_components(policy, trajs, 5, 0.1)
    assert np.isfinite(comps["logp"]).all() and (comps["logp"] < 0).all()
