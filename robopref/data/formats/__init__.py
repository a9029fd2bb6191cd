"""The real-robot formats, one module each, above one module of shared helpers.

* ``_common`` — error messages, column and flag checks, optional packages, safe writes
  (the writer lock of an output, atomic folders, HDF5 files that survive a full disk).
* ``robomimic`` — the robomimic HDF5 reader and robopref's HDF5 writer (+ ``next_obs``).
* ``lerobot_meta`` — what every LeRobot version shares: ``info.json``, feature choice,
  splits, video and image decoding.
* ``lerobot_v2`` / ``lerobot_v3`` — the readers of LeRobot v2.x and v3.0 folders.
* ``lerobot_write`` — the LeRobot v3.0 writer.
* ``preferences`` — robopref's preference side table and metadata file of a LeRobot folder.

:mod:`robopref.data.importers` and :mod:`robopref.data.exporters` pick the format; import from
them (or from :mod:`robopref.data`), not from here.
"""
