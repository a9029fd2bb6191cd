"""Benchmark suites: every cell of a (axis x axis x ...) grid of recipe runs, resumable.

A suite YAML names a base recipe config and axes; each axis maps a label to a list of dotted
overrides, and a cell is one label per axis::

    name: pearl-metaworld
    base: pearl/base                        # relative to this file, else a packaged config
    overrides: [iql.steps=20000]            # applied to every cell
    axes:
      pair:
        button-press->button-press-wall: [source.tasks=[button-press-v3], target.tasks=[button-press-wall-v3]]
        drawer-open->drawer-close: [source.tasks=[drawer-open-v3], target.tasks=[drawer-close-v3]]
      seed: {"0": [seed=0], "1": [seed=1]}

Cells run in parallel worker processes (``jobs``; they die with the ``bench`` process, even on
``kill -9``) or on Ray (``ray_address``). Every finished cell appends its rows to
``<store>/results.jsonl`` at once (one JSON object per line, one write + fsync per cell, each row
saying how many rows its cell has), so a killed run loses at most the cells in flight; a rerun
skips cells whose id and config hash are already there. One run at a time may write a store (a
writer lock). When a cell's config changed (base config or overrides), its old rows move to
``superseded.jsonl`` and the cell runs again; recipes key the outputs they keep in a cell's folder
by what made them (:class:`robopref.methods.common.Stage`), so nothing stale is reused.

Each cell's run returns a :class:`~robopref.methods.result.RunResult`; its ``rows`` are what the
store keeps, and its :class:`~robopref.methods.result.ReportSpec` (which metrics, how rows are
grouped and ordered, the chance and control lines of the plots) is recorded as
``<store>/report.json`` for ``robopref report``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import importlib.metadata
import itertools
import json
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml
from pydantic import Field, field_validator

from robopref.config import (
    ConfigError,
    StrictModel,
    resolve_config_path,
    validate_config,
    yaml_problem,
)
from robopref.data.locks import writer_lock
from robopref.methods.result import ReportSpec, RunResult
from robopref.methods.run import load_run_config, run_config
from robopref.progress import bar, set_quiet
from robopref.utils import atomic_path

RESULTS_FILE = "results.jsonl"
SUPERSEDED_FILE = "superseded.jsonl"  # rows of cells that were run again with a changed config
SPEC_FILE = "report.json"  # the recipe's ReportSpec: how `robopref report` reads the rows
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class SuiteConfig(StrictModel):
    name: str = Field(min_length=1)
    """The suite's name (the default store is ``runs/bench/<name>``)."""
    base: str
    """The recipe config every cell starts from: a path relative to the suite file, or a
    packaged config's name (``pearl/base``)."""
    overrides: list[str] = Field(default_factory=list)
    """Dotted overrides applied to every cell."""
    axes: dict[str, dict[str, list[str]]] = Field(min_length=1)
    """Axis -> label -> the overrides of that label; a cell is one label per axis."""

    @field_validator("axes", mode="before")
    @classmethod
    def _labels_as_text(cls, axes: object) -> object:
        # `seed: {0: [seed=0]}` reads label 0 as an int; a label is a name, keep it as text
        if isinstance(axes, dict):
            return {
                k: {str(lab): v for lab, v in labels.items()}
                if isinstance(labels, dict)
                else labels
                for k, labels in axes.items()
            }
        return axes


def load_suite(path: str | Path) -> SuiteConfig:
    """Read and check a suite YAML; every problem is a one-line :class:`ConfigError` naming the
    file and the field (the base config must exist and be a YAML mapping)."""
    path = resolve_config_path(path, what="suite file")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"suite file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"suite file '{path}' is a folder, expected a YAML file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"suite file '{path}': {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"suite file '{path}': expected a mapping at the top level")
    suite = validate_config(SuiteConfig, data, str(path))
    for axis, labels in suite.axes.items():
        if not labels:
            raise ConfigError(
                f"suite file '{path}': field 'axes.{axis}': expected at least one label"
            )
    suite = suite.model_copy(update={"base": str(_resolve_base(path, suite.base))})
    _check_base(path, suite.base)
    return suite


def _resolve_base(suite_path: Path, base: str) -> Path:
    """``base:`` relative to the suite file's folder first, else a path or a packaged config's
    name (``pearl/base``)."""
    beside = Path(suite_path).resolve().parent / base
    if not Path(base).is_absolute() and beside.exists():
        return beside
    try:
        return resolve_config_path(base)
    except ConfigError as e:
        raise ConfigError(f"suite file '{suite_path}': field 'base': {e}") from None


def _check_base(suite_path: str | Path, base: str) -> None:
    try:
        data = yaml.safe_load(Path(base).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(
            f"suite file '{suite_path}': field 'base': config file '{base}' does not exist"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"base config '{base}': {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"base config '{base}': expected a mapping at the top level")


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


def _parse_lines(path: Path) -> tuple[list[dict], int]:
    """Rows of a results file and the byte offset where its complete lines end.

    A last line without its newline that is not valid JSON is the torn write of a killed run: it
    is left out. Any other line that is not a JSON object is an error naming the file and line.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            row = None
        if not isinstance(row, dict):
            raise ConfigError(
                f"{path} line {number}: expected a JSON object (one result row), "
                f"found {line[:60].decode(errors='replace')!r}"
            )
        rows.append(row)
    end = len(data) - len(torn)
    if torn.strip():
        try:
            row = json.loads(torn)
        except (json.JSONDecodeError, UnicodeDecodeError):
            row = None
        if isinstance(row, dict):  # complete, only its newline is missing
            rows.append(row)
            end = len(data)
    return rows, end


def read_results(store: str | Path) -> list[dict]:
    """All complete rows in a results store, in file order.

    Raises :class:`ConfigError` for a line that is not a JSON object (a torn last line from a
    killed run is left out). Rows of a cell whose run was killed while its rows were being
    written (fewer than the ``cell_rows`` it announced) are left out too.
    """
    path = Path(store) / RESULTS_FILE
    if not path.exists():
        return []
    rows, _ = _parse_lines(path)
    complete = _complete_cells(rows)
    return [r for r in rows if _key(r) in complete]


def _key(row: dict) -> tuple[str, str]:
    return str(row.get("cell")), str(row.get("config_hash"))


def _complete_cells(rows: list[dict]) -> set[tuple[str, str]]:
    """(cell, config hash) of every cell with all its rows; rows without ``cell_rows`` (older
    stores, hand-written rows) count as complete."""
    count: dict[tuple[str, str], int] = {}
    expected: dict[tuple[str, str], int] = {}
    for r in rows:
        k = _key(r)
        count[k] = count.get(k, 0) + 1
        n = r.get("cell_rows")
        expected[k] = n if isinstance(n, int) else 0
    return {k for k, c in count.items() if c >= expected[k]}


def _tidy_store(store: Path, current: dict[str, str], progress: bool) -> set[tuple[str, str]]:
    """Before a run (under the store's writer lock): drop the torn tail and the rows of
    half-written cells, and move rows of this suite's cells made with another config (the base
    config or the cell's overrides changed since) to ``superseded.jsonl``, so that the report
    never mixes two configs in one cell. Returns the (cell, hash) pairs that are done."""
    path = store / RESULTS_FILE
    if not path.exists():
        return set()
    rows, end = _parse_lines(path)
    complete = _complete_cells(rows)
    keep = [
        r for r in rows if _key(r) in complete and current.get(_key(r)[0], _key(r)[1]) == _key(r)[1]
    ]
    stale = [
        r for r in rows if _key(r) in complete and current.get(_key(r)[0], _key(r)[1]) != _key(r)[1]
    ]
    if len(keep) == len(rows) and end == path.stat().st_size:
        return {_key(r) for r in keep}
    if stale:
        _append_rows(store, stale, name=SUPERSEDED_FILE)
        if progress:
            cells_ = sorted({r["cell"] for r in stale})
            print(
                f"suite: {len(cells_)} cell(s) were run with another config; their rows moved to "
                f"{store / SUPERSEDED_FILE} and they run again"
            )
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in keep))
    return {_key(r) for r in keep}


def _append_rows(store: Path, rows: list[dict], name: str = RESULTS_FILE) -> None:
    """Append ``rows`` with one write (and fsync). A kill during the write can leave a torn last
    line or a cell with fewer rows than its ``cell_rows``; readers leave both out and the next
    run removes them and runs the cell again."""
    path = store / name
    data = "".join(json.dumps(row, default=float) + "\n" for row in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size > 0 and _last_byte(path) != b"\n":
            # a torn line from a killed run (a run tidies it away first): end it so that these
            # rows stay whole; readers then name that line as broken
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


@functools.cache
def _versions() -> dict[str, str]:
    import robopref

    def installed(name: str) -> str:
        # read from the installed package's metadata: importing torch just for its version
        # costs seconds in a process that only records rows
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "robopref": robopref.__version__,
        "torch": installed("torch"),
        "numpy": installed("numpy"),
        "python": platform.python_version(),
    }


def run_cell(base: str, overrides: list[str], out_dir: str) -> tuple[RunResult, float]:
    """Run one cell in this process; returns the recipe's result and the wall time (s)."""
    started = time.time()
    result = run_config(base, overrides, out_dir, announce=False)
    return result, time.time() - started


def _rows_of(cell_id: str, labels: dict, chash: str, result: RunResult, wall: float) -> list[dict]:
    common = {
        "cell": cell_id,
        **labels,
        "config_hash": chash,
        "wall_s": round(wall, 1),
        "versions": _versions(),
    }
    if result.rows:
        rows = [{**common, **row, "cell_wall_s": round(wall, 1)} for row in result.rows]
    else:  # a recipe without rows: its run-level numbers
        summary = {k: v for k, v in result.summary.items() if isinstance(v, (int, float, str))}
        rows = [{**common, **summary}]
    # how many rows this cell wrote: a cell killed half-way through its write is not "done"
    return [{**row, "cell_rows": len(rows)} for row in rows]


def load_spec(store: str | Path) -> ReportSpec | None:
    """The recipe's :class:`ReportSpec` recorded in a store (None for a store without one)."""
    try:
        data = json.loads((Path(store) / SPEC_FILE).read_text())
        return ReportSpec(**data["report"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{Path(store) / SPEC_FILE}: not a report spec ({e})") from None


def _record(store: Path, cell_id: str, labels: dict, chash: str, result, wall: float) -> None:
    """Append a finished cell's rows; record its recipe's ReportSpec when it is new."""
    _append_rows(store, _rows_of(cell_id, labels, chash, result, wall))
    body = {"method": result.method, "report": dataclasses.asdict(result.report)}
    path = store / SPEC_FILE
    text = json.dumps(body, indent=1) + "\n"
    if not path.exists() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def _die_with_parent(parent: int) -> None:
    """Worker-process initializer: the worker ends when the ``bench`` process that started it
    ends, even on ``kill -9`` (which runs no clean-up in the parent). On Linux the kernel sends
    SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread polls the
    parent's pid once a second."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="robopref-parent-watch").start()


def _check_cells(suite: SuiteConfig, todo: list) -> None:
    """Validate every cell's config before any cell runs: a bad override in the last cell must
    not fail a suite after hours of work."""
    for cell_id, _, overrides, _, _ in todo:
        try:
            load_run_config(suite.base, overrides)
        except ConfigError as e:
            raise ConfigError(f"suite {suite.name}, cell {cell_id}: {e}") from None


def run_suite(
    suite: SuiteConfig,
    store: str | Path,
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run every cell not yet in ``store``; return all rows of the store afterwards.

    Only one process at a time may run into a store (its writer lock; a second one gets a
    :class:`~robopref.data.locks.FileBusyError`). Each cell's rows are appended as soon as the
    cell finishes, so a killed run loses only the cells in flight and a rerun runs only those.
    """
    if jobs < 1:
        raise ConfigError(f"jobs: expected at least 1, found {jobs}")
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise ConfigError(f"store '{store}': expected a folder, found a file")
    store.mkdir(parents=True, exist_ok=True)
    with writer_lock(store / RESULTS_FILE, what=f"run suite {suite.name} into {store}"):
        grid = [
            (cell_id, labels, overrides, config_hash(suite.base, overrides))
            for cell_id, labels, overrides in cells(suite)
        ]
        done = _tidy_store(store, {cid: ch for cid, _, _, ch in grid}, progress)
        todo = [
            (cid, lab, ovs, ch, str(store / "cells" / _folder(cid)))
            for cid, lab, ovs, ch in grid
            if (cid, ch) not in done
        ]
        _check_cells(suite, todo)
        if progress:
            print(
                f"suite {suite.name}: {len(grid) - len(todo)} of {len(grid)} cells done, "
                f"running {len(todo)}"
            )
        label = f"bench[{suite.name}]"
        with bar(
            len(grid), label, unit="cell", initial=len(grid) - len(todo), enabled=progress
        ) as b:

            def finished(cid: str, lab: dict, ch: str, result: RunResult, wall: float) -> None:
                _record(store, cid, lab, ch, result, wall)
                b.update(1)

            if ray_address is not None:
                _run_on_ray(suite, todo, ray_address, finished)
            elif jobs <= 1 or len(todo) <= 1:
                for cell_id, labels, overrides, chash, out_dir in todo:
                    finished(cell_id, labels, chash, *run_cell(suite.base, overrides, out_dir))
            else:
                _run_in_processes(suite, todo, jobs, finished)
        return read_results(store)


def _folder(cell_id: str) -> str:
    return cell_id.replace("/", "_").replace(">", "").replace("=", "-")


def _worker_start(parent: int) -> None:
    """Worker-process initializer: die with the parent; no progress bars of their own (cells
    side by side would garble the terminal; the bench bar counts them)."""
    _die_with_parent(parent)
    set_quiet(True)


def _run_in_processes(suite: SuiteConfig, todo: list, jobs: int, finished: Callable) -> None:
    """Run ``todo`` on ``jobs`` worker processes that die with this one; record each cell as it
    finishes (``finished``). After a failed cell no new cell starts, the running ones finish and
    are recorded, then the first error is raised (with the cell's id). Ctrl-C stops the workers
    at once."""
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_start, initargs=(os.getpid(),))
    failed: BaseException | None = None
    try:
        futures = {
            pool.submit(run_cell, suite.base, ovs, out): (cid, lab, ch)
            for cid, lab, ovs, ch, out in todo
        }
        for fut in as_completed(futures):
            if fut.cancelled():
                continue
            cid, lab, ch = futures[fut]
            try:
                result, wall = fut.result()
            except Exception as e:
                if failed is None:
                    e.add_note(f"in cell {cid} of suite {suite.name}")
                    failed = e
                    for other in futures:
                        other.cancel()
                continue
            finished(cid, lab, ch, result, wall)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        raise
    pool.shutdown(wait=True)
    if failed is not None:
        raise failed


def _run_on_ray(suite: SuiteConfig, todo: list, ray_address: str, finished: Callable) -> None:
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
        finished(cid, lab, ch, *ray.get(ready[0]))
