"""What every recipe does before its work (the run folder, the saved config, threads, seeds) and
the config-keyed cache of files a recipe reuses from its run folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from robopref.config import StrictModel, save_config
from robopref.utils import atomic_path, seed_everything

T = TypeVar("T")


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


# ---- cached files inside a run folder ---------------------------------------------------------
# A recipe may reuse a file it wrote into its run folder earlier (collected data, checkpoints) so
# that a rerun resumes. Such a file is only valid for the config that produced it: each one gets
# a sidecar ``NAME.config.json`` recording that config and its sha256, and a file whose sidecar is
# missing or records another config is made again, never reused.


def _plain(producer: BaseModel | dict) -> dict:
    return producer.model_dump(mode="json") if isinstance(producer, BaseModel) else producer


def config_sha256(producer: BaseModel | dict) -> str:
    """sha256 (hex) of a config (section) as canonical JSON: equal configs, equal hashes."""
    text = json.dumps(_plain(producer), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sidecar_path(path: str | Path) -> Path:
    """``dir/NAME.config.json``: the record of the config that produced ``dir/NAME``."""
    path = Path(path)
    return path.with_name(path.name + ".config.json")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(old.get(key), new.get(key), where)
        return out
    return [] if old == new else [f"{prefix or '<all>'}: {old!r} -> {new!r}"]


def cache_is_valid(path: str | Path, producer: BaseModel | dict, what: str = "") -> bool:
    """Whether ``path`` exists and was produced by ``producer`` (per its sidecar).

    When the file exists but cannot be reused (no sidecar: an older robopref or a file put there
    by hand; or a sidecar of another config) a one-line note saying why goes to stderr, so that a
    rerun into an earlier run's folder visibly makes its data again instead of silently reusing
    it. Callers then make the file again and call :func:`mark_cache`.
    """
    path = Path(path)
    if not path.exists():
        return False
    side = sidecar_path(path)
    label = f"{what} {path}".strip()
    try:
        record = json.loads(side.read_text())
        recorded, old = record["sha256"], record.get("config", {})
    except FileNotFoundError:
        print(f"robopref: {label}: no record of the config that made it; making it again",
              file=sys.stderr)  # fmt: skip
        return False
    except (ValueError, KeyError, TypeError):
        print(f"robopref: {label}: unreadable {side.name}; making it again", file=sys.stderr)
        return False
    if recorded == config_sha256(producer):
        return True
    diff = _differences(old, _plain(producer))
    shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
    print(f"robopref: {label} was made by another config ({shown}); making it again",
          file=sys.stderr)  # fmt: skip
    return False


def forget_cache(path: str | Path) -> None:
    """Remove the sidecar of ``path`` (before ``path`` is rewritten: a run killed while it
    writes the new file then leaves a file without a record, which is never reused)."""
    sidecar_path(path).unlink(missing_ok=True)


def mark_cache(path: str | Path, producer: BaseModel | dict) -> None:
    """Record (atomically) that ``path`` was just produced by ``producer``."""
    record = {"sha256": config_sha256(producer), "config": _plain(producer)}
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def cached(
    path: str | Path,
    producer: BaseModel | dict,
    make: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    what: str = "",
) -> T:
    """Load ``path`` when ``producer`` made it; otherwise ``make()`` it, ``save`` it and record
    ``producer`` beside it."""
    path = Path(path)
    if cache_is_valid(path, producer, what):
        return load(path)
    forget_cache(path)
    value = make()
    save(value, path)
    mark_cache(path, producer)
    return value


def checkpoint_dir(path: str | Path, producer: BaseModel | dict, what: str = "") -> Path:
    """A folder of resumable checkpoints made by ``producer``: kept when its record matches
    (a killed run resumes), emptied when another config made it (its checkpoints would resume a
    model trained on other data), then recorded as ``producer``'s."""
    path = Path(path)
    if path.exists() and not cache_is_valid(path, producer, what):
        forget_cache(path)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    mark_cache(path, producer)
    return path
