"""Active query selection vs uniform at the same label budget: held-out reward accuracy.

    robopref collect --out data/bp.h5 "tasks=[button-press-v3]" expert_episodes=6 \
        noisy_episodes=12 goal_mismatch_episodes=6 random_episodes=6 other_task_episodes=0 \
        max_episode_steps=100
    python benchmarks/active_selection.py data/bp.h5 [--budget 60] [--seeds 0 1 2]

For each seed: a pool of 10 x budget candidate pairs (segment length 25), an oracle teacher,
``budget`` labels asked uniformly or by ensemble disagreement (retrained every
``retrain_every`` labels, B-Pref), then one MLP reward trained on the labels and its accuracy on
500 held-out oracle-labelled pairs (other segments, same trajectories).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robopref.data import load_dataset, sample_queries
from robopref.rewards.active import active_labels
from robopref.rewards.models import MLPReward
from robopref.rewards.trainer import RewardTrainer, RewardTrainerConfig
from robopref.teachers import make_teacher


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--budget", type=int, default=60)
    p.add_argument("--retrain-every", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    ds = load_dataset(args.dataset)
    teacher = make_teacher("oracle")
    heldout = teacher.label(
        ds, sample_queries(ds, 500, 2, 25, np.random.default_rng(10_000)), seed=0
    )
    rows = {}
    for strategy in ("uniform", "disagreement"):
        accs = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            pool = sample_queries(ds, 10 * args.budget, 2, 25, np.random.default_rng(seed))
            labels = active_labels(
                ds, pool, lambda q, s=seed: teacher.label(ds, q, seed=s), args.budget,
                strategy, args.retrain_every, seed=seed,
            )  # fmt: skip
            torch.manual_seed(seed)
            model = MLPReward(ds[0].state.shape[1], ds[0].actions.shape[1], hidden=(64, 64))
            cfg = RewardTrainerConfig(epochs=200, lr=1e-3, quiet=True, device="cpu", seed=seed,
                                      val_fraction=0.0, patience=None)  # fmt: skip
            trainer = RewardTrainer(model, cfg)
            trainer.fit(ds, labels)
            accs.append(trainer.accuracy(ds, heldout))
            print(f"{strategy} seed {seed}: {accs[-1]:.3f} ({time.perf_counter() - t0:.1f} s)")
        rows[strategy] = accs
    print("\n| selection | held-out accuracy (mean ± SE, 3 seeds) | per seed |")
    print("|---|---|---|")
    for strategy, accs in rows.items():
        a = np.asarray(accs)
        se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
        print(f"| {strategy} | {a.mean():.3f} ± {se:.3f} | {', '.join(f'{x:.3f}' for x in a)} |")


if __name__ == "__main__":
    main()
