"""Tiny dataset files and a subprocess runner shared by the command-line tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robopref.data import Trajectory, TrajectoryDataset, save_dataset
from robopref.teachers import label_queries

ROOT = Path(__file__).resolve().parents[2]


def tiny_dataset(n: int = 6, T: int = 30, seed: int = 0, rewards: bool = True):
    """``n`` trajectories of ``T`` steps, state observations [T, 3], actions [T, 2]; rewards
    are random (or all zero with ``metadata["rewards_recorded"] = False``, like an import
    without a reward key)."""
    rng = np.random.default_rng(seed)
    trajs = [
        Trajectory(
            observations=rng.normal(size=(T, 3)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
            rewards=rng.normal(size=T) if rewards else np.zeros(T),
            task="tiny",
        )
        for _ in range(n)
    ]
    metadata = {} if rewards else {"rewards_recorded": False, "source_format": "lerobot"}
    return TrajectoryDataset(trajs, metadata=metadata)


def tiny_file(path: Path, labels: int = 0, rewards: bool = True, teacher: str = "human") -> Path:
    """Write :func:`tiny_dataset` to ``path``, with ``labels`` stored queries if > 0."""
    ds = tiny_dataset(rewards=rewards)
    if labels:
        ds.queries = label_queries(ds, "oracle", labels, segment_length=5, seed=1)
        ds.queries.teacher = teacher
    save_dataset(ds, path)
    return path


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path | None = None, umask: int | None = None) -> Result:
    """``python -m robopref.cli ARGS`` in a subprocess (this checkout first on the path)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("OMP_NUM_THREADS", "1")
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    p = subprocess.run(
        [sys.executable, "-m", "robopref.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def assert_one_line_error(res: Result, *needles: str) -> str:
    """Exit code 2, no traceback, one non-empty stderr line containing every needle."""
    assert "Traceback" not in res.err + res.out, res.err
    assert res.rc == 2, (res.rc, res.err)
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1, res.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_main(capsys, *args) -> Result:
    """``robopref.cli.main(ARGS)`` in this process (an escaping exception fails the test as a
    traceback would); stdout and stderr from ``capsys``."""
    from robopref.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


@contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[None]:
    """Hold the writer lock of ``path`` in a child process for the body of the block."""
    code = (
        "import sys, time\n"
        "from robopref.data.locks import writer_lock\n"
        "with writer_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "held"
        yield
    finally:
        p.stdin.close()  # the child leaves the block and exits
        p.wait(timeout=60)
