"""PEARL transfer study: transferred-label accuracy of GW, FGW (grid), auto and the similarity
baseline on Meta-World task pairs, 3 seeds. Label accuracy only (no reward / policy training).

Per (pair, seed), as ``robopref.methods.pearl.run`` draws them: 3000 oracle-labelled source
pairs over a pool of 300 25-step segments, 2000 target pairs over 300 target segments scored
against the oracle. Datasets: ``benchmarks/pearl_transfer_data.py`` (50 episodes per task,
cached). Writes one JSON row per (pair, seed, method, setting) to ``--out``.

    python benchmarks/pearl_transfer.py --cache /work/cache-h14 --out docs/results/pearl-transfer.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pearl_transfer_data import PAIRS, SEEDS, get_dataset  # noqa: E402

from robopref.teachers import TeacherConfig, make_teacher  # noqa: E402
from robopref.transfer import TransferConfig, label_accuracy, sample_pool_pairs  # noqa: E402
from robopref.transfer.cpa import (  # noqa: E402
    _joint_standardize,
    _pair_accuracy,
    _task_features,
    coupling_for,
    labels_from_coupling,
    normalized,
    pair_labels,
    pairwise_distances,
    select_config,
    standardize,
    transfer_labels,
    unique_items,
)


def run_cell(cache: Path, pair: tuple[str, str], seed: int, config: TransferConfig) -> list[dict]:
    source = get_dataset(cache, pair[0], seed)
    target = get_dataset(cache, pair[1], 100 + seed)
    rng = np.random.default_rng(seed)
    oracle = make_teacher(TeacherConfig(name="oracle"))
    source_q = oracle.label(source, sample_pool_pairs(source, 300, 3000, 25, rng))
    target_q = sample_pool_pairs(target, 300, 2000, 25, rng)
    truth = oracle.label(target, target_q)
    truth_y = truth.pair_probability()
    base = {"pair": f"{pair[0][:-3]}->{pair[1][:-3]}", "seed": seed}
    rows = []

    def add(method, acc, **kw):
        rows.append({**base, "method": method, "label_accuracy": acc, **kw})

    for method, extra in (("sim", {}), ("gw", {"epsilon": 0.02})):
        t0 = time.time()
        cfg = config.model_copy(update={"method": method, **extra})
        labels, _ = transfer_labels(source, source_q, target, target_q, cfg)
        add(method, label_accuracy(labels, truth), wall_s=round(time.time() - t0, 2), **extra)

    # the FGW grid: the target accuracy of every setting and the label-free scores
    src_y = pair_labels(source_q)
    si, ti = unique_items(source_q), unique_items(target_q)
    xs = standardize(_task_features(source, si, config.feature, config, None))
    xt = standardize(_task_features(target, ti, config.feature, config, None))
    cross = {
        f: _joint_standardize(
            _task_features(source, si, f, config, None), _task_features(target, ti, f, config, None)
        )
        for f in config.auto.cross_features
    }
    t0 = time.time()
    best, cands = select_config(xs, xt, cross, si.inverse, src_y, ti.inverse, config)
    t_sel = time.time() - t0
    grid = []
    for c in cands:
        M = normalized(pairwise_distances(*cross[c.cross_feature]))
        T = coupling_for(xs, xt, M, "fgw", c.epsilon, c.alpha, config)
        y, mass = labels_from_coupling(T, si.inverse, src_y, ti.inverse, config.label_rule)
        g = {
            "cross_feature": c.cross_feature, "alpha": c.alpha, "epsilon": c.epsilon,
            "half_source": c.score,
            "mass": float(np.mean(mass * np.abs(2 * y - 1))),
        }  # fmt: skip
        acc = _pair_accuracy(y, truth_y)
        grid.append((g, acc))
        add("fgw_grid", acc, **g)
    best_acc = max(a for _, a in grid)
    for crit in ("half_source", "mass"):
        g, acc = max(grid, key=lambda ga: ga[0][crit])  # first maximum, as select_config
        add(f"auto_{crit}", acc, grid_best=best_acc, selected=g, wall_select_s=round(t_sel, 1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/work/cache-h14"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/pearl-transfer.jsonl"))
    ap.add_argument("--pairs", type=int, nargs="*", default=list(range(len(PAIRS))))
    ap.add_argument("--seeds", type=int, nargs="*", default=SEEDS)
    args = ap.parse_args()
    config = TransferConfig()
    with args.out.open("a") as fh:
        for seed in args.seeds:
            for i in args.pairs:
                t0 = time.time()
                rows = run_cell(args.cache, PAIRS[i], seed, config)
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
                fh.flush()
                summary = {
                    r["method"]: round(r["label_accuracy"], 3)
                    for r in rows
                    if r["method"] != "fgw_grid"
                }
                best = max(r["label_accuracy"] for r in rows if r["method"] == "fgw_grid")
                print(
                    f"{rows[0]['pair']} seed {seed}: {summary} grid best {best:.3f} ({time.time() - t0:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
