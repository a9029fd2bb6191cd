"""Own robot data to a policy, one command per step (``robopref train-reward``, ``score``,
``relabel``, ``train-policy``).

Each step is a module with a typed ``Config`` and ``run``: :mod:`.train_reward`,
:mod:`.relabel`, :mod:`.train_policy` (the ``METHODS`` registry names them ``train-reward``,
``relabel`` and ``train-policy``, so a config file with ``method: train-reward`` runs with
``robopref run`` too); :func:`.score.score` ranks episodes by a learned reward.
"""

from robopref.methods.own_data.config import (
    RelabelConfig,
    RewardModelConfig,
    TrainPolicyConfig,
    TrainRewardConfig,
)

__all__ = ["RelabelConfig", "RewardModelConfig", "TrainPolicyConfig", "TrainRewardConfig"]
