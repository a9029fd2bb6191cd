"""Exporters of a :class:`TrajectoryDataset` (with its preference queries) to other formats.

* :func:`export_lerobot` writes a LeRobot v3.0 folder that ``LeRobotDataset(repo_id,
  root=OUT)`` of LeRobot 0.4 loads, with the preference queries and labels in the side table
  ``meta/robopref_preferences.parquet`` (LeRobot ignores it; :func:`robopref.data.
  import_lerobot` reads it back) and robopref's dataset metadata in ``meta/robopref.json``
  (:mod:`robopref.data.formats.lerobot_write`).
* :func:`export_robomimic` writes robopref's HDF5 file plus ``next_obs`` for each demo, so
  robomimic's ``SequenceDataset`` loads it with its defaults (``load_next_obs=True``)
  (:mod:`robopref.data.formats.robomimic`).

Both hold the writer lock of ``OUT`` and write to a temporary name renamed at the end: an
error (a read-only folder, a full disk) is one line naming ``OUT`` and leaves nothing behind.
"""

from __future__ import annotations

from robopref.data.formats.lerobot_write import export_lerobot
from robopref.data.formats.preferences import METADATA_FILE, PREFERENCES_TABLE, read_preferences
from robopref.data.formats.robomimic import export_robomimic

__all__ = [
    "METADATA_FILE",
    "PREFERENCES_TABLE",
    "export_lerobot",
    "export_robomimic",
    "read_preferences",
]
