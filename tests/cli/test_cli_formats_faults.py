"""Faults of the format writers (robomimic / LeRobot export, import): the writer lock of the
output, read-only and full destinations, leftovers of killed writers, modes and special files.

Each CLI case runs in a subprocess: exit 2, one line naming the output, no traceback, inputs
unchanged. A full disk is a small tmpfs where this machine lets the test mount one (root);
elsewhere an injected ENOSPC checks the same paths in process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_factory import (
    assert_one_line_error,
    lock_held_elsewhere,
    run_cli,
    tiny_dataset,
    tiny_file,
)

from robopref.data import DataValidationError, load_dataset, save_dataset
from robopref.data.exporters import export_lerobot, export_robomimic
from robopref.data.formats import _common

pytest.importorskip("pyarrow", reason="LeRobot export needs pyarrow")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> list[str]:
    """Everything in ``folder`` but the (empty, kept by design) writer lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A folder nobody may write into: a read-only tmpfs for root, mode 0500 otherwise."""
    if os.geteuid() == 0:
        with _tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
            yield ro
        return
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        yield ro
    finally:
        ro.chmod(0o700)


def test_robomimic_export_takes_the_writer_lock(tmp_path):
    """Two exports to one file, or `label T.h5` during an export, cannot interleave."""
    src = tiny_file(tmp_path / "base.h5", labels=8)
    target = tiny_file(tmp_path / "T.h5", labels=20)
    before = _digest(target), _digest(src)
    with lock_held_elsewhere(target):
        res = run_cli("export", src, target, "--format", "robomimic")
    line = assert_one_line_error(res, str(target), "another robopref process", "export")
    assert "wrote" not in res.out, line
    assert (_digest(target), _digest(src)) == before
    assert len(load_dataset(target).queries) == 20
    assert _listing(tmp_path) == ["T.h5", "base.h5"]


@pytest.mark.parametrize("fmt", ["import", "robomimic", "lerobot"])
def test_read_only_destination_is_blamed_not_the_source(tmp_path, read_only_dir, fmt):
    src = tiny_file(tmp_path / "s.h5", labels=8)
    before = _digest(src)
    out = read_only_dir / ("out" if fmt == "lerobot" else "out.h5")
    if fmt == "import":
        res = run_cli("import", src, out)
    else:
        res = run_cli("export", src, out, "--format", fmt)
    line = assert_one_line_error(res, str(out))
    assert "cannot be read" not in line and "corrupt" not in line, line
    assert "Read-only file system" in line or "ermission denied" in line, line
    assert _digest(src) == before
    assert list(read_only_dir.iterdir()) == []


def _fill(folder: Path, free_kb: int) -> None:
    """Leave about ``free_kb`` KiB free on the file system of ``folder``."""
    usage = shutil.disk_usage(folder)
    (folder / "filler").write_bytes(b"\0" * max(usage.free - free_kb * 1024, 0))


@pytest.mark.parametrize("free_kb", [40, 150])
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, free_kb):
    """import / export --format robomimic / lerobot onto a nearly full file system: one line
    naming the output (h5py once segfaulted here, pyarrow printed a traceback), existing files
    unchanged, no temporary left; the same commands succeed once there is room."""
    src = tiny_file(tmp_path / "s.h5", labels=20)
    big = tmp_path / "big.h5"
    save_dataset(tiny_dataset(n=40, T=400), big)
    with _tmpfs(tmp_path / "fs", "size=3m") as fs:
        keep = fs / "keep.h5"
        shutil.copy(src, keep)
        _fill(fs, free_kb)
        before = _listing(fs), _digest(keep), _digest(big)
        commands = {
            "out.h5": ("import", big, fs / "out.h5"),
            "exp.h5": ("export", big, fs / "exp.h5", "--format", "robomimic"),
            "lr": ("export", big, fs / "lr", "--format", "lerobot"),
        }
        for name, args in commands.items():
            res = run_cli(*args)
            line = assert_one_line_error(res, str(fs / name), "No space left on device")
            assert "cannot be read" not in line
            assert (_listing(fs), _digest(keep), _digest(big)) == before, name
        (fs / "filler").unlink()
        for args in commands.values():
            res = run_cli(*args)
            assert res.rc == 0, res.err
        assert len(load_dataset(fs / "out.h5")) == len(load_dataset(fs / "exp.h5")) == 40
        assert (fs / "lr" / "meta" / "info.json").is_file()


def test_injected_enospc_in_hdf5_and_parquet_writes_names_the_output(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: a write that fails with ENOSPC (and, from pyarrow, with
    no file name) is one DataValidationError naming the output; nothing is left behind."""
    ds = tiny_dataset(n=10, T=200)
    real = os.pwrite
    budget = {"left": 20_000}

    def pwrite(fd, data, offset):
        budget["left"] -= len(data)
        if budget["left"] < 0:
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(_common.os, "pwrite", pwrite)
    with pytest.raises(DataValidationError, match=r"out\.h5: cannot write the output: No space"):
        export_robomimic(ds, tmp_path / "out.h5")
    monkeypatch.setattr(_common.os, "pwrite", real)
    assert _listing(tmp_path) == []

    import pyarrow.parquet as pq

    def write_table(self, table, *args, **kwargs):
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    with pytest.raises(DataValidationError, match=r"lr: cannot write the output: Error writing"):
        export_lerobot(ds, tmp_path / "lr")
    assert _listing(tmp_path) == []


def test_exports_clean_what_killed_exports_left(tmp_path):
    """A killed LeRobot export left its temporary folder, a killed robomimic export a nested
    temporary and its lock: the next export of the same output removes them (and leaves the
    temporaries of live processes and unrelated files alone)."""
    dead, alive = _dead_pid(), os.getppid()
    src = tiny_file(tmp_path / "s.h5", labels=8)
    stale = [
        f".lr.{dead}-0a1b2c3d.tmpdir",
        ".lr.k3j_h5g6",  # the random name older versions used
        f"..T.h5.{dead}-0a1b2c3d.tmp.{dead}-11223344.tmp",
        f"..T.h5.{dead}-0a1b2c3d.tmp.lock",
    ]
    kept = [f".lr.{alive}-0a1b2c3d.tmpdir", ".lr.notours", "lr.txt"]
    for name in stale[:2] + kept[:2]:
        (tmp_path / name / "meta").mkdir(parents=True)
        (tmp_path / name / "data").mkdir()
    for name in stale[2:] + kept[2:]:
        (tmp_path / name).write_bytes(b"x")
    assert run_cli("export", src, tmp_path / "lr", "--format", "lerobot").rc == 0
    assert run_cli("export", src, tmp_path / "T.h5", "--format", "robomimic").rc == 0
    names = set(os.listdir(tmp_path))
    assert not names & set(stale), names & set(stale)
    assert set(kept) <= names
    assert not [n for n in names if n.startswith("..") or n.endswith(".tmp")]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_exported_lerobot_folder_follows_the_umask(tmp_path, umask):
    src = tiny_file(tmp_path / "s.h5", labels=8)
    assert run_cli("export", src, tmp_path / "lr", "--format", "lerobot", umask=umask).rc == 0
    assert run_cli("export", src, tmp_path / "r.h5", "--format", "robomimic", umask=umask).rc == 0
    assert stat.S_IMODE((tmp_path / "lr").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "lr" / "meta" / "info.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "r.h5").stat().st_mode) == 0o666 & ~umask


def test_exporters_refuse_a_special_file_as_output(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataValidationError, match=r"fifo: output: expected a regular file"):
        export_robomimic(tiny_dataset(), fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert _listing(tmp_path) == ["fifo"]
