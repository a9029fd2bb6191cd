"""Bench under faults and bad input: kill -9, two runs on one store, changed configs, bad files."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from robopref.bench import load_suite, read_results, run_suite
from robopref.cli import main
from robopref.config import ConfigError

SLOW_TOY = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from robopref.config import StrictModel
    from robopref.methods.result import ReportSpec, RunResult

    class Config(StrictModel):
        method: str = "slow_toy"
        task: str = "a"
        seed: int = 0
        sleep: float = 0.3

    def run(config, out_dir):
        root = Path(out_dir).parent.parent
        with open(root / "pids.log", "a") as f:
            f.write(f"{os.getpid()}\\n")
        deadline = time.time() + 120
        while (root / "hold").exists() and time.time() < deadline:  # the test holds the cells
            time.sleep(0.02)
        time.sleep(config.sleep)
        if (root / f"fail-{config.task}").exists():
            raise RuntimeError(f"cell {config.task} failed")
        with open(root / "calls.log", "a") as f:
            f.write(f"task={config.task},seed={config.seed}\\n")
        score = len(config.task) + 0.1 * config.seed
        rows = [{"variant": v, "success_rate": score} for v in ("p", "q", "r")]
        return RunResult("slow_toy", rows, [], ReportSpec(metrics=["success_rate"]))
    """
)
CELLS = {f"task={t},seed={s}" for t in ("a", "bb", "ccc") for s in (0, 1)}


@pytest.fixture
def slow_suite(tmp_path, monkeypatch):
    (tmp_path / "slow_toy.py").write_text(SLOW_TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    (tmp_path / "base.yaml").write_text("method: slow_toy\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""
            name: slow
            base: {tmp_path / "base.yaml"}
            axes:
              task: {{a: [task=a], bb: [task=bb], ccc: [task=ccc]}}
              seed: {{"0": [seed=0], "1": [seed=1]}}
            """
        )
    )
    yield suite
    sys.modules.pop("slow_toy", None)


def _bench(suite, store, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "robopref.cli", "bench", str(suite), "--store", str(store), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed orphan may wait to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _rows_per_cell(store) -> Counter:
    return Counter(r["cell"] for r in read_results(store))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kills", [2, pytest.param(6, marks=pytest.mark.slow)])
def test_kill_9_leaves_no_worker_and_the_rerun_finishes_the_rest(slow_suite, tmp_path, kills):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    store = tmp_path / "store"
    pids_log, calls_log = store / "pids.log", store / "calls.log"  # written by the recipe
    for attempt in range(kills):
        recorded = set(_rows_per_cell(store)) if store.exists() else set()
        calls_before = len(calls_log.read_text().splitlines()) if calls_log.exists() else 0
        proc = _bench(slow_suite, store, "--jobs", "2")
        deadline = time.time() + 120
        while not pids_log.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))  # somewhere in the middle of the cells
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pids = {int(p) for p in pids_log.read_text().split()} if pids_log.exists() else set()
        deadline = time.time() + 3.0
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.05)
        left = [p for p in pids if _alive(p)]
        for p in left:  # do not leave them running even when the test fails
            os.kill(p, signal.SIGKILL)
        assert not left, f"workers {left} outlived the killed bench (seed {seed}, kill {attempt})"
        # the store holds complete cells only, each once, and only cells that had finished
        per_cell = _rows_per_cell(store) if store.exists() else Counter()
        assert set(per_cell.values()) <= {3}, (per_cell, seed)
        finished = set(calls_log.read_text().splitlines()) if calls_log.exists() else set()
        assert set(per_cell) <= finished and recorded <= set(per_cell), seed
        new_calls = calls_log.read_text().splitlines()[calls_before:] if calls_log.exists() else []
        assert not recorded & set(new_calls), f"recorded cells ran again (seed {seed})"
        pids_log.unlink(missing_ok=True)
    recorded = set(_rows_per_cell(store))
    calls_before = len(calls_log.read_text().splitlines()) if calls_log.exists() else 0
    proc = _bench(slow_suite, store, "--jobs", "2")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert _rows_per_cell(store) == Counter({c: 3 for c in CELLS})
    rerun = calls_log.read_text().splitlines()[calls_before:]
    assert sorted(rerun) == sorted(CELLS - recorded), seed  # the rest, and only the rest
    rows = read_results(store)
    assert {r["cell"]: r["success_rate"] for r in rows}["task=ccc,seed=1"] == pytest.approx(3.1)


def test_two_benches_on_one_store_write_no_duplicate_rows(slow_suite, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "hold").touch()  # the first bench's cells wait until the second one is done
    first = _bench(slow_suite, store)
    try:
        deadline = time.time() + 120
        while not (store / "pids.log").exists() and first.poll() is None:
            assert time.time() < deadline
            time.sleep(0.02)
        second = _bench(slow_suite, store)
        assert second.wait(timeout=120) == 2
        err = second.stderr.read().strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "another robopref process is writing" in err and "results.jsonl" in err
        (store / "hold").unlink()
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        (store / "hold").unlink(missing_ok=True)
        if first.poll() is None:
            first.kill()
            first.wait()
    assert _rows_per_cell(store) == Counter({c: 3 for c in CELLS})


def test_a_failed_cell_keeps_the_finished_ones_and_names_itself(slow_suite, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "fail-bb").touch()
    suite = load_suite(slow_suite)
    with pytest.raises(RuntimeError, match="cell bb failed") as info:
        run_suite(suite, store, jobs=2, progress=False)
    assert any("in cell task=bb,seed=0 of suite slow" in n for n in info.value.__notes__)
    done = set(_rows_per_cell(store))
    assert "task=a,seed=0" in done and not any("bb" in c for c in done)
    (store / "fail-bb").unlink()
    calls = len((store / "calls.log").read_text().splitlines())
    run_suite(suite, store, jobs=2, progress=False)
    assert _rows_per_cell(store) == Counter({c: 3 for c in CELLS})
    assert len((store / "calls.log").read_text().splitlines()) - calls == len(CELLS - done)


def test_changed_base_config_reruns_cells_and_keeps_old_rows_apart(slow_suite, tmp_path):
    store = tmp_path / "store"
    suite = load_suite(slow_suite)
    before = {(r["cell"], r["config_hash"]) for r in run_suite(suite, store, progress=False)}
    assert len(before) == 6
    Path(suite.base).write_text("method: slow_toy\nsleep: 0.0\n")
    rows = run_suite(load_suite(slow_suite), store, progress=False)
    # the report sees only rows of the current config (it used to see 36, two configs mixed)
    after = {(r["cell"], r["config_hash"]) for r in rows}
    assert len(rows) == 18 and len(after) == 6 and not after & before
    old = [json.loads(line) for line in (store / "superseded.jsonl").read_text().splitlines()]
    assert len(old) == 18 and {(r["cell"], r["config_hash"]) for r in old} == before
    assert len((store / "calls.log").read_text().splitlines()) == 12


def test_half_written_cell_runs_again_without_duplicates(slow_suite, tmp_path):
    store = tmp_path / "store"
    suite = load_suite(slow_suite)
    run_suite(suite, store, progress=False)
    lines = (store / "results.jsonl").read_text().splitlines()
    # a kill in the middle of the last cell's write: one of its 3 rows and a torn line remain
    (store / "results.jsonl").write_text("\n".join(lines[:16]) + "\n" + lines[16][:30])
    assert len(read_results(store)) == 15
    rows = run_suite(suite, store, progress=False)
    assert _rows_per_cell(store) == Counter({c: 3 for c in CELLS}) and len(rows) == 18
    assert len((store / "calls.log").read_text().splitlines()) == 7


def test_bench_bad_input_is_one_line_before_any_cell(slow_suite, tmp_path, capsys):
    def error(*args) -> str:
        assert main(["bench", *map(str, args)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    store = tmp_path / "store"
    text = slow_suite.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("base:", "bsae:"))
    assert f"config '{bad}': unknown key 'bsae'" in error(bad, "--store", store)
    bad.write_text(text.replace(str(tmp_path / "base.yaml"), str(tmp_path / "gone.yaml")))
    assert f"config file '{tmp_path / 'gone.yaml'}' does not exist" in error(bad)
    bad.write_text(text + "  more: {x: [seed=1]\n")
    assert f"suite file '{bad}': YAML syntax error at line" in error(bad)
    (tmp_path / "broken.yaml").write_text("method: slow_toy\n  sleep: [\n")
    bad.write_text(text.replace(str(tmp_path / "base.yaml"), str(tmp_path / "broken.yaml")))
    assert f"base config '{tmp_path / 'broken.yaml'}': YAML syntax error" in error(bad)
    # a bad override in one cell fails the suite before any cell runs
    bad.write_text(text.replace("[seed=1]", "[seed=one]"))
    err = error(bad, "--store", store)
    assert "cell task=a,seed=1" in err and "override 'seed=one'" in err and "field 'seed'" in err
    assert not (store / "calls.log").exists()
    assert "jobs: expected at least 1, found 0" in error(
        slow_suite, "--store", store, "--jobs", "0"
    )


def test_bench_and_report_from_the_command_line(slow_suite, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "robopref.cli", "bench", str(tmp_path / "nosuch.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip() == f"robopref: suite file '{tmp_path / 'nosuch.yaml'}' does not exist"
    )
    missing = tmp_path / "nosuchstore"
    proc = subprocess.run(
        [sys.executable, "-m", "robopref.cli", "report", str(missing)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(missing) in proc.stderr
    assert not missing.exists()  # it used to create the folder and an empty report


def test_report_names_the_line_that_is_not_an_object(tmp_path, capsys):
    store = tmp_path / "s"
    store.mkdir()
    row = {"cell": "c", "config_hash": "h", "variant": "v", "success_rate": 0.5}
    (store / "results.jsonl").write_text(json.dumps(row) + "\n[1, 2]\n" + json.dumps(row) + "\n")
    assert main(["report", str(store), "--metrics", "success_rate"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{store / 'results.jsonl'} line 2: expected a JSON object" in err
    with pytest.raises(ConfigError, match="line 2"):
        read_results(store)
    # a torn last line (a killed run) is not an error: it is left out
    (store / "results.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row)[:25])
    assert len(read_results(store)) == 1
    assert main(["report", str(store), "--metrics", "success_rate"]) == 0
