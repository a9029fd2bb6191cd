"""Labelled progress for long steps, shared by every room.

Every step of a run that can take more than a few seconds shows either a bar with a label, a
count and an ETA (:func:`bar`, :func:`track`) or, when it has no count, a line when it starts and
one with its duration when it ends (:func:`step`). Labels name the step and what it is for, e.g.
``collect[target]``, ``reward[pearl]``, ``eval[pearl] 50 episodes``.

``robopref --quiet`` (or ``ROBOPREF_QUIET=1`` in the environment, which worker processes
inherit) silences all of them; results tables and errors are printed regardless.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

QUIET_ENV = "ROBOPREF_QUIET"


def set_quiet(quiet: bool = True) -> None:
    """Silence (or re-enable) progress output in this process and the workers it starts."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def is_quiet() -> bool:
    """Whether progress output is silenced."""
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def bar(total: int | None, label: str, unit: str = "it", initial: int = 0, enabled: bool = True):
    """A tqdm bar ``label: done/total [elapsed<ETA]`` on stderr; use it as a context manager and
    call ``.update(n)``. Silent when quiet or ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=label,
        unit=unit,
        disable=not enabled or is_quiet(),
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def track(
    items: Iterable[T], label: str, total: int | None = None, unit: str = "it", enabled: bool = True
) -> Iterator[T]:
    """Iterate over ``items`` with a labelled bar (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(total, label, unit=unit, enabled=enabled) as b:
        for item in items:
            yield item
            b.update(1)


@contextlib.contextmanager
def step(label: str, enabled: bool = True) -> Iterator[dict[str, Any]]:
    """A step without a count: ``label ...`` when it starts, ``label: 12.3 s`` when it ends.

    Yields a dict; a ``"note"`` put into it is printed after the duration (e.g. the setting a
    search chose)."""
    show = enabled and not is_quiet()
    info: dict[str, Any] = {}
    if show:
        print(f"{label} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield info
    if show:
        note = f" ({info['note']})" if info.get("note") else ""
        print(f"{label}: {time.perf_counter() - started:.1f} s{note}", file=sys.stderr, flush=True)
