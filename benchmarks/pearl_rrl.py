"""PEARL's robustness claim (RRL): source labels from the ``mistake`` teacher (eps 0.1 / 0.2 /
0.3) are transferred with ``transfer.method: auto``; on the same transferred labels a Gaussian
robust reward (RRL) and a plain Bradley-Terry MLP reward are trained, and both are scored on
500 held-out oracle-labelled target pairs. Datasets as ``benchmarks/pearl_transfer.py``.

    python benchmarks/pearl_rrl.py --out docs/results/pearl-rrl.jsonl
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

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pearl_transfer_data import DEFAULT_CACHE, PAIRS, get_dataset  # noqa: E402

from robopref.data import sample_queries  # noqa: E402
from robopref.rewards import (  # noqa: E402
    GaussianReward,
    MLPReward,
    RewardTrainer,
    RewardTrainerConfig,
)
from robopref.teachers import TeacherConfig, make_teacher  # noqa: E402
from robopref.transfer import (  # noqa: E402
    TransferConfig,
    label_accuracy,
    sample_pool_pairs,
    transfer_labels,
)
from robopref.utils import seed_everything  # noqa: E402


def report(path: Path) -> str:
    """Markdown table (mean ± std over seeds) from the JSON rows at ``path``."""
    import numpy as np

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| pair | teacher eps | seeds | source label error | transferred label acc. "
        "| Gaussian (RRL) reward acc. | plain BT reward acc. | RRL - BT (per seed) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ms(v):
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

    for pair in dict.fromkeys(r["pair"] for r in rows):
        for eps in sorted({r["teacher_eps"] for r in rows if r["pair"] == pair}):
            sel = [r for r in rows if r["pair"] == pair and r["teacher_eps"] == eps]
            seeds = sorted({r["seed"] for r in sel})
            g = {r["seed"]: r["reward_accuracy"] for r in sel if r["reward"] == "gaussian_rrl"}
            b = {r["seed"]: r["reward_accuracy"] for r in sel if r["reward"] == "bt"}
            first = {r["seed"]: r for r in sel}
            diffs = " ".join(f"{g[k] - b[k]:+.3f}" for k in seeds if k in g and k in b)
            out.append(
                f"| {pair} | {eps} | {len(seeds)} "
                f"| {ms([first[k]['source_label_error'] for k in seeds])} "
                f"| {ms([first[k]['transferred_label_accuracy'] for k in seeds])} "
                f"| {ms(list(g.values()))} | {ms(list(b.values()))} | {diffs} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=Path("docs/results/pearl-rrl.jsonl"))
    ap.add_argument("--pair", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--eps", type=float, nargs="*", default=[0.1, 0.2, 0.3])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--report", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args()
    if args.report:
        print(report(args.out))
        return
    torch.set_num_threads(1)
    pair = PAIRS[args.pair]
    with args.out.open("a") as fh:
        for seed in args.seeds:
            source = get_dataset(args.cache, pair[0], seed)
            target = get_dataset(args.cache, pair[1], 100 + seed)
            oracle = make_teacher(TeacherConfig(name="oracle"))
            for eps in args.eps:
                rng = seed_everything(seed)
                src_pairs = sample_pool_pairs(source, 300, 3000, 25, rng)
                source_q = make_teacher(TeacherConfig(name="mistake", eps=eps, seed=seed)).label(
                    source, src_pairs
                )
                src_noise = 1.0 - label_accuracy(source_q, oracle.label(source, src_pairs))
                target_q = sample_pool_pairs(target, 300, 2000, 25, rng)
                eval_q = oracle.label(target, sample_queries(target, 500, 2, 25, rng))
                labels, info = transfer_labels(source, source_q, target, target_q, TransferConfig())
                acc = label_accuracy(labels, oracle.label(target, target_q))
                obs_dim, act_dim = target[0].state.shape[1], target[0].actions.shape[1]
                for name in ("gaussian_rrl", "bt"):
                    t0 = time.time()
                    seed_everything(seed)
                    model = (
                        GaussianReward(obs_dim, act_dim, hidden=(256, 256), prior_std=0.1)
                        if name == "gaussian_rrl"
                        else MLPReward(obs_dim, act_dim, hidden=(256, 256))
                    )
                    cfg = RewardTrainerConfig(
                        epochs=args.epochs, batch_size=64, lr=3e-4, seed=seed, device="cpu",
                        quiet=True,
                    )  # fmt: skip
                    trainer = RewardTrainer(model, cfg)
                    trainer.fit(target, labels)
                    row = {
                        "pair": f"{pair[0][:-3]}->{pair[1][:-3]}", "seed": seed,
                        "teacher_eps": eps, "source_label_error": round(src_noise, 4),
                        "transferred_label_accuracy": acc, "reward": name,
                        "reward_accuracy": trainer.accuracy(target, eval_q),
                        "auto_alpha": info.get("auto_alpha"),
                        "auto_epsilon": info.get("auto_epsilon"),
                        "auto_cross_feature": info.get("auto_cross_feature"),
                        "wall_s": round(time.time() - t0, 1),
                    }  # fmt: skip
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    print(row, flush=True)


if __name__ == "__main__":
    main()
