"""Teacher presets apply wherever a TeacherConfig is read (YAML, overrides, dicts) (issue 13)."""

import pytest

from robopref.config import ConfigError, load_config
from robopref.teachers import PRESETS, TeacherConfig, make_teacher


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_name_brings_its_settings(name):
    config = TeacherConfig.model_validate({"name": name})
    for key, value in PRESETS[name].items():
        assert getattr(config, key) == value
    assert config == make_teacher(name).config


def test_explicit_settings_win_over_the_preset(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: mistake\neps: 0.25\n")
    assert load_config(TeacherConfig, path).eps == 0.25
    assert load_config(TeacherConfig, path, ["name=stochastic"]).beta == 1.0
    assert load_config(TeacherConfig, None, ["name=regret", "beta=3"]).beta == 3.0
    assert TeacherConfig().name == "custom" and TeacherConfig().eps == 0.0


def test_unknown_teacher_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config(TeacherConfig, None, ["name=orcale"])
    msg = str(e.value)
    assert "command line override 'name=orcale'" in msg and "\n" not in msg
    for name in (*PRESETS, "custom"):
        assert name in msg
