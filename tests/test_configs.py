"""Every shipped config validates against the schema of the code that reads it."""

from pathlib import Path

import pytest

from robopref.bench.suite import cells, load_suite
from robopref.config import read_config_data, validate_config
from robopref.methods import get_method

CONFIGS = Path(__file__).resolve().parents[1] / "robopref" / "configs"
RECIPES = sorted(p for d in ("pearl", "rapl", "grape", "lm") for p in (CONFIGS / d).glob("*.yaml"))
SUITES = sorted((CONFIGS / "bench").glob("*.yaml"))


def _validate(path: Path, overrides: list[str]) -> None:
    raw = read_config_data(str(path), overrides)
    module = get_method(raw["method"])
    validate_config(module.Config, raw, str(path))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_config_validates(path):
    _validate(path, [])


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_every_suite_cell_validates(path):
    suite = load_suite(path)
    ids = []
    for cell_id, _, overrides in cells(suite):
        _validate(Path(suite.base), overrides)
        ids.append(cell_id)
    assert len(ids) == len(set(ids)) >= 2


def test_a_stale_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "rapl" / "tiny.yaml").read_text() + "\nnot_a_field: 1\n")
    with pytest.raises(Exception, match="not_a_field"):
        _validate(bad, [])
