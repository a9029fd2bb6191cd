"""Small helpers every room may use: devices, seeds and atomic file writes.

Nothing here knows about robots, models or losses; torch is imported lazily so that
``robopref.data`` (numpy + h5py only) can use :func:`atomic_path` without pulling torch in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def resolve_device(device: str = "auto"):
    """Return a ``torch.device``: ``"auto"`` picks CUDA when present, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch (if imported) and return a fresh numpy Generator."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import sys

    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return np.random.default_rng(seed)


_TMP_SUFFIX = ".tmp"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files ``.NAME.<pid>-<hex>.tmp`` that :func:`atomic_path` left
    beside ``path`` when the process ``<pid>`` was killed mid-write (it no longer runs).

    Temporaries of live processes, and files named otherwise, are left alone. Returns the
    removed paths.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[0-9a-f]+{re.escape(_TMP_SUFFIX)}$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    A crash or exception inside the block leaves ``path`` untouched (the old file, or none)
    and removes the temporary file, so readers never see a half-written dataset or checkpoint.

    * A symlink ``path`` stays a symlink: its target is written.
    * The new file gets the mode of the file it replaces, else ``0666 & ~umask`` (what
      ``open(path, "w")`` gives), not the ``0600`` of a private temporary file.
    * The temporary is ``.NAME.<pid>-<hex>.tmp``; ones left by killed processes (the pid is
      gone) are removed here, by the next writer of ``path``.

    Raises:
        IsADirectoryError: ``path`` is a directory (before anything is written).
    """
    path = Path(os.path.realpath(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    while True:
        tmp_path = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:  # O_EXCL: never reuse a name; mode 0o666 is masked by the umask like open(..., "w")
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
