"""``kill -9`` of ``robopref label`` at random points (issue 13): the dataset is as before or
fully labelled, the writer lock is free again, and a rerun finishes the job."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from cli_factory import ROOT, run_main

from robopref.data import Trajectory, TrajectoryDataset, load_dataset, load_queries, save_dataset
from robopref.data.locks import holds_lock, writer_lock
from robopref.teachers import label_queries

NUM = 4000
ARGS = ["--overwrite", f"num_queries={NUM}", "segment_length=10", "teacher.name=mistake", "seed=3"]


def _dataset(n: int = 40, T: int = 100) -> TrajectoryDataset:
    """Big enough that labelling and rewriting take a noticeable part of the run."""
    rng = np.random.default_rng(0)
    trajs = [
        Trajectory(rng.normal(size=(T, 39)), rng.normal(size=(T, 4)), rng.normal(size=T), task="t")
        for _ in range(n)
    ]
    ds = TrajectoryDataset(trajs)
    ds.queries = label_queries(ds, "oracle", 9, segment_length=5, seed=1)
    return ds


def _start(path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "robopref.cli", "label", str(path), *ARGS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _same_queries(a, b) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("traj_index", "start", "length", "labels", "mask", "confidence")
    ) and (a.teacher, a.seed) == (b.teacher, b.seed)


def _wait_for_temporary(path, proc, timeout: float = 120.0) -> bool:
    """Poll (every ~1 ms) until the writer's temporary ``.NAME.<pid>-*.tmp`` appears; False if
    the process ended first."""
    prefix = f".{path.name}.{proc.pid}-"
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(name.startswith(prefix) for name in os.listdir(path.parent)):
            return True
        time.sleep(0.001)
    return False


def test_kill_9_of_label_leaves_before_or_after(tmp_path, capsys):
    original = tmp_path / "original.h5"
    save_dataset(_dataset(), original)
    before = original.read_bytes()

    # the uninterrupted run: what "fully after" looks like, and when its write starts
    ref = tmp_path / "ref.h5"
    shutil.copy(original, ref)
    t0 = time.monotonic()
    proc = _start(ref)
    assert _wait_for_temporary(ref, proc)
    to_write = time.monotonic() - t0
    assert proc.wait(timeout=300) == 0
    expected = load_queries(ref)
    assert expected.num_queries == NUM and expected.teacher == "mistake"

    # kill points: during start-up or labelling, as the temporary appears (mid-write), and a
    # few random milliseconds into the write
    rng = np.random.default_rng(13)
    points = [("early", rng.uniform(0.2, 0.9) * to_write), ("write", 0.0)]
    points += [("write", rng.uniform(0.0, 0.05))]
    outcomes = []
    for trial, (kind, delay) in enumerate(points):
        path = tmp_path / f"d{trial}.h5"
        shutil.copy(original, path)
        proc = _start(path)
        if kind == "write":
            _wait_for_temporary(path, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.read_bytes() == before:
            outcomes.append(f"{kind}: before")
        else:  # fully after: every label of the uninterrupted run, the trajectories intact
            assert _same_queries(load_queries(path), expected)
            assert len(load_dataset(path)) == len(load_dataset(original))
            outcomes.append(f"{kind}: after")
        assert not holds_lock(path)
        with writer_lock(path):  # free: the OS released the killed process's lock
            pass
        assert run_main(capsys, "label", path, *ARGS).rc == 0  # a rerun finishes the job
        assert _same_queries(load_queries(path), expected)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".d{trial}.h5.")]
        assert leftovers in ([], [f".d{trial}.h5.lock"]), leftovers  # no stale temporary
    print("outcomes:", outcomes)
