"""The ``rapl`` recipe end to end on tiny data."""

import json

import numpy as np
import pytest

from robopref.config import load_config
from robopref.methods.rapl import Config, _scene_demos, run


def _micro(**over):
    data = {
        "task": "button-press-v3",
        "collect": {"tasks": ["button-press-v3"], "expert_episodes": 4, "noisy_episodes": 2,
                    "noise_levels": [1.0], "goal_mismatch_episodes": 2, "random_episodes": 3,
                    "other_task_episodes": 0, "max_episode_steps": 12},
        "render": {"width": 16, "height": 16, "frame_stride": 4},
        "num_demos": 2,
        "budgets": [6],
        "eval_queries": 10,
        "encoder": {"cnn_width": 4, "out_dim": 8},
        "align": {"epochs": 2, "batch_size": 6},
        "rlhf": {"trainer": {"epochs": 5, "quiet": True}},
        "rl": {"enabled": True, "rewards": ["rapl", "unaligned", "rlhf_state", "gt"],
               "total_steps": 30, "learning_starts": 10, "eval_episodes": 1},
        "device": "cpu",
    }  # fmt: skip
    data.update(over)
    return Config.model_validate(data)


def test_micro_run_writes_every_reward_row(tmp_path):
    res = run(_micro(), tmp_path)
    names = [(r["variant"], r["budget"]) for r in res["rows"]]
    assert names == [("pixels", 0), ("unaligned", 0), ("rapl@6", 6), ("rlhf_state@6", 6),
                     ("rlhf_embedding@6", 6), ("gt", 0)]  # fmt: skip
    assert res["frames_per_video"] == 3 and res["image_shape"] == [16, 16, 3]
    assert res["num_train"] + res["num_test"] + res["num_demos"] == 11
    for r in res["rows"][:-1]:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert -1.0 <= r["spearman_step"] <= 1.0
    rapl = res["rows"][2]
    assert len(rapl["align_val_accuracy"]) == 3  # before + 2 epochs
    assert [(r["reward"], r["budget"]) for r in res["rl"]] == [
        ("rapl", 6), ("unaligned", 0), ("rlhf_state", 6), ("gt", 0)]  # fmt: skip
    for rl in res["rl"]:
        assert 0.0 <= rl["success_rate"] <= 1.0 and rl["num_episodes"] == 1
        assert 0.0 <= rl["demo_success"] <= 1.0
        # 30 steps of 12-step episodes: 2 finished training episodes, GT terms logged
        assert 0.0 <= rl["train_success"] <= 1.0 and np.isfinite(rl["train_gt_return"])
    # RL success is carried on the matching reward rows (and a row of its own for gt)
    by_variant = {r["variant"]: r for r in res["rows"]}
    assert by_variant["rapl@6"]["success_rate"] == res["rl"][0]["success_rate"]
    assert by_variant["gt"]["success_rate"] == res["rl"][3]["success_rate"]
    assert sorted(f.name for f in (tmp_path / "encoders").iterdir()) == [
        "rapl@6.pt",
        "unaligned.pt",
    ]
    runs = sorted(d.name for d in (tmp_path / "tensorboard").iterdir())
    assert runs == ["sac_gt_1", "sac_rapl_1", "sac_rlhf_state_1", "sac_unaligned_1"]
    assert json.loads((tmp_path / "results.json").read_text())["task"] == "button-press-v3"
    assert "| rapl@6 | 6 |" in (tmp_path / "results.md").read_text()


def test_scene_demos_show_one_solved_scene():
    cfg = _micro(task="reach-v3", collect=None, num_demos=2)
    videos, success, episodes = _scene_demos(cfg, horizon=100)
    assert [len(ep.actions) for ep in episodes] == [100, 100]
    assert success == 1.0  # the scripted expert solves reach within 100 steps, with noise 0.1 too
    assert [v.shape for v in videos] == [(25, 16, 16, 3)] * 2
    np.testing.assert_array_equal(videos[0][0], videos[1][0])  # same scene
    assert np.abs(videos[0][-1].astype(int) - videos[1][-1]).sum() > 0  # different noise


def test_demos_in_buffer_adds_the_scene_demos(tmp_path):
    rl = {"enabled": True, "rewards": ["rapl", "rlhf_state", "gt"], "total_steps": 30,
          "learning_starts": 10, "demos_in_buffer": True}  # fmt: skip
    res = run(_micro(rl=rl), tmp_path)
    # 30 environment steps + 2 demos of 12 steps each, whatever the reward
    assert [r["buffer_transitions"] for r in res["rl"]] == [54, 54, 54]
    res = run(_micro(rl={**rl, "demos_in_buffer": False, "rewards": ["gt"]}), tmp_path / "b")
    assert res["rl"][0]["buffer_transitions"] == 30


def test_config_errors():
    with pytest.raises(ValueError, match="num_demos"):
        run(_micro(num_demos=9), "/tmp/unused-rapl")
    with pytest.raises(ValueError):
        Config.model_validate({"task": "button-press-v3", "bogus": 1})
    with pytest.raises(ValueError, match="rl.budget"):
        _micro(rl={"enabled": True, "budget": 7})
    with pytest.raises(ValueError, match="collect.tasks"):
        _micro(task="reach-v3")


@pytest.mark.slow
def test_tiny_config_alignment_beats_unaligned(tmp_path):
    cfg = load_config(Config, "robopref/configs/rapl/tiny.yaml")
    res = run(cfg, tmp_path)
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["rapl@30"]["accuracy"] > rows["unaligned"]["accuracy"] + 0.2
    assert rows["rapl@30"]["spearman_episode"] > rows["unaligned"]["spearman_episode"]
    assert np.isfinite(rows["rlhf_state@30"]["spearman_step"])
