"""The command line: collect 3 Meta-World tasks, label them, describe the file; config errors."""

import json

from robopref.cli import main
from robopref.data import load_dataset

TASKS = "[button-press-v3,drawer-open-v3,window-open-v3]"
SMALL = [
    f"tasks={TASKS}",
    "expert_episodes=1",
    "noisy_episodes=1",
    "noise_levels=[0.5]",
    "goal_mismatch_episodes=1",
    "random_episodes=1",
    "other_task_episodes=1",
    "max_episode_steps=40",
]


def test_collect_label_info(tmp_path, capsys):
    path = tmp_path / "mw.h5"
    assert main(["collect", "--out", str(path), *SMALL]) == 0
    dataset = load_dataset(path)
    assert dataset.tasks == ["button-press-v3", "drawer-open-v3", "window-open-v3"]
    assert len(dataset) == 3 * 5 and all(len(t) == 40 for t in dataset)

    args = ["label", str(path), "teacher.name=mistake", "teacher.eps=0.1", "num_queries=200"]
    assert main([*args, "segment_length=10"]) == 0
    queries = load_dataset(path).queries
    assert queries.num_queries == 200 and queries.k == 2 and queries.label_kind == "graded"
    assert queries.metadata or queries.teacher  # who labelled is recorded

    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    text = json.dumps(summary)
    for task in ("button-press-v3", "drawer-open-v3", "window-open-v3"):
        assert task in text
    assert "200" in text  # the label count


def test_bad_override_and_missing_file_are_clear_errors(tmp_path, capsys):
    assert main(["collect", "--out", str(tmp_path / "x.h5"), "tasks=[no-such-task-v3]"]) == 2
    assert "no-such-task-v3" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    assert main(["collect", "--out", str(tmp_path / "x.h5"), "not_a_field=3"]) == 2
    assert "not_a_field" in capsys.readouterr().err


def test_unknown_method_is_a_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("method: no_such_recipe\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "field 'method'" in err and "no_such_recipe" in err
    assert "Traceback" not in err
