"""The typed result of a run, and the one way every run ends.

A recipe returns a :class:`RunResult`: its ``rows`` (one per compared unit, e.g. per variant;
what ``robopref bench`` stores), named :class:`Table` views of them (the first is the headline),
run-level ``summary`` fields, the paths of what it wrote, and a :class:`ReportSpec` that tells
``bench`` and ``report`` which metrics to aggregate, how to group rows and in what order, and
where the chance or control line of a plot lies.

:meth:`RunResult.save` writes ``results.json`` and ``report.md``; :func:`print_result` prints
the tables (split to fit the terminal, at most 100 columns), the paths and the ``tensorboard``
line. JSON goes to stdout only when asked for (``--json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robopref.utils import atomic_path

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
MAX_WIDTH = 100


@dataclass
class Column:
    """One column of a :class:`Table`: ``key`` of the rows, ``title`` shown, ``fmt`` a format
    spec (``".3f"``), ``se`` the key of a standard error shown as ``mean ± se``."""

    key: str
    title: str = ""
    fmt: str = ""
    se: str | None = None

    def cell(self, row: dict) -> str:
        value = row.get(self.key)
        if value is None:
            return "—"
        text = _format(value, self.fmt)
        if self.se and row.get(self.se) is not None:
            text += f" ± {_format(row[self.se], self.fmt)}"
        return text


def _format(value: Any, fmt: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


@dataclass
class Table:
    """A titled table over rows; ``note`` is a one-line reading printed under it."""

    title: str
    columns: list[Column]
    rows: list[dict]
    note: str = ""

    def cells(self) -> list[list[str]]:
        return [[c.cell(r) for c in self.columns] for r in self.rows]

    def markdown(self) -> str:
        head = "| " + " | ".join(c.title or c.key for c in self.columns) + " |"
        sep = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(row) + " |" for row in self.cells()]
        text = "\n".join([f"## {self.title}", "", head, sep, *body])
        return text + (f"\n\n{self.note}" if self.note else "")

    def key_columns(self) -> int:
        """How many leading columns name a row (text, not numbers): they repeat in every part
        of a split table."""
        count = 0
        for i, column in enumerate(self.columns):
            values = [r.get(column.key) for r in self.rows]
            if column.se or any(isinstance(v, (int, float)) for v in values):
                break
            count = i + 1
        return max(count, 1)

    def parts(self, width: int = MAX_WIDTH) -> list[list[int]]:
        """Column indices of each printed part: the key columns (:meth:`key_columns`) repeat in
        every part, the others are packed while the part fits ``width`` characters."""
        cells = self.cells()
        widths = [
            max([len(c.title or c.key)] + [len(row[i]) for row in cells]) + 3
            for i, c in enumerate(self.columns)
        ]
        keys = list(range(min(self.key_columns(), len(self.columns) - 1) or 1))
        base = sum(widths[i] for i in keys) + 1
        parts, current, used = [], list(keys), base
        for i in range(len(keys), len(self.columns)):
            if used + widths[i] > width and len(current) > len(keys):
                parts.append(current)
                current, used = list(keys), base
            current.append(i)
            used += widths[i]
        parts.append(current)
        return parts


@dataclass
class ReportSpec:
    """How ``bench``/``report`` read a recipe's rows.

    Args:
        metrics: row keys aggregated as mean ± SE over seeds, in table order.
        group_by: row keys that tell compared units apart (e.g. ``["target_task", "variant"]``).
        order: for a ``group_by`` key, the order of its values (e.g. variants in config order).
        chance: per metric, the value a plot draws as the chance line (0.5 for pair accuracy).
        control: the variant that is the negative control (its mean is drawn as a line).
    """

    metrics: list[str]
    group_by: list[str] = field(default_factory=lambda: ["variant"])
    order: dict[str, list[str]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    control: str | None = None


@dataclass
class RunResult:
    """What a run produced. ``tables`` are views of ``rows`` (or of rows derived from them) in
    print order; ``artefacts`` maps names to paths written (checkpoints, plots);
    ``tensorboard`` is the log folder when the run logged."""

    method: str
    rows: list[dict]
    tables: list[Table]
    report: ReportSpec
    summary: dict[str, Any] = field(default_factory=dict)
    artefacts: dict[str, str] = field(default_factory=dict)
    tensorboard: str | None = None
    out_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        tables = [
            Table(
                t["title"],
                [Column(**c) for c in t["columns"]],
                t["rows"],
                t.get("note", ""),
            )
            for t in data.get("tables", [])
        ]
        return cls(
            method=data["method"],
            rows=data["rows"],
            tables=tables,
            report=ReportSpec(**data["report"]),
            summary=data.get("summary", {}),
            artefacts=data.get("artefacts", {}),
            tensorboard=data.get("tensorboard"),
            out_dir=data.get("out_dir"),
        )

    @classmethod
    def load(cls, out_dir: str | Path) -> RunResult:
        """Read ``out_dir/results.json``."""
        return cls.from_json(json.loads((Path(out_dir) / RESULTS_FILE).read_text()))

    def save(self, out_dir: str | Path) -> None:
        """Write ``results.json`` and ``report.md`` into ``out_dir`` (atomically)."""
        out_dir = Path(out_dir)
        self.out_dir = str(out_dir)
        with atomic_path(out_dir / RESULTS_FILE) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1, default=_json_default) + "\n")
        title = self.summary.get("title", self.method)
        body = "\n\n".join(t.markdown() for t in self.tables)
        with atomic_path(out_dir / REPORT_FILE) as tmp:
            tmp.write_text(f"# {title}\n\n{body}\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def print_result(result: RunResult, console: Any = None) -> None:
    """Every run's ending: its tables (split to fit), the paths of its results and report,
    and the ``tensorboard --logdir`` line when it logged."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console(width=min(MAX_WIDTH, Console().width))
    for table in result.tables:
        cells = table.cells()
        parts = table.parts(console.width)
        for k, part in enumerate(parts):
            suffix = f" ({k + 1}/{len(parts)})" if len(parts) > 1 else ""
            rich = RichTable(title=table.title + suffix, title_justify="left")
            for i in part:
                column = table.columns[i]
                rich.add_column(column.title or column.key, no_wrap=True)
            for row in cells:
                rich.add_row(*[row[i] for i in part])
            console.print(rich)
        if table.note:
            console.print(table.note)
    if result.out_dir:
        out = Path(result.out_dir)
        console.print(f"results: {out / RESULTS_FILE}")
        console.print(f"report:  {out / REPORT_FILE}")
    for name, path in result.artefacts.items():
        console.print(f"{name}: {path}")
    if result.tensorboard:
        console.print(f"tensorboard --logdir {result.tensorboard}")
