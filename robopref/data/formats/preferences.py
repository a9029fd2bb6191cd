"""robopref's side files in an exported LeRobot folder: the preference table and the metadata.

``meta/robopref_preferences.parquet`` holds one row per query: ``query_index``, and as K-lists
``episode_index``, ``start``, ``length``, ``labels``, ``mask``; ``confidence``; the schema
metadata ``robopref`` holds ``label_kind``, ``teacher``, ``seed`` and ``metadata``. LeRobot
ignores the file; the v3.0 reader turns it back into :class:`PreferenceQueries`.
``meta/robopref.json`` holds the dataset metadata and each episode's task, instruction and
metadata, so that an exported folder imports back as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data.formats._common import arrow_to_numpy, json_default, require
from robopref.data.queries import PreferenceQueries
from robopref.data.trajectory import DataValidationError

PREFERENCES_TABLE = "meta/robopref_preferences.parquet"
METADATA_FILE = "meta/robopref.json"


def preferences_table(q: PreferenceQueries) -> Any:
    """The side table of ``q`` as a ``pyarrow.Table``."""
    pa = require("pyarrow", "writing the preference table")
    K = q.traj_index.shape[1]

    def lists(arr: np.ndarray) -> Any:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1)), K)

    cols = {
        "query_index": pa.array(np.arange(len(q.traj_index), dtype=np.int64)),
        "episode_index": lists(q.traj_index.astype(np.int64)),
        "start": lists(q.start.astype(np.int64)),
        "length": lists(q.length.astype(np.int64)),
    }
    if q.labels is not None:
        cols["labels"] = lists(q.labels.astype(np.float64))
    if q.mask is not None:
        cols["mask"] = lists(q.mask.astype(bool))
    if q.confidence is not None:
        cols["confidence"] = pa.array(q.confidence.astype(np.float64))
    meta = {
        "label_kind": q.label_kind,
        "teacher": q.teacher,
        "seed": int(q.seed),
        "metadata": q.metadata,
    }
    return pa.table(cols).replace_schema_metadata(
        {b"robopref": json.dumps(meta, default=json_default).encode()}
    )


def read_preferences(path: Path) -> PreferenceQueries:
    """The :class:`PreferenceQueries` of a ``meta/robopref_preferences.parquet`` table."""
    pq = require("pyarrow.parquet", "import_lerobot")
    table = pq.read_table(path)
    Q = table.num_rows
    for c in ("episode_index", "start", "length"):
        if c not in table.column_names:
            raise DataValidationError(
                f"{path}: {c}: expected a column of the preference table, found columns "
                f"{table.column_names}"
            )

    def col(name: str) -> np.ndarray | None:
        if name not in table.column_names:
            return None
        return arrow_to_numpy(table.column(name), Q, path, name)

    raw = (table.schema.metadata or {}).get(b"robopref", b"{}")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise DataValidationError(
            f"{path}: schema metadata 'robopref': expected a JSON object, found {raw[:60]!r} ({e})"
        ) from e
    if not isinstance(meta, dict):
        raise DataValidationError(
            f"{path}: schema metadata 'robopref': expected a JSON object, found "
            f"{type(meta).__name__}"
        )
    return PreferenceQueries(
        traj_index=col("episode_index"),
        start=col("start"),
        length=col("length"),
        labels=col("labels"),
        mask=col("mask"),
        confidence=col("confidence"),
        label_kind=meta.get("label_kind", "none"),
        teacher=meta.get("teacher", ""),
        seed=int(meta.get("seed", -1)),
        metadata=meta.get("metadata", {}),
    )
