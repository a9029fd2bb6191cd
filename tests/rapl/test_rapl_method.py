"""The ``rapl`` recipe end to end on tiny data."""

import re

import numpy as np
import pytest
from pydantic import ValidationError

from robopref.config import ConfigError, load_config
from robopref.methods.rapl import Config, run
from robopref.methods.rapl.rl import scene_demos


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


def _rl_rows(result):
    return next(t.rows for t in result.tables if t.title.startswith("RL on"))


def test_micro_run_writes_every_reward_row(tmp_path):
    res = run(_micro(), tmp_path)
    names = [(r["variant"], r["reward"], r["budget"]) for r in res.rows]
    assert names == [("pixels", "pixels", 0), ("unaligned", "unaligned", 0), ("rapl@6", "rapl", 6),
                     ("rlhf_state@6", "rlhf_state", 6), ("rlhf_embedding@6", "rlhf_embedding", 6),
                     ("gt", "gt", 0)]  # fmt: skip
    assert res.summary["frames_per_video"] == 3 and res.summary["image_shape"] == [16, 16, 3]
    s = res.summary
    assert s["num_train"] + s["num_test"] + s["num_demos"] == 11
    for r in res.rows:
        assert r["seed"] == 0
        assert 0.0 <= r["accuracy"] <= 1.0
        assert -1.0 <= r["spearman_step"] <= 1.0
    assert res.rows[-1]["spearman_step"] == 1.0  # the GT reward against itself
    rapl = res.rows[2]
    assert len(rapl["align_val_accuracy"]) == 3  # before + 2 epochs
    rl_rows = _rl_rows(res)
    assert [(r["reward"], r["budget"]) for r in rl_rows] == [
        ("rapl", 6), ("unaligned", 0), ("rlhf_state", 6), ("gt", 0)]  # fmt: skip
    for rl in rl_rows:
        assert 0.0 <= rl["success_rate"] <= 1.0 and rl["num_episodes"] == 1
        assert 0.0 <= rl["demo_success"] <= 1.0
        # 30 steps of 12-step episodes: 2 finished training episodes, GT terms logged
        assert 0.0 <= rl["train_success"] <= 1.0 and np.isfinite(rl["train_gt_return"])
    # RL success is carried on the matching reward rows (and a row of its own for gt)
    by_variant = {r["variant"]: r for r in res.rows}
    assert by_variant["rapl@6"]["success_rate"] == rl_rows[0]["success_rate"]
    assert by_variant["gt"]["success_rate"] == rl_rows[3]["success_rate"]
    assert "success_rate" not in by_variant["pixels"]
    assert {"rapl@6.pt", "unaligned.pt"} <= {f.name for f in (tmp_path / "encoders").iterdir()}
    # TensorBoard: SAC runs, RLHF losses and the evaluation metrics, all under tb/
    assert res.tensorboard == str(tmp_path / "tb")
    runs = sorted(d.name for d in (tmp_path / "tb").iterdir() if d.is_dir())
    assert runs == ["rlhf_embedding@6", "rlhf_state@6", "sac_gt_1", "sac_rapl_1",
                    "sac_rlhf_state_1", "sac_unaligned_1"]  # fmt: skip
    tags = _scalar_tags(tmp_path / "tb")
    assert {"align/train_loss/rapl@6", "eval/accuracy/rapl", "eval/spearman_step/pixels"} <= tags
    assert res.report.metrics == ["spearman_step", "spearman_episode", "accuracy"]
    assert res.report.order["variant"] == [r["variant"] for r in res.rows]


def _scalar_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_report_metrics_are_numeric_keys_of_every_row(tmp_path):
    """``bench``/``report`` aggregate ``report.metrics`` over the rows: each must be a number
    in every row, and every row must carry the grouping keys and a seed."""
    res = run(_micro(rl={"enabled": False}, seed=3), tmp_path)
    assert res.report.metrics and res.report.group_by == ["variant"]
    for r in res.rows:
        assert r["seed"] == 3 and r["variant"] in res.report.order["variant"]
        for m in res.report.metrics:
            assert isinstance(r[m], float) and not isinstance(r[m], bool), (r["variant"], m)
    assert set(res.report.chance) <= set(res.report.metrics)
    assert res.report.control in {r["variant"] for r in res.rows}
    assert res.report.chance["accuracy"] == 0.5


def test_a_rerun_reuses_every_stage_and_gives_the_same_rows(tmp_path, capsys):
    config = _micro(rl={"enabled": False})
    first = run(config, tmp_path)
    outputs = ["dataset.h5", "encoders/rapl@6.pt", "rlhf/state@6.pt", "rlhf/embedding@6.pt"]
    made = [(tmp_path / p).stat().st_mtime_ns for p in outputs]
    again = run(config, tmp_path)
    assert [(tmp_path / p).stat().st_mtime_ns for p in outputs] == made
    keys = ["variant", "spearman_step", "spearman_episode", "accuracy", "align_val_accuracy"]
    assert [[r.get(k) for k in keys] for r in again.rows] == [
        [r.get(k) for k in keys] for r in first.rows
    ]
    # another alignment setting: the encoders are made again, the data and RLHF rewards are not
    capsys.readouterr()
    other = run(config.model_copy(update={"align": config.align.model_copy(update={"lr": 0.01})}),
                tmp_path)  # fmt: skip
    err = capsys.readouterr().err
    assert "align[rapl@6]" in err and "making it again" in err
    assert "rlhf[state@6] ..." not in err and "collect[rapl] (" not in err
    assert other.rows[0] == {**first.rows[0], "seconds": other.rows[0]["seconds"]}


def test_scene_demos_show_one_solved_scene():
    cfg = _micro(task="reach-v3", collect=None, num_demos=2)
    videos, success, episodes = scene_demos(cfg, horizon=100)
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
    assert [r["buffer_transitions"] for r in _rl_rows(res)] == [54, 54, 54]
    res = run(_micro(rl={**rl, "demos_in_buffer": False, "rewards": ["gt"]}), tmp_path / "b")
    assert _rl_rows(res)[0]["buffer_transitions"] == 30


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_demos": 9}, "num_demos: expected <= collect.expert_episodes (4), found 9"),
        ({"bogus": 1}, "bogus"),
        ({"rl": {"enabled": True, "budget": 7}}, "rl.budget: expected one of budgets [6]"),
        ({"task": "reach-v3"}, "collect.tasks: expected ['reach-v3']"),
        ({"budgets": []}, "budgets"),
        ({"teacher": "nosuch"}, "unknown teacher 'nosuch'"),
        ({"query_k": 2, "align": {"anchor": "preferred"}}, "query_k: align.anchor 'preferred'"),
        # a pure config rule, once checked only after data, alignment and RLHF had run
        ({"rlhf": {"inputs": ["embedding"]}}, "rl.rewards: 'rlhf_state' needs 'state' in"),
    ],
)
def test_config_errors_are_found_before_any_work(override, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        _micro(**override)


def test_config_error_is_one_line_from_a_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: rapl\ntask: button-press-v3\nrl: {enabled: true}\n")
    with pytest.raises(ConfigError, match="'rlhf_state' needs 'state' in rlhf.inputs") as err:
        load_config(Config, path, ["rlhf.inputs=[embedding]"])
    assert "\n" not in str(err.value)


def test_a_teacher_is_a_preset_name_or_a_config():
    assert _micro(teacher="mistake").teacher.eps == 0.1
    assert _micro(teacher={"name": "mistake", "eps": 0.3}).teacher.eps == 0.3
    assert _micro().teacher.name == "oracle"


@pytest.mark.slow
def test_tiny_config_alignment_beats_unaligned(tmp_path):
    cfg = load_config(Config, "robopref/configs/rapl/tiny.yaml")
    res = run(cfg, tmp_path)
    rows = {r["variant"]: r for r in res.rows}
    assert rows["rapl@30"]["accuracy"] > rows["unaligned"]["accuracy"] + 0.2
    assert rows["rapl@30"]["spearman_episode"] > rows["unaligned"]["spearman_episode"]
    assert np.isfinite(rows["rlhf_state@30"]["spearman_step"])
