"""Exclusive writer locks for datasets, label files and results stores.

A second robopref process that wants to write a file another one is writing gets a clear
``FileBusyError`` instead of silently losing one of the two results. The lock is an OS-level
lock (``filelock``) on a sibling file ``.NAME.lock``: it is released when the holder exits,
even on ``kill -9``, so a stale lock file never blocks a later run. The (empty) lock file is
left in place: deleting it on release would let two processes lock two different inodes.

The lock is re-entrant within one process: a command that holds it for a whole
read-modify-write (``robopref label``) can call :func:`robopref.data.save_queries`, which takes
it again. It excludes other processes, not other threads of the same process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from robopref.data.trajectory import DataValidationError


class FileBusyError(DataValidationError):
    """Raised when another process holds the writer lock of a file."""


# lock file -> [FileLock, depth] for the locks this process holds (re-entrance).
_held: dict[str, list] = {}
_held_guard = threading.Lock()


def lock_path(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``.NAME.lock`` beside the real (symlink-resolved)
    file, so that two names of one file share one lock."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}.lock")


def holds_lock(path: str | Path) -> bool:
    """Whether this process holds the writer lock of ``path``."""
    with _held_guard:
        return str(lock_path(path)) in _held


@contextmanager
def writer_lock(path: str | Path, *, timeout: float = 0.0, what: str = "write") -> Iterator[None]:
    """Hold the exclusive writer lock of ``path`` for the body of a ``with`` block.

    Re-entrant within a process: a nested ``writer_lock`` of the same file (by any name)
    succeeds at once and the lock is released when the outermost block ends.

    Args:
        path: the file to guard (dataset, label file, results store).
        timeout: seconds to wait for another writer to finish; 0 fails at once.
        what: what this process wants to do, for the error message.

    Raises:
        FileBusyError: another process holds the lock after ``timeout`` seconds.
    """
    key = str(lock_path(path))
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(key, timeout=timeout, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise FileBusyError(
                f"{path}: another robopref process is writing this file (lock {key} held); "
                f"cannot {what} now — wait for it to finish and run again"
            ) from None
        entry = [lock, 1]
        with _held_guard:
            _held[key] = entry
    try:
        yield
    finally:
        with _held_guard:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last:
            entry[0].release()
