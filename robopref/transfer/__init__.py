"""PEARL cross-task preference transfer: GW coupling -> transferred soft labels."""

from robopref.transfer.cpa import (
    TransferConfig,
    label_accuracy,
    pairwise_distances,
    sample_pool_pairs,
    segment_features,
    transfer_labels,
    transfer_through_coupling,
    unique_items,
)

__all__ = [
    "TransferConfig",
    "label_accuracy",
    "pairwise_distances",
    "sample_pool_pairs",
    "segment_features",
    "transfer_labels",
    "transfer_through_coupling",
    "unique_items",
]
