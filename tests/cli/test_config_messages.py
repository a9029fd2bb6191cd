"""Config errors are one line naming the field and where its value came from (issue 13)."""

from pathlib import Path

import pytest

from robopref.config import ConfigError, load_config
from robopref.methods.collect import LabelConfig

DEFAULT = Path(__file__).resolve().parents[2] / "robopref" / "configs" / "label" / "default.yaml"


def _error(path, overrides) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(LabelConfig, path, overrides)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors_name_the_override_or_the_file(tmp_path):
    cfg = tmp_path / "l.yaml"
    cfg.write_text("num_queries: 10\nk: 1\n")
    msg = _error(cfg, ["seed=-1"])
    assert f"config '{cfg}': field 'k': Input should be greater than or equal to 2, found 1" in msg
    assert "command line override 'seed=-1': field 'seed'" in msg
    # the last override of a key is the one that counts
    msg = _error(cfg, ["k=3", "k=0"])
    assert "command line override 'k=0'" in msg and "'k=3'" not in msg
    # a section replaced by a scalar names the override of the section
    assert "command line override 'teacher=5'" in _error(None, ["teacher=5"])
    msg = _error(None, ["teacher.nosuch=1"])
    assert "unknown key 'teacher.nosuch' (expected one of: beta, eps," in msg


def test_cross_field_limit_and_more_than_three_problems(tmp_path):
    msg = _error(None, ["num_queries=1000000", "segment_length=1000"])
    assert "2000000000 segment steps to score, expected at most 50000000" in msg
    msg = _error(None, ["k=0", "seed=-1", "budget=0", "num_queries=0", "segment_length=0"])
    assert msg.count("command line override") == 3 and msg.endswith("and 2 more problem(s)")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("k=[1,", "command line override 'k=[1,': the value is not valid YAML"),
        ("a..b=1", "expected a dotted key like a.b"),
        ("nokey", "expected the form key.sub=value"),
        ("seed.x=1", "'seed' is not a section"),
    ],
)
def test_malformed_overrides(override, needle):
    assert needle in _error(DEFAULT, [override])


def test_bad_config_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert "expected a mapping at the top level, found list" in _error(tmp_path / "list.yaml", [])
    (tmp_path / "tab.yaml").write_text("a:\n\tb: 1\n")
    assert "YAML syntax error at line 2, column 1" in _error(tmp_path / "tab.yaml", [])
    assert "expected a YAML file, found a directory" in _error(tmp_path, [])
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert "expected UTF-8 text" in _error(tmp_path / "bin.yaml", [])
