"""PEARL cross-task preference transfer: (fused) GW coupling -> transferred soft labels."""

from robopref.transfer.cpa import (
    FEATURES,
    AutoConfig,
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

__all__ = [
    "FEATURES",
    "AutoConfig",
    "Candidate",
    "ObsLayout",
    "TransferConfig",
    "coupling_for",
    "select_config",
    "label_accuracy",
    "pairwise_distances",
    "sample_pool_pairs",
    "segment_features",
    "transfer_labels",
    "transfer_through_coupling",
    "unique_items",
]
