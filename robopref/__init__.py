"""robopref: learning from preferences in robotics.

The main entry points, importable from the top level::

    import robopref

    dataset = robopref.load_dataset("data/mw.h5")
    teacher = robopref.make_teacher("mistake")
    loss = robopref.losses.get_loss("bt")
    result = robopref.run_config("pearl/demo", ["seed=1"], out=None)  # a RunResult

Names load on first use, so ``import robopref`` stays fast and imports neither torch nor MuJoCo.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it; a module's own name maps to the module itself
_EXPORTS: dict[str, str] = {
    # data: trajectories, preference queries, files
    "Trajectory": "robopref.data",
    "TrajectoryDataset": "robopref.data",
    "PreferenceQueries": "robopref.data",
    "DataValidationError": "robopref.data",
    "load_dataset": "robopref.data",
    "save_dataset": "robopref.data",
    "sample_queries": "robopref.data",
    "import_dataset": "robopref.data",
    # simulated teachers
    "TeacherConfig": "robopref.teachers",
    "make_teacher": "robopref.teachers",
    "label_queries": "robopref.teachers",
    # the loss core and optimal transport
    "losses": "robopref.losses",
    "get_loss": "robopref.losses",
    "ot": "robopref.ot",
    "sinkhorn": "robopref.ot",
    "gromov_wasserstein": "robopref.ot",
    "fused_gromov_wasserstein": "robopref.ot",
    "entropic_gromov_wasserstein": "robopref.ot",
    "entropic_fused_gromov_wasserstein": "robopref.ot",
    # reward models and their trainer
    "RewardModel": "robopref.rewards",
    "MLPReward": "robopref.rewards",
    "EnsembleReward": "robopref.rewards",
    "GaussianReward": "robopref.rewards",
    "RewardTrainer": "robopref.rewards",
    "RewardTrainerConfig": "robopref.rewards",
    "save_reward": "robopref.rewards",
    "load_reward": "robopref.rewards",
    # cross-task preference transfer
    "TransferConfig": "robopref.transfer",
    "transfer_labels": "robopref.transfer",
    # simulation
    "CollectConfig": "robopref.envs",
    "collect_dataset": "robopref.envs",
    "make_env": "robopref.envs",
    "evaluate_on_task": "robopref.envs",
    # offline policies
    "PolicyConfig": "robopref.policies.offline",
    "make_learner": "robopref.policies.offline",
    # configs and recipes
    "ConfigError": "robopref.config",
    "load_config": "robopref.config",
    "resolve_config_path": "robopref.config",
    "run_config": "robopref.methods.run",
    "get_method": "robopref.methods",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'robopref' has no attribute '{name}'")
    module = importlib.import_module(module_name)
    value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
