"""Running a config: validated before any work, no stale cached data, failed runs tidy up."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from robopref.config import ConfigError
from robopref.envs import CollectConfig
from robopref.methods import pearl
from robopref.methods.common import cached, checkpoint_dir, config_sha256, sidecar_path
from robopref.methods.run import FAILED_FILE, run_config


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "robopref.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cached_keys_files_by_the_config_that_made_them(tmp_path, capsys):
    path = tmp_path / "data.json"
    made = []

    def make(value):
        def _make():
            made.append(value)
            return value

        return _make

    def save(v, p):
        p.write_text(json.dumps(v))

    def load(p):
        return json.loads(p.read_text())

    a = {"tasks": ["a"], "n": 1}
    b = {"tasks": ["b"], "n": 1}
    assert cached(path, a, make("A"), save, load) == "A"
    assert cached(path, a, make("A2"), save, load) == "A"  # same config: reused
    assert made == ["A"]
    assert cached(path, b, make("B"), save, load) == "B"  # another config: made again
    assert made == ["A", "B"] and load(path) == "B"
    err = capsys.readouterr().err
    assert "made by another config (tasks: ['a'] -> ['b'])" in err
    record = json.loads(sidecar_path(path).read_text())
    assert record == {"config": b, "sha256": config_sha256(b)}
    # key order does not matter, values do
    assert config_sha256({"n": 1, "tasks": ["b"]}) == config_sha256(b)
    # a file without its record (an older run, or put there by hand) is never trusted
    sidecar_path(path).unlink()
    assert cached(path, b, make("B2"), save, load) == "B2"
    assert "no record of the config" in capsys.readouterr().err


def test_checkpoint_dir_is_emptied_when_another_config_made_it(tmp_path, capsys):
    ckpt = tmp_path / "ckpt" / "iql-pearl"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_text("from an older robopref")
    a, b = {"tasks": ["button-press-v3"], "lr": 1e-3}, {"tasks": ["reach-v3"], "lr": 1e-3}
    assert checkpoint_dir(ckpt, a) == ckpt and list(ckpt.iterdir()) == []  # no record: emptied
    (ckpt / "checkpoint.pt").write_text("step 500 of a")
    checkpoint_dir(ckpt, a)  # the same config: a killed run resumes from it
    assert (ckpt / "checkpoint.pt").read_text() == "step 500 of a"
    checkpoint_dir(ckpt, b)  # other data: it would resume a policy of another task
    assert list(ckpt.iterdir()) == []
    assert "tasks: ['button-press-v3'] -> ['reach-v3']" in capsys.readouterr().err
    assert json.loads(sidecar_path(ckpt).read_text())["config"] == b


def _collect(task: str, **kw) -> CollectConfig:
    return CollectConfig(
        tasks=[task],
        expert_episodes=1,
        noisy_episodes=0,
        goal_mismatch_episodes=0,
        random_episodes=0,
        other_task_episodes=0,
        max_episode_steps=5,
        **kw,
    )


def test_pearl_never_reuses_data_of_another_config(tmp_path, capsys):
    """The issue's reproduction: a run into the folder of an earlier run with other tasks must
    collect the new tasks (it used to load the old source.h5 whatever the config said)."""
    cache = tmp_path / "source.h5"
    first = pearl._dataset(None, _collect("reach-v3"), cache)
    assert first.tasks == ["reach-v3"]
    second = pearl._dataset(None, _collect("reach-wall-v3"), cache)
    assert second.tasks == ["reach-wall-v3"]
    assert "source.h5 was made by another config" in capsys.readouterr().err
    stamp = cache.stat().st_mtime_ns
    # the same data with more worker processes: reused, not collected again
    again = pearl._dataset(None, _collect("reach-wall-v3", num_workers=2), cache)
    assert again.tasks == ["reach-wall-v3"] and cache.stat().st_mtime_ns == stamp


def test_run_validates_the_whole_config_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = _cli("run", "pearl/demo", "queries.source_queries=-5", "--out", str(out))
    line = _one_line_error(proc)
    assert "override 'queries.source_queries=-5'" in line and "queries.source_queries" in line
    assert "greater than or equal to 1" in line and "found -5" in line
    assert not out.exists()  # nothing collected, no folder with only config.yaml


def test_run_names_the_bad_override_or_file(tmp_path, capsys):
    from robopref.cli import main

    out = tmp_path / "run"
    assert main(["run", "pearl/demo", "iql.steps=[1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "override 'iql.steps=[1'" in err and "YAML" in err and "\n" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: pearl\nsource: {tasks: [reach-v3]\n")
    assert main(["run", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"config file '{bad}'" in err and "YAML" in err and "line 3" in err
    assert "\n" not in err
    assert main(["run", "pearl/demo", "eval_episodes=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "field 'eval_episodes'" in err and "found 0" in err and "\n" not in err
    assert not out.exists()


FAILING = textwrap.dedent(
    """
    from pathlib import Path
    from robopref.config import StrictModel
    from robopref.methods.common import start_run

    class Config(StrictModel):
        method: str = "failing_recipe"
        partial: bool = False

    def run(config, out_dir):
        out_dir, _ = start_run(config, out_dir)
        if config.partial:
            (out_dir / "source.h5").write_text("collected")
        raise RuntimeError("out of memory\\nsecond line")
    """
)


def test_failed_run_leaves_no_folder_with_only_its_config(tmp_path, monkeypatch):
    (tmp_path / "failing_recipe.py").write_text(FAILING)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text("method: failing_recipe\n")
    try:
        out = tmp_path / "runs" / "a"
        with pytest.raises(RuntimeError, match="out of memory"):
            run_config(str(config), [], out, announce=False)
        assert not out.exists()
        # with outputs a rerun can resume from, the folder stays and says why it failed
        with pytest.raises(RuntimeError):
            run_config(str(config), ["partial=true"], out, announce=False)
        assert (out / "source.h5").exists()
        assert (out / FAILED_FILE).read_text().strip().endswith("RuntimeError: out of memory")
        # a folder the user made is never removed
        mine = tmp_path / "mine"
        mine.mkdir()
        with pytest.raises(RuntimeError):
            run_config(str(config), [], mine, announce=False)
        assert (mine / "config.yaml").exists() and (mine / FAILED_FILE).exists()
        with pytest.raises(ConfigError, match="field 'partial'"):
            run_config(str(config), ["partial=maybe"], tmp_path / "b", announce=False)
        assert not (tmp_path / "b").exists()
    finally:
        sys.modules.pop("failing_recipe", None)


def test_bench_does_not_import_the_command_line():
    code = "import sys, robopref.bench.suite; print('robopref.cli' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert out.stdout.strip() == "False", out.stderr
