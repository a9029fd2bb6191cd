"""Recipe ``grape``: GRAPE (trajectory-wise preference alignment) of a tokenised-action policy on
Meta-World. ``config`` holds the typed config, ``recipe`` the run (SFT, then rounds per learner
and cost variant, each evaluated), ``results`` its rows and tables and the cross-run helpers."""

from robopref.methods.grape.config import Config, GrapeConfig
from robopref.methods.grape.recipe import build_policy, make_pool, run
from robopref.methods.grape.results import collect_rows, pooled, result_rows

__all__ = [
    "Config",
    "GrapeConfig",
    "build_policy",
    "collect_rows",
    "make_pool",
    "pooled",
    "result_rows",
    "run",
]
