"""Suites: every cell runs once, results are identical serial vs parallel, reruns resume."""

import json
import os
import sys
import textwrap

import pytest

from robopref.bench import (
    aggregate,
    cells,
    load_suite,
    markdown_table,
    read_results,
    run_suite,
    write_report,
)

TOY = textwrap.dedent(
    """
    from pathlib import Path
    from robopref.config import StrictModel
    from robopref.methods.result import ReportSpec, RunResult

    class Config(StrictModel):
        method: str = "toy_method"
        task: str = "a"
        variant: str = "x"
        seed: int = 0

    def run(config, out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(out_dir).parent.parent / "calls.log", "a") as f:
            f.write(f"{config.task},{config.variant},{config.seed}\\n")
        score = len(config.task) * 10 + (config.variant == "y") + 0.1 * config.seed
        rows = [{"variant": config.variant, "success_rate": score, "seed": config.seed}]
        return RunResult("toy_method", rows, [], ReportSpec(metrics=["success_rate"]))
    """
)


@pytest.fixture
def suite_file(tmp_path, monkeypatch):
    (tmp_path / "toy_method.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    # worker processes (and Ray workers) find the user's recipe module through PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    base = tmp_path / "base.yaml"
    base.write_text("method: toy_method\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""
            name: toy
            base: {base}
            axes:
              task: {{a: [task=a], bbb: [task=bbb]}}
              method: {{x: [variant=x], y: [variant=y]}}
              seed: {{"0": [seed=0], "1": [seed=1]}}
            """
        )
    )
    yield suite
    sys.modules.pop("toy_method", None)


def test_cells_cover_the_grid(suite_file):
    ids = [c[0] for c in cells(load_suite(suite_file))]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert "task=bbb,method=y,seed=1" in ids


def test_serial_and_parallel_agree_and_resume_skips_done_cells(suite_file, tmp_path):
    suite = load_suite(suite_file)
    serial = run_suite(suite, tmp_path / "s1", jobs=1, progress=False)
    parallel = run_suite(suite, tmp_path / "s2", jobs=2, progress=False)

    def key(rows):
        return sorted((r["cell"], r["success_rate"]) for r in rows)

    assert len(serial) == 8 and key(serial) == key(parallel)
    by_cell = {r["cell"]: r["success_rate"] for r in serial}
    assert by_cell["task=bbb,method=y,seed=1"] == pytest.approx(31.1)

    # a killed run: keep 3 finished cells and a torn line, then resume
    store = tmp_path / "s3"
    store.mkdir()
    lines = (tmp_path / "s1" / "results.jsonl").read_text().splitlines()
    (store / "results.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    rows = run_suite(suite, store, jobs=1, progress=False)
    calls = (store / "calls.log").read_text().splitlines()
    assert len(calls) == 5  # only the 5 cells that had not finished ran again
    assert key(rows) == key(serial)


def test_report_aggregates_over_seeds(suite_file, tmp_path):
    run_suite(load_suite(suite_file), tmp_path / "st", jobs=1, progress=False)
    agg = aggregate(read_results(tmp_path / "st"), metrics=("success_rate",))
    entry = next(e for e in agg if e["task"] == "a" and e["variant"] == "y")
    assert entry["n"] == 2
    assert entry["success_rate"][0] == pytest.approx(11.05)
    assert entry["success_rate"][1] == pytest.approx(0.05)
    md = markdown_table(agg, ("success_rate",))
    assert "11.050 ± 0.050" in md
    report = write_report(tmp_path / "st", metrics=("success_rate",))
    assert (tmp_path / "st" / "success_rate.png").stat().st_size > 1000
    assert "success_rate" in report and json.loads(
        (tmp_path / "st" / "results.jsonl").read_text().splitlines()[0]
    )
    from robopref.cli import main

    assert main(["report", str(tmp_path / "st"), "--metrics", "success_rate"]) == 0
    assert "11.050 ± 0.050" in (tmp_path / "st" / "report-success_rate.md").read_text()


def test_ray_matches_local(suite_file, tmp_path):
    pytest.importorskip("ray")
    suite = load_suite(suite_file)
    local = run_suite(suite, tmp_path / "l", jobs=1, progress=False)
    ray_rows = run_suite(suite, tmp_path / "r", ray_address="local", progress=False)
    assert sorted((r["cell"], r["success_rate"]) for r in local) == sorted(
        (r["cell"], r["success_rate"]) for r in ray_rows
    )


def test_report_orders_numbers_inside_labels_as_numbers():
    rows = [{"variant": v, "cell": c, "x": 1.0} for c in ("s0", "s1") for v in
            ("rapl@300", "rapl@50", "rapl@150", "gt")]  # fmt: skip
    agg = aggregate(rows, metrics=("x",))
    assert [e["variant"] for e in agg] == ["gt", "rapl@50", "rapl@150", "rapl@300"]
    assert all(e["n"] == 2 for e in agg)


def test_pivot_table_puts_one_key_in_columns(tmp_path):
    from robopref.bench.report import pivot_table

    rows = [
        {"cell": f"{t},{s}", "task": t, "variant": v, "x": x}
        for t, v, s, x in [("b", "rapl@150", 0, 0.5), ("b", "rapl@150", 1, 0.7),
                           ("a", "rapl@150", 0, 0.2), ("a", "rapl@50", 0, 0.1)]
    ]  # fmt: skip
    table = pivot_table(aggregate(rows, metrics=("x",)), "x", "task", ("x",))
    assert table.splitlines() == [
        "| variant | a | b |",
        "|---|---|---|",
        "| rapl@50 | 0.10 ± 0.00 |  |",
        "| rapl@150 | 0.20 ± 0.00 | 0.60 ± 0.10 |",
    ]
    store = tmp_path / "s"
    store.mkdir()
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from robopref.cli import main

    assert main(["report", str(store), "--metrics", "x", "--columns", "task"]) == 0
    report = (store / "report-x-by-task.md").read_text()
    assert "| rapl@150 | 0.20 ± 0.00 | 0.60 ± 0.10 |" in report
    with pytest.raises(ValueError, match="columns"):
        write_report(store, ("x",), columns="nope")
    assert main(["report", str(store), "--metrics", "x", "--columns", "nope"]) == 2
