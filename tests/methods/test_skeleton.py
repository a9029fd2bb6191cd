"""The recipe skeleton: stages reused only for what made them, staleness down the chain, and
the run result every run ends with."""

from __future__ import annotations

import json

from rich.console import Console

from robopref.methods.common import Column, ReportSpec, RunResult, Stage, Table
from robopref.methods.result import print_result


def _stage(tmp_path, name, key, after=(), reads=()):
    return Stage(name, tmp_path / name, key=key, after=after, reads=reads)


def _counting(calls, value):
    def make():
        calls.append(value)
        return value

    return make


def _save(value, path):
    path.write_text(value)


def _load(path):
    return path.read_text()


def test_stage_is_reused_for_the_same_key_and_made_again_for_another(tmp_path, capsys):
    calls = []
    assert _stage(tmp_path, "a", {"x": 1}).run(_counting(calls, "v1"), _save, _load) == "v1"
    assert _stage(tmp_path, "a", {"x": 1}).run(_counting(calls, "v2"), _save, _load) == "v1"
    assert calls == ["v1"]
    assert _stage(tmp_path, "a", {"x": 2}).run(_counting(calls, "v3"), _save, _load) == "v3"
    assert calls == ["v1", "v3"]
    assert "x: 1 -> 2" in capsys.readouterr().err


def test_a_remade_stage_makes_every_later_stage_again(tmp_path):
    calls = []
    first = _stage(tmp_path, "a", {"x": 1})
    first.run(_counting(calls, "a1"), _save, _load)
    _stage(tmp_path, "b", {"y": 1}, after=[first]).run(_counting(calls, "b1"), _save, _load)
    # same configs, but "a" is made again (its file was removed): "b" must not be reused
    (tmp_path / "a").unlink()
    first = _stage(tmp_path, "a", {"x": 1})
    first.run(_counting(calls, "a2"), _save, _load)
    second = _stage(tmp_path, "b", {"y": 1}, after=[first])
    assert second.run(_counting(calls, "b2"), _save, _load) == "b2"
    assert calls == ["a1", "b1", "a2", "b2"]


def test_an_input_file_replaced_under_the_same_path_makes_the_stage_again(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"first")
    calls = []
    _stage(tmp_path, "a", {}, reads=[data]).run(_counting(calls, "a1"), _save, _load)
    _stage(tmp_path, "a", {}, reads=[data]).run(_counting(calls, "a2"), _save, _load)
    data.write_bytes(b"other")
    _stage(tmp_path, "a", {}, reads=[data]).run(_counting(calls, "a3"), _save, _load)
    assert calls == ["a1", "a3"]


def test_a_checkpoint_folder_is_kept_when_current_and_emptied_otherwise(tmp_path):
    folder = _stage(tmp_path, "ckpt", {"lr": 1}).folder()
    (folder / "step_10.pt").write_text("w")
    assert (_stage(tmp_path, "ckpt", {"lr": 1}).folder() / "step_10.pt").exists()
    assert not (_stage(tmp_path, "ckpt", {"lr": 2}).folder() / "step_10.pt").exists()


def _result() -> RunResult:
    rows = [
        {"variant": "pearl", "acc": 0.8125, "acc_se": 0.05, "note": "x" * 30},
        {"variant": "shuffled", "acc": 0.5, "acc_se": 0.1, "note": "y" * 30},
    ]
    columns = [Column("variant"), Column("acc", "accuracy", ".3f", se="acc_se")]
    columns += [Column("note", f"note {i}") for i in range(4)]
    return RunResult(
        method="demo",
        rows=rows,
        tables=[Table("Demo", columns, rows, note="pearl beats the control")],
        report=ReportSpec(metrics=["acc"], order={"variant": ["pearl", "shuffled"]}),
        tensorboard="runs/x/tb",
    )


def test_run_result_round_trips_and_writes_its_report(tmp_path):
    result = _result()
    result.save(tmp_path)
    again = RunResult.load(tmp_path)
    assert again == result
    report = (tmp_path / "report.md").read_text()
    assert "| pearl | 0.812 ± 0.050 |" in report and "pearl beats the control" in report
    assert json.loads((tmp_path / "results.json").read_text())["report"]["metrics"] == ["acc"]


def test_printed_tables_fit_100_columns_and_end_with_paths(tmp_path):
    result = _result()
    result.save(tmp_path)
    console = Console(width=100, record=True, force_terminal=False)
    print_result(result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "Demo (1/2)" in text and "Demo (2/2)" in text  # split, the key column repeated
    assert text.count("shuffled") == 2
    assert f"results: {tmp_path / 'results.json'}" in text
    assert "tensorboard --logdir runs/x/tb" in text


def test_every_part_of_a_split_table_repeats_the_text_columns_that_name_a_row():
    rows = [{"policy": "tpo", "variant": "task", "round": 1, **{f"m{i}": 0.5 for i in range(12)}}]
    columns = [Column("policy"), Column("variant"), Column("round")]
    columns += [Column(f"m{i}", f"metric number {i}", ".3f") for i in range(12)]
    parts = Table("T", columns, rows).parts(width=100)
    assert len(parts) > 1
    assert all(part[:2] == [0, 1] for part in parts)  # policy and variant, not the round
    assert sorted({i for part in parts for i in part}) == list(range(len(columns)))
