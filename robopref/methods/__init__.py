"""End-to-end recipes. Each recipe module exposes a typed ``Config`` and ``run(config, out_dir)``.

A YAML config names its recipe with a top-level ``method:`` key; :func:`get_method` imports the
module lazily so that ``robopref info`` does not pay for torch or MuJoCo start-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS: dict[str, str] = {
    "collect": "robopref.methods.collect",
    "pearl": "robopref.methods.pearl",
    "lm": "robopref.methods.lm",
    "rapl": "robopref.methods.rapl",
    "grape": "robopref.methods.grape",
    "grape_offline": "robopref.methods.grape.offline",
    "train-reward": "robopref.methods.own_data.train_reward",
    "relabel": "robopref.methods.own_data.relabel",
    "train-policy": "robopref.methods.own_data.train_policy",
}


def get_method(name: str) -> ModuleType:
    """Return the recipe module for ``name``: one of :data:`METHODS`, or the import path of a
    user's own module that defines ``Config`` and ``run`` (e.g. ``method: my_lab.recipes.sweep``)."""
    if name in METHODS:
        return importlib.import_module(METHODS[name])
    module = None
    # a YAML value can be a number or a list; relative names ('.x') need a package
    if isinstance(name, str) and name and not name.startswith("."):
        try:
            module = importlib.import_module(name)
        except ImportError:
            pass
    if module is None or not (hasattr(module, "Config") and hasattr(module, "run")):
        raise ValueError(
            f"unknown method '{name}': expected one of {sorted(METHODS)} "
            "or an importable module defining Config and run"
        )
    return module
