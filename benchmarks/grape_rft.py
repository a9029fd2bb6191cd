"""Why does rejection-sampling fine-tuning (RFT: behaviour cloning of a policy's own successful
rollouts) lower the success of the GRAPE SFT policy? One SFT checkpoint, one set of rollouts,
one factor changed per cell, every cell evaluated on the same episode configurations.

    OMP_NUM_THREADS=1 python benchmarks/grape_rft.py --out runs/rft-diag [--episodes 30]

Writes ``OUT/cells.jsonl`` (one line per cell, appended as cells finish: a rerun skips the cells
already there) and prints a markdown table. Cells: see ``CELLS``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from robopref.config import load_config
from robopref.methods.grape import Config
from robopref.methods.grape.recipe import build_policy, make_pool
from robopref.policies.vla import (
    EvalProtocol,
    apply_lora,
    evaluate,
    load_policy,
    rollout,
    save_policy,
    scripted_demos,
    select_rejection_sampling,
    sft_train,
)

# name -> (what changes, options); the base is the recipe's RFT round on the cpu.yaml setting
BASE = dict(
    lora=True, lr=3e-4, epochs=2, actions="sampled", rollouts=12, demos=False, eval_t=0.5, rounds=1
)
CELLS = {
    "sft": ("SFT, no fine-tuning", None),
    "base": ("RFT as in cpu.yaml: LoRA, lr 3e-4, 2 epochs, sampled actions, 12 rollouts/task", {}),
    "rounds2": ("2 rounds (fresh rollouts of the updated policy)", {"rounds": 2}),
    "full": ("full fine-tuning instead of LoRA", {"lora": False}),
    "lr1e-3": ("lr 1e-3", {"lr": 1e-3}),
    "lr3e-5": ("lr 3e-5", {"lr": 3e-5}),
    "epochs8": ("8 epochs (4x the steps)", {"epochs": 8}),
    "full_epochs8": ("full fine-tuning, 8 epochs", {"lora": False, "epochs": 8}),
    "greedy": ("imitate the greedy action at the visited states", {"actions": "greedy"}),
    "rollouts24": ("24 rollouts per task (about 2x the successes)", {"rollouts": 24}),
    "anchor": ("demos added to the BC data (SFT anchor)", {"demos": True}),
    "full_anchor8": ("full, 8 epochs, demos added", {"lora": False, "epochs": 8, "demos": True}),
    "more_sft": (
        "control: BC on the demos only, LoRA, 2 epochs",
        {"actions": "none", "demos": True},
    ),
    "lora_all": ("LoRA + trained action head and observation encoder", {"lora": "all"}),
    "lora_all8": ("LoRA + head and encoder, 8 epochs", {"lora": "all", "epochs": 8}),
    "sft_greedy_eval": ("SFT, greedy evaluation", {"eval_t": 0.0, "skip_train": True}),
    "base_greedy_eval": ("base, greedy evaluation", {"eval_t": 0.0}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="robopref/configs/grape/cpu.yaml")
    ap.add_argument("--episodes", type=int, default=30, help="evaluation episodes per task")
    ap.add_argument("--cells", nargs="*", default=list(CELLS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(Config, args.config, ["held_out_tasks=[]", "progress=false"])
    pool = make_pool(config)
    seed = config.seed
    sft_path = out / "sft.pt"
    demos = scripted_demos(
        pool, config.tasks, config.sft.demos_per_task, config.sft.action_noise, True,
        lambda ti, i: int(np.random.SeedSequence([seed, 1, ti, i]).generate_state(1)[0] % 2**31),
    )  # fmt: skip
    if not sft_path.exists():
        policy = build_policy(config)
        sft_train(policy, demos, **config.sft.train_options(), seed=seed)
        save_policy(policy, sft_path)
    done = {}
    cells_file = out / "cells.jsonl"
    if cells_file.exists():
        done = {json.loads(line)["cell"]: json.loads(line) for line in cells_file.open()}
    rollout_cache: dict = {}
    for name in args.cells:
        if name in done:
            continue
        # "cell@k": replicate k of a cell (other rollout seeds and update order)
        base_name, _, rep = name.partition("@")
        what, opts = CELLS[base_name]
        o = {**BASE, **(opts or {}), "rep": int(rep or 0)}
        t0 = time.perf_counter()
        policy = load_policy(sft_path)
        info: dict = {}
        if opts is not None and not o.get("skip_train"):
            if o["lora"]:
                lora = config.lora.model_dump()
                if o["lora"] == "all":
                    lora.update(train_action_head=True, train_obs_encoder=True)
                apply_lora(policy, **lora)
            info = fine_tune(config, policy, pool, demos, o, rollout_cache)
        t_train = time.perf_counter() - t0
        protocol = EvalProtocol(
            args.episodes, config.eval.seed, greedy=o["eval_t"] == 0, temperature=o["eval_t"] or 1
        )
        ev = evaluate(policy, pool, config.tasks, protocol)
        row = {
            "cell": name,
            "change": what,
            **{k: v for k, v in o.items() if k != "skip_train"},
            "success": ev["mean"]["success_rate"],
            "success_se": ev["mean"]["success_se"],
            "episodes": ev["mean"]["episodes"],
            "per_task": {t: m["success_rate"] for t, m in ev["per_task"].items()},
            "seconds_train": t_train,
            "seconds_eval": time.perf_counter() - t0 - t_train,
            **info,
        }
        with cells_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: {row['success']:.3f} ± {row['success_se']:.3f} {info}", flush=True)
    pool.close()


def fine_tune(config, policy, pool, demos, o, cache) -> dict:
    """``o['rounds']`` rounds of RFT (or BC on the demos) on ``policy``; returns a summary."""
    info: dict = {"kept": [], "rollout_success": [], "steps": 0}
    for r in range(o["rounds"]):
        data = list(demos) if o["demos"] else []
        if o["actions"] != "none":
            kept, success = successes(config, policy, pool, o["rollouts"], r + 10 * o["rep"], cache)
            if o["actions"] == "greedy":
                kept = [relabel_greedy(policy, t) for t in kept]
            data += kept
            info["kept"].append(len(kept))
            info["rollout_success"].append(success)
        hist = sft_train(
            policy, data, epochs=o["epochs"], batch_size=256, lr=o["lr"], seed=1000 + r + 10 * o["rep"],
            fit_normalization=False,
        )  # fmt: skip
        n_steps = sum(len(t) for t in data)
        info["steps"] += o["epochs"] * -(-n_steps // 256)
        info.setdefault("loss", []).append(hist[-1]["loss"])
    return info


def successes(config, policy, pool, per_task, r, cache):
    """The successful rollouts (T = 0.5) of ``policy``; those of the SFT policy (round 0 of a
    replicate) are shared by the cells."""
    key = (per_task, r) if r % 10 == 0 else None
    if key in cache:
        return cache[key]
    trajs = []
    for ti, task in enumerate(config.tasks):
        g = torch.Generator().manual_seed(7 + 100 * r + ti)
        seeds = [50_000 + 1000 * r + 100 * ti + i for i in range(per_task)]
        trajs += rollout(policy, pool, task, seeds, False, 0.5, g)
    ok = np.array([t.success for t in trajs])
    keep = select_rejection_sampling(
        np.zeros(len(trajs)), [t.task for t in trajs], ok, "success", 1
    )
    result = ([trajs[i] for i in keep], float(ok.mean()))
    if key is not None:
        cache[key] = result
    return result


def relabel_greedy(policy, traj):
    """``traj`` with each action replaced by the policy's greedy action at that state."""
    t = copy.copy(traj)
    states = np.asarray(traj.observations, dtype=np.float32)
    t.actions = policy.act(states, [traj.instruction] * len(states), greedy=True)
    return t


if __name__ == "__main__":
    main()
