"""PEARL cross-task preference transfer: (fused) GW coupling -> transferred soft labels."""

from robopref.transfer.cpa import (
    FEATURES,
    AutoConfig,
    BlendMember,
    Candidate,
    ObsLayout,
    TransferConfig,
    coupling_for,
    label_accuracy,
    pairwise_distances,
    sample_pool_pairs,
    segment_features,
    select_config,
    transfer_labels,
    transfer_through_coupling,
    unique_items,
)
from robopref.transfer.slow import SlowEncoder, fit_slow_encoder, slow_features

__all__ = [
    "FEATURES",
    "AutoConfig",
    "BlendMember",
    "Candidate",
    "SlowEncoder",
    "ObsLayout",
    "TransferConfig",
    "coupling_for",
    "fit_slow_encoder",
    "select_config",
    "label_accuracy",
    "pairwise_distances",
    "sample_pool_pairs",
    "segment_features",
    "slow_features",
    "transfer_labels",
    "transfer_through_coupling",
    "unique_items",
]
