"""The recipe skeleton: what every recipe does before its work, its resumable stages, and the
typed result every run ends with.

A recipe reads top to bottom as

    out_dir, rng = start_run(config, out_dir)
    data = Stage("collect[target]", out_dir / "target.h5", key=config.target).run(
        make=lambda: collect_dataset(config.target), save=save_dataset, load=load_dataset)
    reward = Stage("reward[pearl]", out_dir / "ckpt/reward-pearl", key=..., after=[data]).folder()
    ...
    return RunResult(method="pearl", rows=rows, tables={"main": Table(...)}, ...)

and ``run_config`` saves the result (``results.json``, ``report.md``) and prints it the same
way for every recipe (:mod:`robopref.methods.result`).

**Stages.** A stage is one step whose output lives in the run folder (a file or a folder of
checkpoints) and that a rerun into the same folder reuses instead of redoing. Its output is
valid only for what made it: the config sections that decide it (``key``), the content of the
input files it reads (``reads``: a changed file under the same path makes it again) and the
stages it reads (``after``). Each stage writes a sidecar ``NAME.config.json`` recording these;
the record of an upstream stage carries a ``made`` token that changes whenever it is made again,
so staleness runs down the chain by itself: once one stage is remade, every stage after it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

from robopref.config import StrictModel, save_config
from robopref.methods.result import Column, ReportSpec, RunResult, Table
from robopref.utils import atomic_path, seed_everything

T = TypeVar("T")

__all__ = [
    "Column",
    "ReportSpec",
    "RunResult",
    "Stage",
    "Table",
    "file_fingerprint",
    "start_run",
]


def start_run(config: StrictModel, out_dir: str | Path) -> tuple[Path, np.random.Generator]:
    """Create ``out_dir``, save ``config`` as ``out_dir/config.yaml``, apply the config's
    ``num_threads`` (torch intra-op threads, when set) and seed Python, numpy and torch with its
    ``seed`` (0 when it has none). Returns ``(out_dir, rng)``, ``rng`` a generator of that seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    num_threads = getattr(config, "num_threads", None)
    if num_threads:
        import numba
        import torch

        # the Numba OT kernels too: one process per seed must not run 2 threads in its transfer.
        # Numba first: starting its OpenMP pool resets the OpenMP thread count torch reads.
        numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
        torch.set_num_threads(num_threads)
    return out_dir, seed_everything(getattr(config, "seed", 0))


# ---- fingerprints --------------------------------------------------------------------------

_CHUNK = 1 << 20
_fingerprints: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> sha256


def file_fingerprint(path: str | Path) -> str:
    """sha256 (hex) of a file's content, or of a folder's files (relative names and contents).

    Stage records key on it, so a file replaced under the same path (same name, other data)
    makes every stage that read it again. Memoised per (path, size, mtime) within a process."""
    path = Path(os.path.realpath(path))
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode() + b"\0")
            digest.update(file_fingerprint(child).encode())
        return digest.hexdigest()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _fingerprints:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _fingerprints[memo] = digest.hexdigest()
    return _fingerprints[memo]


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(old.get(key), new.get(key), where)
        return out
    if old == new:
        return []
    short = [v if len(repr(v)) <= 40 else "..." for v in (old, new)]
    return [f"{prefix or '<all>'}: {short[0]!r} -> {short[1]!r}"]


# ---- stages ---------------------------------------------------------------------------------


@dataclass
class Stage(Generic[T]):
    """One resumable step of a recipe.

    Args:
        name: label for progress and messages, e.g. ``"reward[pearl]"``.
        path: the file (or, for :meth:`folder`, the folder) the stage writes in the run folder.
        key: what decides the output: config sections (pydantic models, dicts, lists of them).
            Leave out what does not change the result (worker counts, devices, step counts a
            longer run resumes from).
        reads: input files or folders outside the run folder; their contents are part of the
            key (:func:`file_fingerprint`).
        after: stages whose outputs this one reads; resolve them first.
        resume: False makes the stage every time (a config's ``resume: false``).
    """

    name: str
    path: Path
    key: Any = None
    reads: Sequence[str | Path] = ()
    after: Sequence[Stage] = ()
    resume: bool = True
    _made: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def record_path(self) -> Path:
        """``dir/NAME.config.json``: the record of what made ``dir/NAME``."""
        return self.path.with_name(self.path.name + ".config.json")

    def record(self) -> dict:
        """What this stage's output must have been made from (JSON-able)."""
        for stage in self.after:
            if stage._made is None:
                raise RuntimeError(f"stage {self.name}: resolve stage {stage.name} first")
        return {
            "config": _plain(self.key),
            "files": {str(p): file_fingerprint(p) for p in self.reads},
            "after": {s.name: s._made for s in self.after},
        }

    def is_current(self) -> bool:
        """Whether the output exists and its record matches :meth:`record`. When it exists but
        does not match, one line on stderr says why (a rerun visibly makes it again)."""
        if not self.resume or not self.path.exists():
            return False
        expected = self.record()
        try:
            old = json.loads(self.record_path.read_text())
            recorded, made = old["sha256"], old["made"]
        except FileNotFoundError:
            return self._note("no record of what made it")
        except (ValueError, KeyError, TypeError):
            return self._note(f"unreadable {self.record_path.name}")
        if recorded != _sha256(expected):
            diff = _differences({k: old.get(k) for k in expected}, expected)
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            return self._note(f"made from other inputs ({shown})")
        self._made = made
        return True

    def _note(self, why: str) -> bool:
        print(f"robopref: {self.name} ({self.path}): {why}; making it again", file=sys.stderr)
        return False

    def forget(self) -> None:
        """Drop the record before the output is rewritten: a run killed while it writes leaves
        an output without a record, which is never reused."""
        self.record_path.unlink(missing_ok=True)
        self._made = None

    def done(self) -> None:
        """Record (atomically) that the output was just made from :meth:`record`."""
        expected = self.record()
        made = secrets.token_hex(8)
        with atomic_path(self.record_path) as tmp:
            body = {**expected, "sha256": _sha256(expected), "made": made}
            tmp.write_text(json.dumps(body, indent=1, sort_keys=True, default=str) + "\n")
        self._made = made

    def run(
        self, make: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]
    ) -> T:
        """Load the output when it is current; otherwise ``make()`` it, ``save`` it and record."""
        if self.is_current():
            return load(self.path)
        self.forget()
        value = make()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save(value, self.path)
        self.done()
        return value

    def folder(self) -> Path:
        """A folder of resumable checkpoints: kept when current (a killed run resumes from
        it), emptied when other inputs made it, then recorded. Returns the folder."""
        if self.path.exists() and not self.is_current():
            self.forget()
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if self._made is None:
            self.done()
        return self.path
