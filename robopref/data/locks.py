"""Exclusive writer locks for datasets, label files and results stores.

A second robopref process that wants to write a file another one is writing gets a clear
``FileBusyError`` instead of silently losing one of the two results. The lock is an OS-level
lock (``filelock``) on a sibling file ``.NAME.lock``: it is released when the holder exits,
even on ``kill -9``, so a stale lock file never blocks a later run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from robopref.data.trajectory import DataValidationError


class FileBusyError(DataValidationError):
    """Raised when another process holds the writer lock of a file."""


def lock_path(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``.NAME.lock`` beside the real (symlink-resolved)
    file, so that two names of one file share one lock."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}.lock")


@contextmanager
def writer_lock(path: str | Path, *, timeout: float = 0.0, what: str = "write") -> Iterator[None]:
    """Hold the exclusive writer lock of ``path`` for the body of a ``with`` block.

    Args:
        path: the file to guard (dataset, label file, results store).
        timeout: seconds to wait for another writer to finish; 0 fails at once.
        what: what this process wants to do, for the error message.

    Raises:
        FileBusyError: another process holds the lock after ``timeout`` seconds.
    """
    lock = FileLock(str(lock_path(path)), timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise FileBusyError(
            f"{path}: another robopref process is writing this file (lock {lock_path(path)} "
            f"held); cannot {what} now — wait for it to finish and run again"
        ) from None
    try:
        yield
    finally:
        lock.release()
