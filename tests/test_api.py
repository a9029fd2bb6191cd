"""The top-level API: every exported name resolves, lazily (``import robopref`` stays light)."""

import importlib
import subprocess
import sys

import pytest

import robopref


@pytest.mark.parametrize("name", robopref.__all__)
def test_every_exported_name_resolves(name):
    value = getattr(robopref, name)
    assert value is not None
    if name != "__version__" and not isinstance(value, type(robopref)):
        module = importlib.import_module(value.__module__)
        assert name in robopref.__all__ and module.__name__.startswith("robopref.")


def test_exports_are_the_packages_own_objects():
    from robopref.data import load_dataset
    from robopref.envs import evaluate_on_task
    from robopref.methods.run import run_config

    assert robopref.load_dataset is load_dataset and robopref.run_config is run_config
    assert robopref.evaluate_on_task is evaluate_on_task
    assert robopref.losses is importlib.import_module("robopref.losses")
    assert robopref.__version__.count(".") == 2
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        robopref.nope  # noqa: B018


def test_import_robopref_loads_neither_torch_nor_mujoco():
    code = (
        "import sys, robopref; "
        "print(sorted(m for m in ('torch', 'mujoco', 'metaworld', 'numba') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
