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
import shutil
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


class OutputPathError(ValueError):
    """An output path that must not be written: an existing special file (FIFO, device node,
    socket), a folder where a file is expected or the reverse, or a read-only file."""


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def check_output_path(
    path: str | os.PathLike,
    *,
    expect: str = "file",
    flag: str = "output",
    overwrite: bool | None = None,
) -> None:
    """Refuse, before any work, an output ``path`` that a writer must not replace.

    An existing ``path`` (symlinks followed) must be what ``expect`` says: ``"file"`` a
    regular file, ``"folder"`` a folder. A FIFO, device node (``/dev/null``) or socket is never
    replaced: renaming a new file over it would break every other user of it.

    Args:
        flag: how the user named the path (``"--out"``, ``"OUT"``), for the message.
        overwrite: None: an existing file may be replaced; False: an existing file is refused
            (pass ``--overwrite``); True: it is replaced, read-only or not. Without
            ``overwrite=True`` a read-only file (no write permission bit) is refused.

    Raises:
        OutputPathError: one line naming ``path`` and ``flag``, expected vs found.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:  # e.g. a path through a file: ENOTDIR
        raise OutputPathError(f"{path}: {flag}: cannot be written ({e.strerror})") from None
    if st is None:
        parent = next((a for a in p.absolute().parents if a.exists()), None)
        if parent is not None and not parent.is_dir():
            raise OutputPathError(
                f"{path}: {flag}: expected a path inside a folder, found '{parent}', "
                "which is not a folder"
            )
        return
    want = "a regular file" if expect == "file" else "a folder"
    if expect == "file" and not stat.S_ISREG(st.st_mode):
        raise OutputPathError(
            f"{path}: {flag}: expected {want} (or a new path), found {_kind_of(st.st_mode)}; "
            "nothing was written"
        )
    if expect == "folder" and not stat.S_ISDIR(st.st_mode):
        kind = "a regular file" if stat.S_ISREG(st.st_mode) else _kind_of(st.st_mode)
        raise OutputPathError(
            f"{path}: {flag}: expected {want} (or a new path), found {kind}; nothing was written"
        )
    if expect != "file" or overwrite is True:
        return
    if overwrite is False:
        raise OutputPathError(
            f"{path}: {flag}: the file exists; pass --overwrite to replace it (nothing was written)"
        )
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise OutputPathError(
            f"{path}: {flag}: the file is read-only (mode {stat.S_IMODE(st.st_mode):04o}); pass "
            "--overwrite to replace it anyway, or make it writable (nothing was written)"
        )


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this one, or another user's, counts): a temporary file
    named after a process that is gone was left by a killed writer."""
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
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


#: Free bytes below which a failed write is taken for a full disk (a failing write fills the
#: file system to within a few pages before it fails).
_FULL_DISK_SLACK = 1 << 20


def _raise_if_disk_full(error: Exception, tmp_path: Path, path: Path) -> None:
    """Re-raise a writer's error that comes from a full file system as ``OSError(ENOSPC)``
    naming ``path`` (not the temporary); return otherwise. torch.save reports a full disk as a
    RuntimeError and h5py as an OSError without errno, so those count when the file system
    is (nearly) full: checked while the temporary still takes its space."""
    full = (errno.ENOSPC, errno.EDQUOT)
    if isinstance(error, OSError) and error.filename == str(path):
        return  # already about the target
    if isinstance(error, OSError) and error.errno in full:
        pass
    elif isinstance(error, RuntimeError) or (isinstance(error, OSError) and error.errno is None):
        try:
            if shutil.disk_usage(tmp_path.parent).free >= _FULL_DISK_SLACK:
                return
        except OSError:
            return
    else:
        return
    raise OSError(
        errno.ENOSPC,
        os.strerror(errno.ENOSPC),
        str(path),
    ) from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    A crash or exception inside the block leaves ``path`` untouched (the old file, or none)
    and removes the temporary file, so readers never see a half-written dataset or checkpoint.

    * A symlink ``path`` stays a symlink: its target is written.
    * The new file gets the mode of the file it replaces, else ``0666 & ~umask`` (what
      ``open(path, "w")`` gives), not the ``0600`` of a private temporary file. The mode is
      set after the block, so a read-only (0444) original does not make the temporary
      unwritable for the writer.
    * The temporary is ``.NAME.<pid>-<hex>.tmp``; ones left by killed processes (the pid is
      gone) are removed here, by the next writer of ``path``.

    Raises:
        IsADirectoryError: ``path`` is a directory (before anything is written).
        OutputPathError: ``path`` is a FIFO, device node or socket (never replaced).
    """
    path = Path(os.path.realpath(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(path))
    check_output_path(path, overwrite=True)
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
        except OSError as e:  # the user knows the target, not the temporary's name
            raise OSError(
                e.errno, f"cannot create a file beside it: {e.strerror}", str(path)
            ) from e
    os.close(fd)
    try:
        try:
            yield tmp_path
        except Exception as e:
            _raise_if_disk_full(e, tmp_path, path)
            raise
        if mode is not None:
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
