"""Trajectories, segments and preference queries; HDF5 storage in the robomimic layout."""

from robopref.data.hdf5 import load_dataset, load_queries, save_dataset, save_queries
from robopref.data.importers import import_dataset, import_lerobot, import_robomimic
from robopref.data.queries import (
    PreferenceQueries,
    check_segments,
    sample_queries,
    segment_rewards,
    sliding_segments,
)
from robopref.data.trajectory import DataValidationError, Trajectory, TrajectoryDataset

__all__ = [
    "DataValidationError",
    "PreferenceQueries",
    "Trajectory",
    "TrajectoryDataset",
    "check_segments",
    "import_dataset",
    "import_lerobot",
    "import_robomimic",
    "load_dataset",
    "load_queries",
    "sample_queries",
    "save_dataset",
    "save_queries",
    "segment_rewards",
    "sliding_segments",
]
