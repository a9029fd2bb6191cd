"""Reward models learned from preferences and their trainer.

* :class:`MLPReward`, :class:`EnsembleReward`, :class:`GaussianReward` (PEARL's robust reward):
  ``r(obs [..., obs_dim], act [..., act_dim]) -> [...]`` per step.
* :class:`ImageReward`, :class:`ImageEnsembleReward`: the same on camera frames
  ``[..., H, W, 3]`` (a small CNN, uint8 frames normalised inside).
* :class:`RewardTrainer` / :class:`RewardTrainerConfig`: fit any of them to
  :class:`~robopref.data.PreferenceQueries` with a loss of :mod:`robopref.losses`.
* :func:`load_reward` / :func:`save_reward`: checkpoints without pickled code.
"""

from robopref.rewards.image import ImageEnsembleReward, ImageReward
from robopref.rewards.models import (
    REWARD_MODELS,
    EnsembleReward,
    GaussianReward,
    MLPReward,
    RewardModel,
    gaussian_kl_regulariser,
    load_reward,
    register_reward_model,
    save_reward,
)
from robopref.rewards.ot_reward import (
    OTReward,
    cosine_cost,
    ot_distance,
    ot_frame_rewards,
    ot_rewards,
)
from robopref.rewards.segments import SegmentTensors, gather_segments
from robopref.rewards.trainer import RewardTrainer, RewardTrainerConfig
from robopref.rewards.visual import AlignConfig, VisualEncoder, align_encoder, video_scores

__all__ = [
    "AlignConfig",
    "OTReward",
    "VisualEncoder",
    "align_encoder",
    "cosine_cost",
    "ot_distance",
    "ot_frame_rewards",
    "ot_rewards",
    "video_scores",
    "REWARD_MODELS",
    "EnsembleReward",
    "GaussianReward",
    "ImageEnsembleReward",
    "ImageReward",
    "MLPReward",
    "RewardModel",
    "RewardTrainer",
    "RewardTrainerConfig",
    "SegmentTensors",
    "gather_segments",
    "gaussian_kl_regulariser",
    "load_reward",
    "register_reward_model",
    "save_reward",
]
