"""The bottom of the format modules: what every reader and writer shares.

Error messages (``SRC: WHERE: expected ..., found ...``), checks of arrays and columns read
from a file, optional packages, and the three ways a writer puts its output on disk without
ever leaving a half-written one: :func:`locked_output` (the writer lock of the output, with
errors that name the output), :func:`atomic_folder` (a folder built beside its final name and
renamed) and :func:`new_hdf5_file` (an HDF5 file that survives a full disk).

Nothing here imports another format module; every format module may import this one.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import h5py
import numpy as np

from robopref.data.locks import writer_lock
from robopref.data.trajectory import DataValidationError
from robopref.utils import OutputPathError, atomic_path, check_output_path, pid_alive

PathLike = str | os.PathLike
DEMO = re.compile(r"^demo_(\d+)$")
# HDF5 1.10 file format, as robopref.data.hdf5 writes it.
HDF5_LIBVER = ("v110", "v110")


# --------------------------------------------------------------------------- messages


def fail(src: Any, where: str, expected: str, found: str) -> NoReturn:
    raise DataValidationError(f"{src}: {where}: expected {expected}, found {found}")


def describe(obj: Any) -> str:
    """What was found where an HDF5 dataset was expected (for error messages)."""
    if obj is None:
        return "nothing (missing)"
    if isinstance(obj, h5py.Group):
        return "a group"
    return f"shape {tuple(obj.shape)} {obj.dtype}"


def demo_names(group: Any) -> list[str]:
    """The ``demo_<N>`` members of a robomimic ``data`` group, sorted by N (robomimic's order)."""
    return sorted((n for n in group if DEMO.match(n)), key=lambda n: int(n[5:]))


# --------------------------------------------------------------------------- values


def flags(arr: np.ndarray, src: Any, where: str) -> np.ndarray:
    """0/1 (or bool) values as bool; any other value is an error naming the step."""
    arr = np.asarray(arr)
    if arr.dtype != np.bool_:
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            i = int(np.argmax(bad))
            fail(src, where, "values 0 or 1", f"value {arr[i]} at step {i}")
    return arr.astype(bool)


def json_default(x: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as numbers and lists."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per non-empty line."""
    if not path.is_file():
        fail(path, "/", "a JSON-lines file", "nothing (missing)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            fail(path, f"line {i + 1}", "a JSON object", f"{line[:60]!r} ({e})")
        if not isinstance(row, dict):
            fail(path, f"line {i + 1}", "a JSON object", type(row).__name__)
        rows.append(row)
    return rows


def require(module: str, what: str) -> Any:
    """Import an optional package (pyarrow, av, PIL) when a format first needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the '{module}' package (pip install {module})") from e


def arrow_to_numpy(col: Any, T: int, file: Path, key: str) -> np.ndarray:
    """A (possibly nested) list column of T rows as a dense ``[T, ...]`` array."""
    pa = require("pyarrow", "reading parquet files")
    pc = require("pyarrow.compute", "reading parquet files")
    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    dims = []
    while (
        pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
    ):
        if arr.null_count:
            fail(file, key, "no missing values", f"{arr.null_count} null row(s)")
        lengths = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            fail(file, key, "lists of one length in every row", f"lengths {lengths[:5].tolist()}")
        dims.append(int(lengths[0]) if len(lengths) else 0)
        arr = arr.flatten()
    if arr.null_count:
        fail(file, key, "no missing values", f"{arr.null_count} null value(s)")
    values = arr.to_numpy(zero_copy_only=False)
    shape = (T, *dims)
    if int(np.prod(shape)) != len(values):
        fail(file, key, f"{T} rows of shape {tuple(dims)}", f"{len(values)} values")
    return values.reshape(shape)


# --------------------------------------------------------------------------- outputs


def check_output(path: PathLike, kind: str = "file") -> None:
    """Refuse an existing output that is not a ``kind`` ("file" or "folder"): a device node,
    FIFO or socket must never be replaced by a rename (:func:`robopref.utils.check_output_path`,
    as a :class:`DataValidationError`)."""
    try:
        check_output_path(path, expect=kind, flag="output", overwrite=True)
    except OutputPathError as e:
        raise DataValidationError(str(e)) from None


def write_error(path: PathLike, e: OSError) -> DataValidationError:
    """One line naming the output ``path`` for an OSError raised while writing it, also when
    the error names a temporary file or nothing at all (h5py, pyarrow)."""
    reason = e.strerror or str(e) or type(e).__name__
    code = errno.errorcode.get(e.errno or 0)
    if code:
        reason = f"{reason} [{code}]"
    return DataValidationError(
        f"{path}: cannot write the output: {reason}; nothing was written and existing files "
        "are unchanged"
    )


@contextmanager
def output_errors(path: PathLike) -> Iterator[None]:
    """Turn an OSError of the block (writing ``path``) into a one-line
    :class:`DataValidationError` that names ``path``."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e) from e


@contextmanager
def locked_output(path: PathLike, what: str) -> Iterator[None]:
    """Hold the writer lock of ``path``; a lock that cannot be created (read-only or full
    folder) is blamed on ``path``. Errors of the block itself pass through unchanged."""
    with ExitStack() as stack:
        with output_errors(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(writer_lock(path, what=what))
        yield


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def remove_stale_temporaries(out: Path) -> list[str]:
    """Remove what killed writers of ``out`` left beside it: folders ``.NAME.<pid>-<hex>.tmpdir``
    (and ``.NAME.XXXXXXXX`` of older versions holding only ``data``/``meta``), nested HDF5
    temporaries ``..NAME.<pid>-<hex>.tmp.<pid>-<hex>.tmp`` and their ``.lock`` files.

    Call it with the writer lock of ``out`` held: any other writer of ``out`` is then gone.
    Temporaries whose process still runs are left alone. Returns the removed names.
    """
    name = re.escape(out.name)
    ours = re.compile(rf"^\.{name}\.(\d+)-[0-9a-f]+\.tmpdir$")
    nested = re.compile(rf"^\.\.{name}\.(\d+)-[0-9a-f]+\.tmp\.(?:\d+-[0-9a-f]+\.tmp|lock)$")
    legacy = re.compile(rf"^\.{name}\.[a-z0-9_]{{8}}$")
    removed = []
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return removed
    for entry in entries:
        m = ours.match(entry.name) or nested.match(entry.name)
        stale = bool(m) and not pid_alive(int(m.group(1)))
        if not m and legacy.match(entry.name) and entry.is_dir(follow_symlinks=False):
            try:
                stale = bool(os.listdir(entry.path)) and set(os.listdir(entry.path)) <= {
                    "data",
                    "meta",
                }
            except OSError:
                stale = False
        if stale:
            _remove(entry.path)
            removed.append(entry.name)
    return removed


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``out``; on success rename it to ``out`` (which must
    not exist), on any error remove it.

    The folder is ``.NAME.<pid>-<hex>.tmpdir``, created with the umask's mode like any
    ``mkdir``; ones left by killed writers are removed first (hold the writer lock of ``out``).
    """
    remove_stale_temporaries(out)
    while True:
        tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmpdir")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.rename(tmp, out)
    finally:
        if os.path.lexists(tmp):
            _remove(str(tmp))


class _GuardedFile:
    """A binary file for h5py's file-object driver that never reports a failed write to HDF5.

    h5py 3.16 with HDF5 2.0 can crash (segfault) when it closes a file after a write failed
    (full disk) and the file holds Fletcher-32 datasets. So the first failed write is kept in
    ``error`` and every later write goes to memory instead (HDF5 may read it back while it
    closes); :meth:`check` raises the error between two writes of the caller, and the
    temporary file is deleted afterwards.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_TRUNC)
        self.pos = 0
        self.error: OSError | None = None
        self._memory: list[tuple[int, bytes]] = []

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = pos
        elif whence == 1:
            self.pos += pos
        else:
            self.pos = self._size() + pos
        return self.pos

    def _size(self) -> int:
        size = os.fstat(self.fd).st_size
        for at, data in self._memory:
            size = max(size, at + len(data))
        return size

    def tell(self) -> int:
        return self.pos

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = len(view)
        if self.error is None:
            done = 0
            try:
                while done < n:
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self.error = e
        if self.error is not None:
            self._memory.append((self.pos, bytes(view)))
        self.pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(self._size() - self.pos, 0)
        data = bytearray(os.pread(self.fd, size, self.pos).ljust(size, b"\0"))
        for at, chunk in self._memory:  # later writes win
            lo, hi = max(at, self.pos), min(at + len(chunk), self.pos + size)
            if lo < hi:
                data[lo - self.pos : hi - self.pos] = chunk[lo - at : hi - at]
        self.pos += size
        return bytes(data)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                self.error = e
        return size

    def flush(self) -> None:
        pass

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class HDF5Output:
    """An HDF5 file being written by :func:`new_hdf5_file`: ``file`` is the open
    ``h5py.File``; call :meth:`check` after each large write (e.g. each demo) so that a full
    disk stops the work at once."""

    def __init__(self, file: h5py.File, guard: _GuardedFile):
        self.file = file
        self._guard = guard

    def check(self) -> None:
        self._guard.check()


@contextmanager
def new_hdf5_file(out: PathLike) -> Iterator[HDF5Output]:
    """Write a new HDF5 file ``out`` atomically (a temporary beside it, renamed at the end; see
    :func:`robopref.utils.atomic_path`) through a file that survives a full disk.

    Any OSError (a read-only folder, no space left, ...) becomes a one-line
    :class:`DataValidationError` naming ``out``; the temporary file is removed and an existing
    ``out`` is unchanged. Hold the writer lock of ``out`` around it.
    """
    with output_errors(out), atomic_path(out) as tmp:
        guard = _GuardedFile(tmp)
        try:
            with h5py.File(guard, "w", libver=HDF5_LIBVER) as f:
                yield HDF5Output(f, guard)
                guard.check()
            guard.check()  # what HDF5 wrote while closing
        finally:
            guard.close()
