"""Running a config: validated before any work, no stale cached data, failed runs tidy up."""

import os
import subprocess
import sys
import textwrap

import pytest

from robopref.config import ConfigError
from robopref.envs import CollectConfig
from robopref.methods import pearl
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
    first, _ = pearl.data_stage("source", _collect("reach-v3"), None, tmp_path)
    assert first.tasks == ["reach-v3"]
    second, _ = pearl.data_stage("source", _collect("reach-wall-v3"), None, tmp_path)
    assert second.tasks == ["reach-wall-v3"]
    assert "collect[source]" in capsys.readouterr().err  # says why it collects again
    stamp = cache.stat().st_mtime_ns
    # the same data with more worker processes: reused, not collected again
    again, _ = pearl.data_stage("source", _collect("reach-wall-v3", num_workers=2), None, tmp_path)
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
