"""HDF5 storage of a :class:`TrajectoryDataset` in the robomimic layout, with validation.

Layout (robomimic's, plus a few attributes and a ``preferences`` group)::

    /                         attrs: robopref_format_version = 1
    data/                     attrs: total (sum of num_samples), env_args (JSON string),
                                     robopref_metadata (JSON: TrajectoryDataset.metadata)
    data/demo_<i>/            attrs: num_samples (T), task, instruction, metadata (JSON),
                                     obs_format ("array" or "dict")
        obs/<key>             [T, ...] one dataset per observation key; array observations
                              are stored as obs/state and restored as an array
        actions               [T, act_dim]
        rewards               [T]
        dones                 [T] uint8 (0/1)
        successes             [T] uint8 (0/1)
    mask/<filter>             (optional) robomimic filter keys: byte strings "demo_<i>"
    preferences/              attrs: label_kind, teacher, seed, k, metadata (JSON)
        traj_index, start, length   [Q, K] int64 (traj_index = position in the demo list)
        labels                      [Q, K] float64
        mask                        [Q, K] uint8 (0/1)
        confidence                  [Q] float64

Every dataset carries a Fletcher-32 checksum, so a flipped byte is an error at load time
rather than a silently wrong number; uint8 image observations (``[T, H, W, C]``) are gzip
compressed one frame per chunk.

:func:`load_dataset` reads by the layout, not by our writer: a robomimic file (arbitrary obs
keys, int64 ``dones``, extra ``states``/``next_obs``, demos numbered from any integer) loads
too. Any structural problem raises :class:`DataValidationError` whose message names the
file, the HDF5 path and the expected vs found shape or dtype.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robopref.data.locks import writer_lock
from robopref.data.queries import PreferenceQueries, check_segments
from robopref.data.trajectory import (
    DataValidationError,
    Trajectory,
    TrajectoryDataset,
    value_problem,
)
from robopref.utils import atomic_path

FORMAT_VERSION = 1
PREFERENCES = "preferences"
_FORMAT_ATTR = "robopref_format_version"
_DEMO = re.compile(r"^demo_(\d+)$")
_QUERY_FIELDS = ("traj_index", "start", "length", "labels", "mask")
# HDF5 1.10 file format: compact chunk indexes (files ~12% smaller than with the 1.8 default
# for many small demos); readable by any HDF5 >= 1.10 (2016), i.e. any recent h5py.
_LIBVER = ("v110", "v110")
# robomimic's EnvType: 1 robosuite, 2 gym, 3 iGibson MoMaRT.
_GYM_ENV_TYPE = 2

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- errors


def _fail(src: str, where: str, expected: str, found: str) -> None:
    raise DataValidationError(f"{src}: {where}: expected {expected}, found {found}")


def _describe(obj: Any) -> str:
    if isinstance(obj, h5py.Group):
        return "a group"
    if isinstance(obj, (h5py.Dataset, np.ndarray)):
        return f"shape {tuple(obj.shape)} {obj.dtype}"
    return "nothing (missing)" if obj is None else type(obj).__name__


def _is_numeric(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _is_flag(dtype: np.dtype) -> bool:
    """Dtypes that can hold 0/1 flags (values are checked after reading)."""
    return bool(dtype == np.bool_ or _is_numeric(dtype))


def _dumps(obj: Any, where: str) -> str:
    """JSON text of ``obj``; numpy scalars and arrays become numbers and lists."""

    def default(x: Any) -> Any:
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
        raise TypeError(type(x).__name__)

    try:
        return json.dumps(obj, default=default)
    except (TypeError, ValueError) as e:
        raise DataValidationError(f"{where}: expected JSON-serialisable values, found {e}") from e


def _loads(text: Any, src: str, where: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as e:
        raise DataValidationError(
            f"{src}: {where}: expected a JSON object, found {text!r:.80} ({e})"
        ) from e
    if not isinstance(value, dict):
        _fail(src, where, "a JSON object", type(value).__name__)
    return value


def _loads_list(text: Any, src: str, where: str) -> list[str]:
    """A JSON list of strings stored in an attribute."""
    try:
        out = json.loads(text) if text is not None else None
    except (TypeError, ValueError):
        out = None
    if not isinstance(out, list) or not all(isinstance(x, str) for x in out):
        _fail(src, where, "a JSON list of strings", repr(text)[:60])
    return out


def _attr_str(attrs: h5py.AttributeManager, name: str, src: str, where: str, default: str) -> str:
    value = attrs.get(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        _fail(src, f"{where}.attrs['{name}']", "a string", repr(value))
    return value


def _attr_int(attrs: h5py.AttributeManager, name: str, src: str, where: str) -> int | None:
    if name not in attrs:
        return None
    value = np.asarray(attrs[name])
    if value.shape != () or not np.issubdtype(value.dtype, np.integer):
        _fail(src, f"{where}.attrs['{name}']", "an integer", repr(attrs[name]))
    return int(value)


# --------------------------------------------------------------------------- writing

#: Free bytes kept for what HDF5 writes when it closes a file (object headers, chunk indexes
#: still in its metadata cache), on top of the bytes a write is about to add.
_CLOSE_RESERVE = 256 * 1024
#: Upper bound of the metadata bytes HDF5 may hold unwritten per dataset created.
_PER_DATASET = 4096
#: HDF5's default metadata cache size limit: never more unwritten metadata than this.
_METADATA_CACHE_MAX = 32 << 20


class _SpaceGuard:
    """Keeps HDF5 from ever meeting a full disk while it writes ``tmp``.

    h5py 3.16 / HDF5 2.0 report a failed chunk write only when the dataset is closed (an
    ignored exception) and may crash the process when the file is closed afterwards. So
    before each step the writer asks for the bytes it is about to add (an upper bound: the
    uncompressed size) plus room for what the close still writes, and stops with
    ``OSError(ENOSPC)`` naming ``path`` while HDF5 can still close the file cleanly.
    """

    def __init__(self, path: Path, folder: Path) -> None:
        self.path, self.folder = path, folder
        self.datasets = 0

    def need(self, nbytes: int, datasets: int = 0) -> None:
        self.datasets += datasets
        pending = min(self.datasets * _PER_DATASET, _METADATA_CACHE_MAX)
        want = int(nbytes * 1.05) + 64 * datasets + pending + _CLOSE_RESERVE
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            return
        if free < want:
            raise OSError(
                errno.ENOSPC,
                f"{os.strerror(errno.ENOSPC)} ({free} bytes free, about {want} needed)",
                str(self.path),
            )


def _demo_nbytes(t: Trajectory, image_compression: str | None) -> tuple[int, int, bool]:
    """(bytes uncompressed, datasets, no array compressed) of one trajectory as
    :func:`_write_demo` stores it."""
    obs = t.observations if isinstance(t.observations, dict) else {"state": t.observations}
    arrays = [*obs.values(), t.actions, t.rewards]
    plain = not any(_compress(a, image_compression) for a in arrays)
    return sum(a.nbytes for a in arrays) + 2 * len(t), len(arrays) + 2, plain


def _queries_nbytes(queries: PreferenceQueries) -> int:
    return sum(getattr(queries, n).nbytes for n in (*_QUERY_FIELDS, "confidence"))


def _compress(arr: np.ndarray, image_compression: str | None) -> bool:
    return bool(arr.size and image_compression and arr.dtype == np.uint8 and arr.ndim >= 3)


def save_dataset(
    dataset: TrajectoryDataset, path: PathLike, *, image_compression: str | None = "gzip"
) -> None:
    """Write ``dataset`` (and its queries, if any) to ``path`` atomically.

    The file is written to a temporary file next to ``path`` and renamed over it, so an
    exception or crash leaves the previous file (or none) intact. The file's writer lock
    (:func:`robopref.data.locks.writer_lock`) is held meanwhile; a symlink ``path`` stays a
    link and its target is written (see :func:`robopref.utils.atomic_path`).

    Args:
        dataset: the trajectories; checked with :meth:`TrajectoryDataset.validate` first.
        path: target ``.h5`` / ``.hdf5`` file.
        image_compression: HDF5 filter for uint8 observations with >= 3 dims (``"gzip"``,
            ``"lzf"`` or None).

    Raises:
        DataValidationError: the dataset is inconsistent (naming the trajectory and field),
            or a metadata dict is not JSON-serialisable.
        FileBusyError: another process holds the writer lock of ``path``.
    """
    path = Path(path)
    source = f"save_dataset({path})"
    dataset.validate(source)
    meta = _dumps(dataset.metadata, f"{source}: dataset metadata")
    traj_meta = [
        _dumps(t.metadata, f"{source}: trajectory {i}: metadata") for i, t in enumerate(dataset)
    ]
    filter_keys = _filter_keys_for_save(dataset, source)
    env_args = dataset.metadata.get("env_args")
    if not isinstance(env_args, dict):
        tasks = dataset.tasks
        env_args = {
            "env_name": tasks[0] if len(tasks) == 1 else "",
            "type": _GYM_ENV_TYPE,
            "env_kwargs": {},
        }
    sizes = [_demo_nbytes(t, image_compression) for t in dataset]
    queries_nbytes = 0 if dataset.queries is None else _queries_nbytes(dataset.queries)
    with writer_lock(path, what="save a dataset to it"), atomic_path(path) as tmp:
        guard = _SpaceGuard(path, tmp.parent)
        # Uncompressed arrays take their full size on disk, so a write that cannot fit stops
        # before it starts; compressed images are checked demo by demo.
        guard.need(sum(n for n, _, plain in sizes if plain) + queries_nbytes)
        with h5py.File(tmp, "w", libver=_LIBVER) as f:
            f.attrs[_FORMAT_ATTR] = FORMAT_VERSION
            data = f.create_group("data")
            data.attrs["total"] = int(sum(len(t) for t in dataset))
            data.attrs["env_args"] = _dumps(env_args, f"{source}: metadata['env_args']")
            data.attrs["robopref_metadata"] = meta
            for i, t in enumerate(dataset):
                guard.need(sizes[i][0], sizes[i][1])
                _write_demo(data.create_group(f"demo_{i}"), t, traj_meta[i], image_compression)
            if filter_keys:
                mask = f.create_group("mask")
                for name, idx in filter_keys.items():
                    names = np.array([f"demo_{i}" for i in idx], dtype="S")
                    guard.need(names.nbytes, 1)
                    mask.create_dataset(name, data=names)
            if dataset.queries is not None:
                guard.need(queries_nbytes, 6)
                _write_queries(f, dataset.queries, source)


def _write_demo(g: h5py.Group, t: Trajectory, metadata: str, image_compression: str | None) -> None:
    g.attrs["num_samples"] = len(t)
    g.attrs["task"] = t.task
    g.attrs["instruction"] = t.instruction
    g.attrs["metadata"] = metadata
    obs = g.create_group("obs", track_order=True)
    if isinstance(t.observations, dict):
        g.attrs["obs_format"] = "dict"
        for key, arr in t.observations.items():
            _write_array(obs, key, arr, image_compression)
    else:
        g.attrs["obs_format"] = "array"
        _write_array(obs, "state", t.observations, image_compression)
    _write_array(g, "actions", t.actions)
    _write_array(g, "rewards", t.rewards)
    _write_array(g, "dones", t.dones.astype(np.uint8))
    _write_array(g, "successes", t.successes.astype(np.uint8))
    if t.step_tasks is not None:
        # a per-step index into the demo's list of task strings (fixed-size, checksummed)
        names = list(dict.fromkeys(t.step_tasks.tolist()))
        g.attrs["step_task_names"] = json.dumps(names)
        index = {n: i for i, n in enumerate(names)}
        _write_array(g, "step_task_index", np.array([index[x] for x in t.step_tasks], np.int32))
    if t.extras:
        extras = g.create_group("extras", track_order=True)
        for key, arr in t.extras.items():
            _write_array(extras, key, arr)


def _write_array(
    g: h5py.Group, name: str, arr: np.ndarray, image_compression: str | None = None
) -> None:
    kwargs: dict[str, Any] = {}
    if arr.size:
        kwargs["fletcher32"] = True
        if _compress(arr, image_compression):
            kwargs.update(compression=image_compression, chunks=(1, *arr.shape[1:]))
    g.create_dataset(name, data=arr, **kwargs)


def _filter_keys_for_save(dataset: TrajectoryDataset, source: str) -> dict[str, list[int]]:
    """``metadata["filter_keys"]`` ({name: [trajectory index]}) checked, or {}."""
    keys = dataset.metadata.get("filter_keys")
    if keys is None:
        return {}
    where = f"{source}: metadata['filter_keys']"
    if not isinstance(keys, dict):
        raise DataValidationError(
            f"{where}: expected a dict name -> [trajectory index], found {type(keys).__name__}"
        )
    out = {}
    for name, idx in keys.items():
        arr = np.asarray(idx)
        ok = (
            isinstance(name, str)
            and name
            and "/" not in name
            and arr.ndim == 1
            and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer))
            and bool(((arr >= 0) & (arr < len(dataset))).all())
        )
        if not ok:
            raise DataValidationError(
                f"{where}[{name!r}]: expected a list of trajectory indices in [0, {len(dataset)}), "
                f"found {idx!r:.80}"
            )
        out[name] = [int(i) for i in arr]
    return out


def _write_queries(f: h5py.File, queries: PreferenceQueries, source: str) -> None:
    g = f.create_group(PREFERENCES)
    g.attrs["label_kind"] = queries.label_kind
    g.attrs["teacher"] = queries.teacher
    g.attrs["seed"] = int(queries.seed)
    g.attrs["k"] = int(queries.k)
    g.attrs["metadata"] = _dumps(queries.metadata, f"{source}: queries: metadata")
    for name in ("traj_index", "start", "length", "labels", "confidence"):
        _write_array(g, name, getattr(queries, name))
    _write_array(g, "mask", queries.mask.astype(np.uint8))


def save_queries(path: PathLike, queries: PreferenceQueries | None) -> None:
    """Add (or replace) the preference queries of the dataset file ``path``, atomically.

    Every other group is copied unchanged into a temporary file next to ``path``, the new
    ``preferences`` group is written, and the temporary file is renamed over ``path``; an
    exception leaves the old file intact. ``queries=None`` removes the queries. The writer
    lock of ``path`` is held from reading to renaming (hold it yourself around a longer
    read-modify-write: it is re-entrant).

    Raises:
        DataValidationError: ``path`` is not a readable dataset file, or the queries do not
            fit its trajectories (index out of range, segment past the end).
        FileBusyError: another process holds the writer lock of ``path``.
    """
    path = Path(path)
    src = str(path)
    source = f"save_queries({path})"
    if queries is not None:
        queries.validate(source)
    with writer_lock(path, what="save labels to it"):
        with _open(path) as f:
            reader = _Reader(f, src)
            lengths = reader.run(reader.lengths)
        if queries is not None:
            check_segments(queries, lengths, source)
        # The source is closed before the temporary file is renamed over it.
        with atomic_path(path) as tmp:
            # The copy takes about the size of the file (its chunks are copied as they are).
            _SpaceGuard(path, tmp.parent).need(
                path.stat().st_size + (0 if queries is None else _queries_nbytes(queries))
            )
            with _open(path) as f, h5py.File(tmp, "w", libver=_LIBVER) as out:
                out.attrs.update(f.attrs)
                for name in f:
                    if name != PREFERENCES:
                        f.copy(f[name], out, name=name)
                if queries is not None:
                    _write_queries(out, queries, source)


# --------------------------------------------------------------------------- reading


def load_dataset(path: PathLike) -> TrajectoryDataset:
    """Read a dataset file written by :func:`save_dataset` or by robomimic.

    Trajectories are in demo order (``demo_<i>`` sorted by ``i``). For a robomimic file:
    ``task`` is ``env_args["env_name"]``, observations are a dict of every ``obs/<key>``
    (an array when ``state`` is the only key), ``successes`` are all False and
    ``metadata["successes_recorded"]`` is False when the file has no ``successes``, each
    trajectory's metadata holds its ``demo`` name, and the dataset's metadata holds
    ``env_args``, ``source_format = "robomimic"`` and ``filter_keys`` (from ``mask/``).
    ``states`` and ``next_obs`` are not loaded.

    Raises:
        DataValidationError: the file is missing, not HDF5, truncated or corrupt, or a group,
            field or attribute is missing or has the wrong shape, dtype or values; the message
            names the file, the HDF5 path and the expected vs found shape or dtype.
    """
    path = Path(path)
    with _open(path) as f:
        reader = _Reader(f, str(path))
        return reader.run(reader.dataset)


def load_queries(path: PathLike) -> PreferenceQueries | None:
    """The preference queries stored in ``path`` (None if it has none), checked against the
    file's trajectory lengths. Raises :class:`DataValidationError` like :func:`load_dataset`."""
    path = Path(path)
    with _open(path) as f:
        reader = _Reader(f, str(path))
        return reader.run(lambda: reader.queries(reader.lengths()))


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    src = str(path)
    if not path.exists():
        raise DataValidationError(f"{src}: file not found")
    if path.is_dir():
        _fail(src, "/", "an HDF5 file", "a directory")
    if not h5py.is_hdf5(path):
        _fail(src, "/", "an HDF5 file", "a file without the HDF5 signature (not HDF5)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataValidationError(
            f"{src}: /: expected a readable HDF5 file, found one HDF5 cannot open "
            f"(truncated, corrupt or locked: {e})"
        ) from e
    try:
        yield f
    finally:
        f.close()


@dataclass
class _Demo:
    """What the header pass learned about one demo (no array data read yet)."""

    name: str
    where: str  # "data/demo_3"
    group: h5py.Group
    T: int
    fields: dict[str, h5py.Dataset] = field(default_factory=dict)  # "actions", "obs/state", ...
    obs_format: str = "dict"


class _Reader:
    """Reads one open file; ``where`` tracks the HDF5 path being read for error messages."""

    def __init__(self, f: h5py.File, src: str):
        self.f = f
        self.src = src
        self.where = "/"
        self.ours = _FORMAT_ATTR in f.attrs
        self._demos: list[_Demo] | None = None

    def run(self, fn):
        """Call ``fn()``; low-level HDF5 errors (corrupt data, bad checksums) become
        :class:`DataValidationError` naming the path being read."""
        try:
            return fn()
        except DataValidationError:
            raise
        except Exception as e:  # h5py raises OSError, KeyError, RuntimeError, ... on corrupt files
            raise DataValidationError(
                f"{self.src}: {self.where}: expected readable data, found a truncated or corrupt "
                f"file ({type(e).__name__}: {e})"
            ) from e

    def fail(self, where: str, expected: str, found: str) -> None:
        _fail(self.src, where, expected, found)

    # ---- structure (headers only)

    def demos(self) -> list[_Demo]:
        if self._demos is not None:
            return self._demos
        f = self.f
        if self.ours:
            version = _attr_int(f.attrs, _FORMAT_ATTR, self.src, "/")
            if version is None or version > FORMAT_VERSION:
                self.fail(
                    f"/.attrs['{_FORMAT_ATTR}']",
                    f"<= {FORMAT_VERSION}",
                    f"{version} (a newer robopref?)",
                )
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            self.fail(
                "data",
                "a group of demos data/demo_<N> (robomimic layout)",
                _describe(data) + f"; top-level keys {sorted(f.keys())}",
            )
        numbered = []
        for name in data:
            m = _DEMO.match(name)
            if m is None:
                self.fail(f"data/{name}", "only groups named demo_<N> inside data/", f"'{name}'")
            numbered.append((int(m.group(1)), name))
        demos = [self._demo_header(data, name) for _, name in sorted(numbered)]
        self._check_across(demos)
        total = _attr_int(data.attrs, "total", self.src, "data")
        if self.ours and total is None:
            self.fail("data.attrs['total']", "an integer", "nothing (missing)")
        if total is not None and total != sum(d.T for d in demos):
            self.fail(
                "data.attrs['total']",
                f"{sum(d.T for d in demos)} (the sum of the demo lengths)",
                str(total),
            )
        self._demos = demos
        return demos

    def lengths(self) -> list[int]:
        return [d.T for d in self.demos()]

    def _dataset(self, g: h5py.Group, name: str, where: str) -> h5py.Dataset:
        self.where = f"{where}/{name}"
        try:
            obj = g[name]
        except KeyError:
            obj = None
        if not isinstance(obj, h5py.Dataset):
            self.fail(f"{where}/{name}", "a dataset", _describe(obj))
        return obj

    def _demo_header(self, data: h5py.Group, name: str) -> _Demo:
        where = f"data/{name}"
        self.where = where
        g = data[name]
        if not isinstance(g, h5py.Group):
            self.fail(where, "a group", _describe(g))
        fields = {k: self._dataset(g, k, where) for k in ("actions", "rewards", "dones")}
        if self.ours or "successes" in g:
            fields["successes"] = self._dataset(g, "successes", where)
        obs = g.get("obs")
        if not isinstance(obs, h5py.Group):
            self.fail(f"{where}/obs", "a group of observation datasets obs/<key>", _describe(obs))
        for key in obs:
            fields[f"obs/{key}"] = self._dataset(obs, key, f"{where}/obs")
        obs_format = "dict"
        if self.ours:
            obs_format = _attr_str(g.attrs, "obs_format", self.src, where, "")
            if obs_format not in ("array", "dict"):
                self.fail(f"{where}.attrs['obs_format']", "'array' or 'dict'", repr(obs_format))
        elif list(obs) == ["state"]:
            obs_format = "array"
        if obs_format == "array" and list(obs) != ["state"]:
            self.fail(
                f"{where}/obs",
                "exactly one dataset 'state' (obs_format 'array')",
                f"keys {list(obs)}",
            )
        # T: the most common length among num_samples and the fields, so that the one field
        # that disagrees is the one named in the error.
        num_samples = _attr_int(g.attrs, "num_samples", self.src, where)
        if self.ours and num_samples is None:
            self.fail(f"{where}.attrs['num_samples']", "an integer", "nothing (missing)")
        votes = [num_samples] if num_samples is not None else []
        votes += [d.shape[0] for d in fields.values() if d.ndim >= 1]
        T = Counter(votes).most_common(1)[0][0] if votes else 0
        for key, d in fields.items():
            self.where = f"{where}/{key}"
            shape, dtype = d.shape, d.dtype
            if key == "actions":
                ok = len(shape) == 2 and shape[0] == T and _is_numeric(dtype)
                expected = f"[T={T}, act_dim] numeric"
            elif key.startswith("obs/"):
                ok = len(shape) >= 1 and shape[0] == T and (_is_numeric(dtype) or dtype == np.bool_)
                ok = ok and (obs_format == "dict" or len(shape) >= 2)
                expected = (
                    f"[T={T}, ...] numeric" if obs_format == "dict" else f"[T={T}, obs_dim] numeric"
                )
            elif key == "rewards":
                ok = shape == (T,) and _is_numeric(dtype)
                expected = f"[T={T}] numeric"
            else:  # dones, successes
                ok = shape == (T,) and _is_flag(dtype)
                expected = f"[T={T}] of 0/1 (bool or numeric)"
            if not ok:
                self.fail(f"{where}/{key}", expected, _describe(d))
        if num_samples is not None and num_samples != T:
            self.fail(
                f"{where}.attrs['num_samples']", f"{T} (the length of its fields)", str(num_samples)
            )
        return _Demo(name, where, g, T, fields, obs_format)

    def _check_across(self, demos: list[_Demo]) -> None:
        """Every demo has the same obs keys, act_dim and per-step obs shapes (the majority's)."""
        if not demos:
            return
        keys = Counter(tuple(sorted(d.fields)) for d in demos).most_common(1)[0][0]
        fmt = Counter(d.obs_format for d in demos).most_common(1)[0][0]
        for d in demos:
            if tuple(sorted(d.fields)) != keys:
                missing = sorted(set(keys) - set(d.fields))
                extra = sorted(set(d.fields) - set(keys))
                where = f"{d.where}/{(missing or extra)[0]}"
                self.fail(
                    where,
                    f"the fields of the other demos {list(keys)}",
                    f"missing {missing}, extra {extra}",
                )
            if d.obs_format != fmt:
                self.fail(f"{d.where}.attrs['obs_format']", repr(fmt), repr(d.obs_format))
        for key in keys:
            if key in ("rewards", "dones", "successes"):
                continue
            ref = Counter(d.fields[key].shape[1:] for d in demos).most_common(1)[0][0]
            for d in demos:
                if d.fields[key].shape[1:] != ref:
                    self.fail(
                        f"{d.where}/{key}",
                        f"[T={d.T}, {', '.join(map(str, ref))}] as in the other demos",
                        _describe(d.fields[key]),
                    )

    # ---- data

    def dataset(self) -> TrajectoryDataset:
        demos = self.demos()
        data = self.f["data"]
        env_args: dict[str, Any] = {}
        if "env_args" in data.attrs:
            env_args = _loads(data.attrs["env_args"], self.src, "data.attrs['env_args']")
        if self.ours:
            metadata = _loads(
                data.attrs.get("robopref_metadata", "{}"),
                self.src,
                "data.attrs['robopref_metadata']",
            )
        else:
            metadata = {"source_format": "robomimic", "env_args": env_args}
            filter_keys = self._filter_keys(demos)
            if filter_keys:
                metadata["filter_keys"] = filter_keys
        trajectories = [self._trajectory(d, env_args) for d in demos]
        queries = self.queries([d.T for d in demos])
        return TrajectoryDataset(trajectories, queries, metadata)

    def _read(self, where: str, d: h5py.Dataset) -> np.ndarray:
        self.where = where
        arr = d[()]
        problem = value_problem(arr, where.rsplit("/", 1)[-1])
        if problem:
            self.fail(where, "finite values", problem)
        return arr

    def _flags(self, where: str, d: h5py.Dataset) -> np.ndarray:
        arr = self._read(where, d)
        if arr.dtype != np.bool_:
            bad = (arr != 0) & (arr != 1)
            if bad.any():
                self.fail(
                    where, "values 0 or 1", f"value {arr[bad][0]} at step {int(np.argmax(bad))}"
                )
        return arr.astype(bool)

    def _trajectory(self, d: _Demo, env_args: dict[str, Any]) -> Trajectory:
        g, w = d.group, d.where
        arrays = {
            k: self._read(f"{w}/{k}", v)
            for k, v in d.fields.items()
            if k not in ("dones", "successes")
        }
        dones = self._flags(f"{w}/dones", d.fields["dones"])
        obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs/")}
        if self.ours:
            metadata = _loads(g.attrs.get("metadata", "{}"), self.src, f"{w}.attrs['metadata']")
            task = _attr_str(g.attrs, "task", self.src, w, "")
            instruction = _attr_str(g.attrs, "instruction", self.src, w, "")
        else:
            metadata = {"demo": d.name}
            task = _attr_str(g.attrs, "task", self.src, w, str(env_args.get("env_name", "")))
            instruction = _attr_str(g.attrs, "instruction", self.src, w, "")
        if "successes" in d.fields:
            successes = self._flags(f"{w}/successes", d.fields["successes"])
        else:
            successes = np.zeros(d.T, dtype=bool)
            metadata["successes_recorded"] = False
        step_tasks = self._step_tasks(g, w, d.T)
        extras = {}
        if isinstance(g.get("extras"), h5py.Group):
            for key in g["extras"]:
                ds = self._dataset(g["extras"], key, f"{w}/extras")
                if (
                    ds.ndim < 1
                    or ds.shape[0] != d.T
                    or not (_is_numeric(ds.dtype) or ds.dtype == np.bool_)
                ):
                    self.fail(f"{w}/extras/{key}", f"[T={d.T}, ...] numeric", _describe(ds))
                extras[key] = self._read(f"{w}/extras/{key}", ds)
        self.where = w
        return Trajectory(
            observations=obs["state"] if d.obs_format == "array" else obs,
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            successes=successes,
            dones=dones,
            task=task,
            instruction=instruction,
            metadata=metadata,
            step_tasks=step_tasks,
            extras=extras,
        )

    def _step_tasks(self, g: h5py.Group, w: str, T: int) -> np.ndarray | None:
        """The per-step tasks of a demo (``step_task_index`` into ``step_task_names``)."""
        if "step_task_index" not in g:
            return None
        d = self._dataset(g, "step_task_index", w)
        names = _loads_list(
            g.attrs.get("step_task_names"), self.src, f"{w}.attrs['step_task_names']"
        )
        index = self._read(f"{w}/step_task_index", d)
        if index.shape != (T,) or not np.issubdtype(index.dtype, np.integer):
            self.fail(f"{w}/step_task_index", f"[T={T}] integer", _describe(d))
        if T and (index.min() < 0 or index.max() >= len(names)):
            self.fail(
                f"{w}/step_task_index",
                f"indices into the {len(names)} step_task_names",
                f"values {int(index.min())}..{int(index.max())}",
            )
        return np.asarray(names, dtype=str)[index] if T else np.zeros(0, dtype=str)

    def _filter_keys(self, demos: list[_Demo]) -> dict[str, list[int]]:
        mask = self.f.get("mask")
        if mask is None:
            return {}
        if not isinstance(mask, h5py.Group):
            self.fail("mask", "a group of filter keys", _describe(mask))
        index = {d.name: i for i, d in enumerate(demos)}
        out = {}
        for name in mask:
            where = f"mask/{name}"
            d = self._dataset(mask, name, "mask")
            names = [
                n.decode() if isinstance(n, bytes) else str(n)
                for n in np.asarray(d[()]).reshape(-1)
            ]
            unknown = [n for n in names if n not in index]
            if unknown:
                self.fail(where, "names of demos in data/", f"{unknown[:3]}")
            out[name] = [index[n] for n in names]
        return out

    def queries(self, lengths: list[int]) -> PreferenceQueries | None:
        g = self.f.get(PREFERENCES)
        if g is None:
            return None
        w = PREFERENCES
        self.where = w
        if not isinstance(g, h5py.Group):
            self.fail(w, "a group of preference queries", _describe(g))
        ds = {name: self._dataset(g, name, w) for name in (*_QUERY_FIELDS, "confidence")}
        ti = ds["traj_index"]
        if ti.ndim != 2 or ti.shape[1] < 2 or not np.issubdtype(ti.dtype, np.integer):
            self.fail(f"{w}/traj_index", "[Q, K] integer with K >= 2", _describe(ti))
        Q, K = ti.shape
        kinds = {"start": "integer", "length": "integer", "labels": "float", "mask": "0/1"}
        for name, kind in kinds.items():
            d = ds[name]
            ok_dtype = {
                "integer": np.issubdtype(d.dtype, np.integer),
                "float": _is_numeric(d.dtype),
                "0/1": _is_flag(d.dtype),
            }[kind]
            if d.shape != (Q, K) or not ok_dtype:
                self.fail(f"{w}/{name}", f"[Q={Q}, K={K}] {kind}", _describe(d))
        if ds["confidence"].shape != (Q,) or not _is_numeric(ds["confidence"].dtype):
            self.fail(f"{w}/confidence", f"[Q={Q}] float", _describe(ds["confidence"]))
        k_attr = _attr_int(g.attrs, "k", self.src, w)
        if k_attr is not None and k_attr != K:
            self.fail(f"{w}.attrs['k']", f"{K} (the width of traj_index)", str(k_attr))
        self.where = w
        label_kind = _attr_str(g.attrs, "label_kind", self.src, w, "")
        seed = _attr_int(g.attrs, "seed", self.src, w)

        def read(name: str) -> np.ndarray:
            self.where = f"{w}/{name}"
            return ds[name][()]

        # Filled here and validated below so that the messages name the file.
        q = PreferenceQueries.__new__(PreferenceQueries)
        q.traj_index = read("traj_index").astype(np.int64)
        q.start = read("start").astype(np.int64)
        q.length = read("length").astype(np.int64)
        q.labels = read("labels").astype(np.float64)
        q.mask = self._flags(f"{w}/mask", ds["mask"])
        q.confidence = read("confidence").astype(np.float64)
        self.where = w
        q.label_kind = label_kind  # type: ignore[assignment]
        q.teacher = _attr_str(g.attrs, "teacher", self.src, w, "")
        q.seed = -1 if seed is None else seed
        q.metadata = _loads(g.attrs.get("metadata", "{}"), self.src, f"{w}.attrs['metadata']")
        source = f"{self.src}: {w}"
        q.validate(source)
        check_segments(q, lengths, source)
        return q
