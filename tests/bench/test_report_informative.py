"""robopref report flags a suite cell whose oracle-vs-shuffled success gap is under 3 SE."""

import json
import math
import statistics

import pytest

from robopref.bench.report import control_check, write_report
from robopref.cli import main


def _rows(pair, oracle, shuffled, episodes=50):
    """One row per (variant, seed) with success_se = sqrt(p (1 - p) / n), as PEARL writes."""
    rows = []
    for variant, rates in (("oracle", oracle), ("shuffled", shuffled), ("pearl", oracle)):
        for seed, p in enumerate(rates):
            rows.append(
                {
                    "cell": f"pair={pair},seed={seed}",
                    "pair": pair,
                    "seed": seed,
                    "config_hash": "h",
                    "variant": variant,
                    "source_task": "a-v3",
                    "target_task": "b-v3",
                    "label_accuracy": 1.0,
                    "reward_accuracy": 0.9,
                    "success_rate": p,
                    "success_se": math.sqrt(p * (1 - p) / episodes),
                    "eval_episodes": episodes,
                }
            )
    return rows


def test_gap_and_standard_error_by_hand():
    # small gap: oracle 0.5, 0.6, 0.4 vs shuffled 0.4, 0.5, 0.3 -> gap 0.1.
    # seed SE of each: std(ddof=1)=0.1 -> 0.1/sqrt(3)=0.0577; eval SE: sqrt(.25+.24+.24)/50/3...
    rows = _rows("small", [0.5, 0.6, 0.4], [0.4, 0.5, 0.3])
    (check,) = control_check(rows)
    assert check["group"] == {"pair": "small"}
    eval_se_oracle = math.sqrt(0.25 / 50 + 0.24 / 50 + 0.24 / 50) / 3  # 0.0403 < seed SE
    assert eval_se_oracle < 0.1 / math.sqrt(3)
    assert check["oracle"] == pytest.approx((0.5, 0.1 / math.sqrt(3), 3))
    assert check["gap"] == pytest.approx(0.1)
    assert check["gap_se"] == pytest.approx(math.hypot(0.1 / math.sqrt(3), 0.1 / math.sqrt(3)))
    assert check["informative"] is False  # 0.1 < 3 * 0.0816

    # large gap: 0.9, 0.95, 0.85 vs 0.1, 0.05, 0.0 -> gap 0.85 >> 3 SE
    (check,) = control_check(_rows("large", [0.9, 0.95, 0.85], [0.1, 0.05, 0.0]))
    assert check["gap"] == pytest.approx(0.85) and check["informative"] is True

    # both always fail: gap 0 with SE 0 is not informative
    (check,) = control_check(_rows("dead", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]))
    assert check["gap_se"] == 0.0 and check["informative"] is False

    # a single seed: the binomial SE of the evaluation episodes decides
    (check,) = control_check(_rows("one", [0.6], [0.4], episodes=50))
    se = math.hypot(math.sqrt(0.24 / 50), math.sqrt(0.24 / 50))  # 0.098
    assert check["gap_se"] == pytest.approx(se) and check["informative"] is False  # 0.2 < 0.29


def test_report_marks_only_the_small_gap_cell(tmp_path):
    store = tmp_path / "st"
    store.mkdir()
    rows = _rows("small", [0.5, 0.6, 0.4], [0.4, 0.5, 0.3]) + _rows(
        "large", [0.9, 0.95, 0.85], [0.1, 0.05, 0.0]
    )
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(store)
    title, banner = md.splitlines()[0], md.splitlines()[2]
    assert title.startswith("# Results")
    assert banner.startswith("**not informative**") and "pair=small" in banner
    assert "pair=large" not in banner
    assert (
        "| pair=small | 0.500 ± 0.058 (n=3) | 0.400 ± 0.058 (n=3) | 0.100 ± 0.082 | **not informative** |"
        in md
    )
    assert "| pair=large |" in md and md.count("| informative |") == 1
    assert (store / "success_rate.png").stat().st_size > 0
    assert main(["report", str(store)]) == 0
    assert "**not informative**" in (store / "report.md").read_text()


def test_report_without_small_gaps_has_no_flag(tmp_path):
    store = tmp_path / "st"
    store.mkdir()
    rows = _rows("large", [0.9, 0.95, 0.85], [0.1, 0.05, 0.0])
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(store)
    assert "not informative" not in md and "All 1 group(s) informative." in md


def test_no_control_no_section(tmp_path):
    store = tmp_path / "st"
    store.mkdir()
    rows = [r for r in _rows("x", [0.5], [0.5]) if r["variant"] != "shuffled"]
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "Negative control" not in write_report(store) and control_check(rows) == []


def test_permutations_of_one_seed_count_as_one_seed():
    # shuffled: seed 0 draws 0, 1, 1 (mean 2/3), seed 1 draws 0, 0, 0, seed 2 draws 1, 1, 1
    rows = _rows("perm", [1.0, 1.0, 1.0], [0.0, 0.0, 1.0])
    extra = [
        {**r, "success_rate": 1.0, "success_se": 0.0, "permutation": j}
        for r in rows
        if r["variant"] == "shuffled" and r["seed"] == 0
        for j in (1, 2)
    ]
    (check,) = control_check(rows + extra)
    means = [2 / 3, 0.0, 1.0]
    mean, se, n = check["shuffled"]
    assert n == 3 and mean == pytest.approx(sum(means) / 3)
    assert se == pytest.approx(statistics.stdev(means) / math.sqrt(3))
    from robopref.bench.report import aggregate

    (entry,) = [e for e in aggregate(rows + extra) if e["variant"] == "shuffled"]
    assert entry["n"] == 3 and entry["success_rate"][0] == pytest.approx(sum(means) / 3)
