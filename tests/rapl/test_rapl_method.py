"""The ``rapl`` recipe end to end on tiny data."""

import json

import numpy as np
import pytest

from robopref.config import load_config
from robopref.methods.rapl import Config, run


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
        "rl": {"enabled": True, "rewards": ["rapl"], "total_steps": 30, "learning_starts": 10,
               "eval_episodes": 1},
        "device": "cpu",
    }  # fmt: skip
    data.update(over)
    return Config.model_validate(data)


def test_micro_run_writes_every_reward_row(tmp_path):
    res = run(_micro(), tmp_path)
    names = [(r["reward"], r["budget"]) for r in res["rows"]]
    assert names == [("pixels", 0), ("unaligned", 0), ("rapl", 6), ("rlhf_state", 6),
                     ("rlhf_embedding", 6)]  # fmt: skip
    assert res["frames_per_video"] == 3 and res["image_shape"] == [16, 16, 3]
    assert res["num_train"] + res["num_test"] + res["num_demos"] == 11
    for r in res["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert -1.0 <= r["spearman_step"] <= 1.0
    rapl = res["rows"][2]
    assert len(rapl["align_val_accuracy"]) == 3  # before + 2 epochs
    (rl,) = res["rl"]
    assert rl["reward"] == "rapl" and 0.0 <= rl["success_rate"] <= 1.0 and rl["num_episodes"] == 1
    assert json.loads((tmp_path / "results.json").read_text())["task"] == "button-press-v3"
    assert "| rapl | 6 |" in (tmp_path / "results.md").read_text()


def test_config_errors():
    with pytest.raises(ValueError, match="num_demos"):
        run(_micro(num_demos=9), "/tmp/unused-rapl")
    with pytest.raises(ValueError):
        Config.model_validate({"task": "button-press-v3", "bogus": 1})
    with pytest.raises(ValueError, match="collect.tasks"):
        _micro(task="reach-v3")


@pytest.mark.slow
def test_tiny_config_alignment_beats_unaligned(tmp_path):
    cfg = load_config(Config, "configs/rapl/tiny.yaml")
    res = run(cfg, tmp_path)
    rows = {(r["reward"], r["budget"]): r for r in res["rows"]}
    assert rows[("rapl", 30)]["accuracy"] > rows[("unaligned", 0)]["accuracy"] + 0.2
    assert rows[("rapl", 30)]["spearman_episode"] > rows[("unaligned", 0)]["spearman_episode"]
    assert np.isfinite(rows[("rlhf_state", 30)]["spearman_step"])
