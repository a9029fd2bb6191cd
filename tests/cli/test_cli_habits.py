"""Packaged configs by name from any folder, config-relative input paths, and the CLI's manners:
bare ``robopref`` is help, ``--version``, examples in every ``--help``, ``config show``, one-line
hints for flag-shaped overrides."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import robopref
from robopref.cli import build_parser, main
from robopref.config import (
    CONFIGS_DIR,
    ConfigError,
    InputPath,
    StrictModel,
    describe_config,
    load_config,
    packaged_configs,
    resolve_config_path,
)
from robopref.envs import CollectConfig
from robopref.methods.collect import LabelConfig

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_configs_live_in_the_package():
    assert CONFIGS_DIR == ROOT / "robopref" / "configs"
    names = packaged_configs()
    assert {"pearl/base", "pearl/demo", "rapl/tiny", "grape/cpu", "lm/tiny"} <= set(names)
    assert "bench/pearl-metaworld" in names and "collect/default" in names


@pytest.mark.parametrize(
    "name", ["pearl/base", "pearl/base.yaml", "configs/pearl/base.yaml", "./pearl/base"]
)
def test_a_name_resolves_to_the_packaged_config_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(name) == CONFIGS_DIR / "pearl" / "base.yaml"


def test_an_existing_path_wins_over_the_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pearl").mkdir()
    (tmp_path / "pearl" / "base.yaml").write_text("method: pearl\n")
    assert resolve_config_path("pearl/base.yaml") == Path("pearl/base.yaml")


def test_an_unknown_name_is_one_line_saying_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        resolve_config_path("pearl/bse")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "pearl" / "bse") in msg
    assert str(CONFIGS_DIR / "pearl" / "bse.yaml") in msg and "pearl/base" in msg
    assert main(["run", "pearl/bse"]) == 2


class _Files(StrictModel):
    data: InputPath
    optional: InputPath | None = None
    output: str = "out.h5"


class _Outer(StrictModel):
    files: _Files
    name: str = "x"


def test_relative_input_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    (cfg_dir / "c.yaml").write_text("files: {data: d/train.jsonl, optional: ../o.txt}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(_Outer, "cfgs/c.yaml")
    assert config.files.data == str(cfg_dir / "d" / "train.jsonl")
    assert config.files.optional == str(tmp_path / "o.txt")
    assert config.files.output == "out.h5"  # plain strings are left alone
    # a path given on the command line stays relative to the working directory
    config = load_config(_Outer, "cfgs/c.yaml", ["files.data=mine.jsonl"])
    assert config.files.data == "mine.jsonl" and config.files.optional == str(tmp_path / "o.txt")
    (cfg_dir / "abs.yaml").write_text(f"files: {{data: {tmp_path / 'a.jsonl'}}}\n")
    assert load_config(_Outer, cfg_dir / "abs.yaml").files.data == str(tmp_path / "a.jsonl")


def test_lm_config_by_absolute_path_runs_from_another_folder(tmp_path, monkeypatch, capsys):
    # used to fail with a 15-line LMDataError traceback: the data paths were cwd-relative
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    config = str(CONFIGS_DIR / "lm" / "tiny.yaml")
    assert main(["lm", "--config", config, "epochs=1", "progress=false", "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train_path"] == str(CONFIGS_DIR / "lm" / "data" / "counting_train.jsonl")


def test_bare_robopref_prints_help_and_version(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: robopref" in out and "config show pearl/base" in out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert (
        e.value.code == 0 and capsys.readouterr().out.strip() == f"robopref {robopref.__version__}"
    )


def test_every_subcommand_help_shows_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        if name == "label-ui":  # the labelling page prints its own help
            continue
        text = sub.format_help()
        assert "example:" in text and f"robopref {name}" in text.split("example:")[1], name


def test_a_flag_shaped_override_gets_a_one_line_hint(tmp_path, capsys):
    assert main(["label", str(tmp_path / "f.h5"), "--num_queries", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "usage:" not in err
    assert "did you mean num_queries=5?" in err
    assert main(["run", "pearl/demo", "--eval-episodes=3"]) == 2
    assert "did you mean eval_episodes=3?" in capsys.readouterr().err


def test_label_accepts_label_ui_spellings():
    from robopref.cli import _parse

    args = _parse(build_parser(), ["label", "f.h5", "--num-queries", "50", "--k", "3", "seed=2"])
    assert args.overrides == ["seed=2", "num_queries=50", "k=3"]


def test_config_show_prints_every_field_with_its_description(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "collect/default", "seed=3"]) == 0
    out = capsys.readouterr().out
    body = yaml.safe_load(out)  # the comments are YAML comments: it reads back
    assert body["seed"] == 3 and body["tasks"][0] == "button-press-v3"
    assert set(body) == set(CollectConfig.model_fields)
    desc = CollectConfig.model_fields["mismatch_noise"].description
    assert desc and f"# {desc.split()[0]}" in out

    assert main(["config", "show", "label/default"]) == 0  # the kind comes from the folder
    out = capsys.readouterr().out
    assert set(yaml.safe_load(out)) == set(LabelConfig.model_fields)

    assert main(["config", "show", "pearl/base"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["method"] == "pearl" and "\nsource:\n" in out

    assert main(["config", "show", "bench/rapl-metaworld"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["base"] == str(CONFIGS_DIR / "rapl/base.yaml")

    assert main(["config", "list"]) == 0
    assert "pearl/base" in capsys.readouterr().out.split()


def test_describe_config_puts_attribute_docstrings_above_keys():
    class Inner(StrictModel):
        lr: float = 1e-3
        """Learning rate."""

    class Outer(StrictModel):
        inner: Inner = Inner()
        tags: list[str] = ["a", "b"]
        """Free-form tags."""
        n: int = 1

    text = describe_config(Outer())
    assert text.splitlines() == [
        "inner:",
        "  # Learning rate.",
        "  lr: 0.001",
        "# Free-form tags.",
        "tags: [a, b]",
        "n: 1",
    ]


def test_config_show_by_name_from_another_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "robopref.cli", "config", "show", "rapl/tiny"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "method: rapl" in proc.stdout, proc.stderr
