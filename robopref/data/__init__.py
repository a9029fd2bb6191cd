"""Trajectories, segments and preference queries; HDF5 storage in the robomimic layout."""

from robopref.data.queries import PreferenceQueries, sample_queries, segment_rewards, sliding_segments
from robopref.data.trajectory import DataValidationError, Trajectory, TrajectoryDataset

__all__ = [
    "DataValidationError",
    "PreferenceQueries",
    "Trajectory",
    "TrajectoryDataset",
    "sample_queries",
    "segment_rewards",
    "sliding_segments",
]
