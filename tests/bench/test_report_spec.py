"""bench/report read the recipe's ReportSpec: its metrics (none missing, no NaN column), its
grouping and order; a report with other options never overwrites report.md; plots carry a
title, n per bar and the chance or control line; bench shows cells done/total."""

import json
import os
import sys
import textwrap

import matplotlib.figure
import pytest

from robopref.bench import load_suite, run_suite, write_report
from robopref.bench.report import aggregate, group_keys, plot_metric
from robopref.cli import main
from robopref.methods.result import ReportSpec

# rows shaped like RAPL's: Spearman and accuracy per reward variant, no success rate
RAPL_TOY = textwrap.dedent(
    """
    from robopref.config import StrictModel
    from robopref.methods.result import ReportSpec, RunResult

    class Config(StrictModel):
        method: str = "rapl_toy"
        seed: int = 0
        variants: list[str] = ["rapl@50", "gt", "rapl@150"]

    def run(config, out_dir):
        rows = [{"variant": v, "budget": i, "spearman_step": 0.1 * i + 0.01 * config.seed,
                 "accuracy": 0.5 + 0.1 * i, "seed": config.seed}
                for i, v in enumerate(config.variants)]
        spec = ReportSpec(metrics=["spearman_step", "accuracy", "success_rate"],
                          order={"variant": config.variants}, chance={"accuracy": 0.5})
        return RunResult("rapl_toy", rows, [], spec)
    """
)


@pytest.fixture
def rapl_suite(tmp_path, monkeypatch):
    (tmp_path / "rapl_toy.py").write_text(RAPL_TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    (tmp_path / "base.yaml").write_text("method: rapl_toy\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: rapl\nbase: {tmp_path / 'base.yaml'}\n"
        'axes:\n  seed: {"0": [seed=0], "1": [seed=1]}\n'
    )
    yield suite
    sys.modules.pop("rapl_toy", None)


def test_a_rapl_suite_reports_its_own_metrics_in_config_order(rapl_suite, tmp_path):
    store = tmp_path / "store"
    assert main(["bench", str(rapl_suite), "--store", str(store)]) == 0
    spec = json.loads((store / "report.json").read_text())
    assert spec["method"] == "rapl_toy" and spec["report"]["metrics"][0] == "spearman_step"
    md = (store / "report.md").read_text()
    assert "nan" not in md.lower() and "| success_rate" not in md
    assert "Left out (in no row): success_rate." in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| variant | n | spearman_step | accuracy |"
    assert [line.split(" | ")[0] for line in table[1:]] == ["| rapl@50", "| gt", "| rapl@150"]
    assert "| gt | 2 | 0.105 ± 0.005 | 0.600 ± 0.000 |" in table
    assert (store / "spearman_step.png").exists() and not (store / "success_rate.png").exists()


def test_report_with_options_never_overwrites_report_md(rapl_suite, tmp_path):
    store = tmp_path / "store"
    assert main(["bench", str(rapl_suite), "--store", str(store)]) == 0
    default = (store / "report.md").read_text()
    assert main(["report", str(store), "--metrics", "accuracy"]) == 0
    only = (store / "report-accuracy.md").read_text()
    assert "| variant | n | accuracy |" in only and "spearman" not in only
    assert (store / "report.md").read_text() == default
    # a rerun of bench (nothing left to run) rewrites the default report only
    assert main(["bench", str(rapl_suite), "--store", str(store)]) == 0
    assert (store / "report-accuracy.md").read_text() == only
    assert (store / "report.md").read_text() == default
    assert main(["report", str(store), "--metrics", "nosuch"]) == 2  # one line, no traceback


def test_bench_shows_cells_done_of_total(rapl_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBOPREF_QUIET", raising=False)
    run_suite(load_suite(rapl_suite), tmp_path / "s", progress=True)
    err = capsys.readouterr().err
    assert "bench[rapl]:   0%|" in err and "| 0/2 [" in err and "cell/s" in err
    monkeypatch.setenv("ROBOPREF_QUIET", "1")
    run_suite(load_suite(rapl_suite), tmp_path / "t", progress=True)
    assert "bench[rapl]" not in capsys.readouterr().err


def _pearl_rows():
    rows = []
    for pair, tasks in (("bp->bpw", ("bp", "bpw")), ("do->dc", ("do", "dc"))):
        for seed in (0, 1):
            for i, variant in enumerate(["pearl", "sim", "oracle", "shuffled"]):
                rows.append(
                    {"cell": f"pair={pair},seed={seed}", "pair": pair, "seed": seed,
                     "variant": variant, "source_task": tasks[0], "target_task": tasks[1],
                     "policy": "filtered_bc", "success_rate": 0.9 - 0.2 * i,
                     "label_accuracy": 0.8, "success_se": 0.05}
                )  # fmt: skip
    return rows


def test_grouping_keeps_the_axis_and_the_variant_in_config_order():
    spec = ReportSpec(
        metrics=["success_rate"],
        group_by=["source_task", "target_task", "variant"],
        order={"variant": ["pearl", "sim", "oracle", "shuffled"]},
        control="shuffled",
    )
    keys, constants = group_keys(_pearl_rows(), spec)
    # the task names follow from the pair axis; the learner is the same everywhere
    assert keys == ["pair", "variant"] and constants == {"policy": "filtered_bc"}
    agg = aggregate(_pearl_rows(), ("success_rate",), tuple(keys), spec.order)
    assert [e["variant"] for e in agg[:4]] == ["pearl", "sim", "oracle", "shuffled"]
    assert all(e["n"] == 2 for e in agg)


def test_plots_have_a_title_n_per_bar_and_chance_or_control_lines(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig)
    )
    order = {"variant": ["pearl", "sim", "oracle", "shuffled"]}
    agg = aggregate(_pearl_rows(), ("success_rate", "label_accuracy"), ("pair", "variant"), order)
    plot_metric(agg, "success_rate", "pair", "variant", tmp_path / "s.png",
                title="suite: success rate", order=order, control="shuffled")  # fmt: skip
    plot_metric(agg, "label_accuracy", "pair", "variant", tmp_path / "l.png",
                title="suite: label accuracy", order=order, chance=0.5)  # fmt: skip
    success, label = figures
    ax = success.axes[0]
    assert success._suptitle.get_text() == "suite: success rate"
    assert [t.get_text() for t in ax.texts].count("n=2") == 8  # 2 pairs x 4 variants
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["shuffled (control)", "pearl", "sim", "oracle", "shuffled"]
    (lines,) = [c for c in ax.collections if c.get_label() == "shuffled (control)"]
    control = lines.get_segments()[0]  # the first pair's control mean, 0.3
    assert control[0][1] == pytest.approx(0.3) and control[1][1] == pytest.approx(0.3)
    chance = [line for line in label.axes[0].lines if line.get_linestyle() == ":"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == 0.5


def test_report_without_a_spec_keeps_the_old_defaults(tmp_path):
    store = tmp_path / "st"
    store.mkdir()
    rows = [{"cell": "c", "config_hash": "h", "variant": "v", "seed": 0, "success_rate": 0.5}]
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(store)
    assert "| variant | n | success_rate |" in md and "label_accuracy" in md  # left out, named
