"""Benchmark suites: every cell of a (axis x axis x ...) grid of recipe runs, resumable.

A suite YAML names a base recipe config and axes; each axis maps a label to a list of dotted
overrides, and a cell is one label per axis::

    name: pearl-metaworld
    base: configs/pearl/base.yaml
    overrides: [iql.steps=20000]            # applied to every cell
    axes:
      pair:
        button-press->button-press-wall: [source.tasks=[button-press-v3], target.tasks=[button-press-wall-v3]]
        drawer-open->drawer-close: [source.tasks=[drawer-open-v3], target.tasks=[drawer-close-v3]]
      seed: {"0": [seed=0], "1": [seed=1]}

Cells run in parallel worker processes (``jobs``) or on Ray (``ray_address``). Every finished
cell appends its rows to ``<store>/results.jsonl`` (one JSON object per line, written with a
flush + fsync so a killed run loses at most the cells in flight); a rerun skips cells whose id
and config hash are already there.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml
from pydantic import Field

from robopref.config import ConfigError, StrictModel

RESULTS_FILE = "results.jsonl"


class SuiteConfig(StrictModel):
    name: str
    base: str
    overrides: list[str] = Field(default_factory=list)
    axes: dict[str, dict[str, list[str]]]


def load_suite(path: str | Path) -> SuiteConfig:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"suite file '{path}' does not exist") from e
    suite = SuiteConfig.model_validate(data)
    base = Path(suite.base)
    if not base.is_absolute() and not base.exists():
        # relative to the repository root (where configs/ lives) when not relative to the cwd
        candidate = Path(__file__).resolve().parents[2] / base
        if candidate.exists():
            suite = suite.model_copy(update={"base": str(candidate)})
    return suite


def cells(suite: SuiteConfig) -> Iterator[tuple[str, dict[str, str], list[str]]]:
    """Yield ``(cell_id, labels, overrides)`` for every combination of axis labels."""
    names = list(suite.axes)
    # the last axis is the outermost loop: with a seed axis last, every task gets seed 0 before
    # any task gets seed 1, so a partial run still covers the whole table
    for reversed_combo in itertools.product(*(suite.axes[n].items() for n in reversed(names))):
        combo = reversed_combo[::-1]
        labels = {n: str(label) for n, (label, _) in zip(names, combo)}
        overrides = list(suite.overrides) + [o for _, ovs in combo for o in ovs]
        cell_id = ",".join(f"{n}={labels[n]}" for n in names)
        yield cell_id, labels, overrides


def config_hash(base: str, overrides: list[str]) -> str:
    text = Path(base).read_text() + "\n" + "\n".join(overrides)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_results(store: str | Path) -> list[dict]:
    """All rows in a results store (a torn last line from a killed run is ignored)."""
    path = Path(store) / RESULTS_FILE
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _append_rows(store: Path, rows: list[dict]) -> None:
    path = store / RESULTS_FILE
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        if torn:  # a run killed mid-line left a partial row: end it so the next row stays whole
            f.write("\n")
        for row in rows:
            f.write(json.dumps(row, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _versions() -> dict[str, str]:
    import numpy
    import torch

    import robopref

    return {
        "robopref": robopref.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def run_cell(base: str, overrides: list[str], out_dir: str) -> tuple[dict, float]:
    """Run one cell in this process; returns the recipe's metrics and the wall time (s)."""
    from robopref.cli import run_config

    started = time.time()
    metrics = run_config(base, overrides, out_dir)
    return metrics, time.time() - started


def _rows_of(cell_id: str, labels: dict, chash: str, metrics: dict, wall: float) -> list[dict]:
    common = {
        "cell": cell_id,
        **labels,
        "config_hash": chash,
        "wall_s": round(wall, 1),
        "versions": _versions(),
    }
    inner = metrics.get("rows") if isinstance(metrics, dict) else None
    if inner:
        return [{**common, **row, "cell_wall_s": round(wall, 1)} for row in inner]
    return [{**common, **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}]


def run_suite(
    suite: SuiteConfig,
    store: str | Path,
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run every cell not yet in ``store``; return all rows of the store afterwards."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    done = {(r["cell"], r["config_hash"]) for r in read_results(store)}
    todo = []
    for cell_id, labels, overrides in cells(suite):
        chash = config_hash(suite.base, overrides)
        if (cell_id, chash) not in done:
            out_dir = store / "cells" / cell_id.replace("/", "_").replace(">", "").replace("=", "-")
            todo.append((cell_id, labels, overrides, chash, str(out_dir)))
    total = len(list(cells(suite)))
    if progress:
        print(f"suite {suite.name}: {total - len(todo)} of {total} cells done, running {len(todo)}")
    if ray_address is not None:
        _run_on_ray(suite, store, todo, ray_address)
    elif jobs <= 1:
        for cell_id, labels, overrides, chash, out_dir in todo:
            metrics, wall = run_cell(suite.base, overrides, out_dir)
            _append_rows(store, _rows_of(cell_id, labels, chash, metrics, wall))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(run_cell, suite.base, ovs, out): (cid, lab, ch)
                for cid, lab, ovs, ch, out in todo
            }
            for fut in as_completed(futures):
                cid, lab, ch = futures[fut]
                metrics, wall = fut.result()
                _append_rows(store, _rows_of(cid, lab, ch, metrics, wall))
    return read_results(store)


def _run_on_ray(suite: SuiteConfig, store: Path, todo: list, ray_address: str) -> None:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--ray-address needs Ray: pip install -e '.[ray]'") from e
    ray.init(address=None if ray_address == "local" else ray_address, ignore_reinit_error=True)
    remote = ray.remote(run_cell)
    refs = {remote.remote(suite.base, ovs, out): (cid, lab, ch) for cid, lab, ovs, ch, out in todo}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        cid, lab, ch = refs[ready[0]]
        metrics, wall = ray.get(ready[0])
        _append_rows(store, _rows_of(cid, lab, ch, metrics, wall))
