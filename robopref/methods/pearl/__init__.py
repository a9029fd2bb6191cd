"""Recipe ``pearl``: zero-shot cross-task preference transfer (see :mod:`.recipe`)."""

from robopref.methods.pearl.config import VARIANTS, Config, QueryConfig, RewardConfig
from robopref.methods.pearl.recipe import (
    data_stage,
    run,
    shuffled_labels,
    source_reward_embedder,
    target_labels,
)

__all__ = [
    "VARIANTS",
    "Config",
    "QueryConfig",
    "RewardConfig",
    "data_stage",
    "run",
    "shuffled_labels",
    "source_reward_embedder",
    "target_labels",
]
