"""Online RL on learned rewards with stable-baselines3: RLPD-style SAC with demonstrations
(:mod:`robopref.policies.online.rlpd`) and the callbacks that relabel episodes with OT rewards
and log the environment's own return (:mod:`robopref.policies.online.callbacks`)."""

from robopref.policies.online.callbacks import GroundTruthLogger, OTRelabelCallback
from robopref.policies.online.rlpd import (
    LayerNormSACPolicy,
    MixedReplayBuffer,
    RLPDConfig,
    demo_buffer,
    make_rlpd_sac,
)

__all__ = [
    "GroundTruthLogger",
    "LayerNormSACPolicy",
    "MixedReplayBuffer",
    "OTRelabelCallback",
    "RLPDConfig",
    "demo_buffer",
    "make_rlpd_sac",
]
