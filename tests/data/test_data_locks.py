"""Writer locks: one writer per file across processes, re-entrant within one, shared by every
name of a file, released when the holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from data_factories import vector_dataset

from robopref.data import load_dataset, save_dataset, save_queries
from robopref.data.locks import FileBusyError, holds_lock, lock_path, writer_lock

ROOT = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys\n"
    "from robopref.data.locks import writer_lock\n"
    "with writer_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


def _holder(path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_is_reentrant_in_one_process_and_shared_by_a_symlink(tmp_path):
    path = tmp_path / "d.h5"
    (tmp_path / "link.h5").symlink_to(path)
    assert lock_path(tmp_path / "link.h5") == lock_path(path) == tmp_path / ".d.h5.lock"
    with writer_lock(path):
        with writer_lock(tmp_path / "link.h5"):  # re-entrant, by another name
            save_dataset(vector_dataset(), path)  # takes it a third time
            assert holds_lock(path)
        assert holds_lock(path)
    assert not holds_lock(path)
    assert len(load_dataset(path)) == 3


def test_another_process_holding_the_lock_blocks_writers(tmp_path):
    path = tmp_path / "d.h5"
    save_dataset(vector_dataset(), path)
    before = path.read_bytes()
    holder = _holder(tmp_path / "d.h5")
    try:
        with pytest.raises(FileBusyError, match=r"d\.h5: another robopref process .* save a"):
            save_dataset(vector_dataset(n=2), path)
        with pytest.raises(FileBusyError, match="save labels"):
            save_queries(path, None)
        with pytest.raises(FileBusyError, match="frobnicate"):
            with writer_lock(path, what="frobnicate it"):
                pass
        assert path.read_bytes() == before
        assert not holds_lock(path)  # a failed acquire leaves nothing behind
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the OS drops the lock with the process
        holder.wait()
    save_dataset(vector_dataset(n=2), path)
    assert len(load_dataset(path)) == 2
