"""Running a config file: read it, pick its recipe by the ``method:`` key, validate it, run it.

The command line (``robopref run``, ``lm``, ``grape``, ``demo``) and benchmark suites
(:mod:`robopref.bench`) both go through :func:`run_config`, so a config behaves the same however
it is started. The whole config is validated before any work, and before the run folder is made.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import ModuleType

from robopref.config import (
    ConfigError,
    StrictModel,
    apply_overrides,
    read_config_data,
    validate_config,
)
from robopref.methods import get_method
from robopref.methods.result import RunResult

FAILED_FILE = "FAILED"  # written into the run folder of a run that raised (its one-line reason)


def default_out(method: str, config_path: str | None) -> Path:
    """``runs/<method>-<config stem>-<time>``: the run folder when none is given."""
    stem = Path(config_path).stem if config_path else method
    return Path("runs") / f"{method}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_run_config(
    config_path: str | None, overrides: list[str], method: str | None = None
) -> tuple[ModuleType, StrictModel]:
    """Read ``config_path`` with ``overrides`` and validate it into its recipe's ``Config``.

    Returns ``(recipe module, validated config)``; raises :class:`ConfigError` (naming the file
    and the field) for a missing or unknown ``method:`` or any field that does not validate.
    """
    raw = read_config_data(config_path)
    for item in overrides:  # one at a time, so that an error names its override
        raw = apply_overrides(raw, [item])
    name = method or raw.get("method")
    if not name:
        raise ConfigError(f"config '{config_path}': missing the top-level 'method:' key")
    if not isinstance(name, str):
        raise ConfigError(
            f"config '{config_path}': field 'method': expected a name, found {name!r}"
        )
    try:
        module = get_method(name)
    except ValueError as e:
        raise ConfigError(f"config '{config_path}': field 'method': {e}") from None
    config = validate_config(module.Config, {**raw, "method": name}, str(config_path), overrides)
    return module, config


def run_config(
    config_path: str | None,
    overrides: list[str],
    out: str | Path | None,
    method: str | None = None,
    announce: bool = True,
) -> RunResult:
    """Load a recipe config (its ``method:`` key picks the recipe), run it, save its
    :class:`~robopref.methods.result.RunResult` (``results.json``, ``report.md``) into the run
    folder and return it.

    A run that raises leaves no folder behind when it had created the folder and written nothing
    but its ``config.yaml``; otherwise (partial outputs a rerun can resume from) the folder stays
    and gets a ``FAILED`` file with the reason, removed again by the next successful run.
    """
    module, config = load_run_config(config_path, overrides, method)
    name = getattr(config, "method", None) or method
    out_dir = Path(out) if out else default_out(str(name), config_path)
    if announce:
        from rich.console import Console

        Console().print(f"[bold]robopref {name}[/bold] -> {out_dir}")
    existed = out_dir.exists()
    try:
        result = module.run(config, out_dir)
        if not isinstance(result, RunResult):
            raise TypeError(
                f"recipe {name}: run() must return a RunResult, returned {type(result).__name__}"
            )
        result.save(out_dir)
    except BaseException as e:
        _after_failure(out_dir, existed, e)
        raise
    (out_dir / FAILED_FILE).unlink(missing_ok=True)
    return result


def _after_failure(out_dir: Path, existed: bool, error: BaseException) -> None:
    if not out_dir.is_dir():
        return
    left = {p.name for p in out_dir.iterdir()}
    if not existed and left <= {"config.yaml"}:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    reason = (
        f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    )
    try:
        (out_dir / FAILED_FILE).write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {reason}\n")
    except OSError:  # a full disk must not hide the original error, nor leave an empty FAILED
        (out_dir / FAILED_FILE).unlink(missing_ok=True)
