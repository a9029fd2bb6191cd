"""Cost of a VLA on a SmolVLM-256M-sized model on the CPU: seconds per SFT step (LoRA on the
language model), per action decode, and peak memory. Random weights (built locally from the
published architecture sizes, nothing downloaded), 64x64 camera frames resized by the processor
to 512x512 (64 image tokens), 4 action tokens.

    OMP_NUM_THREADS=2 python benchmarks/vla_cost.py [--batch 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from robopref.data import Trajectory
from robopref.policies.vla import apply_lora, load_vlm, save_random_vlm, sft_train
from robopref.policies.vla.random_vlm import SMOLVLM_256M


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = SMOLVLM_256M
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        save_random_vlm(folder, s["family"], words=["reach the goal"], vocab_size=s["vocab_size"],
                        text=s["text"], vision=s["vision"], image_size=s["image_size"],
                        scale_factor=s["scale_factor"])  # fmt: skip
        policy = apply_lora(load_vlm(folder, dtype="float32"), rank=8)
        build = time.perf_counter() - t0
    params = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    demo = Trajectory({"image": frames}, rng.uniform(-1, 1, (args.batch, 4)).astype(np.float32),
                      np.zeros(args.batch), instruction="reach the goal")  # fmt: skip
    sft_train(policy, [demo], epochs=1, batch_size=args.batch, lr=1e-4)  # warm-up
    t0 = time.perf_counter()
    sft_train(policy, [demo], epochs=args.steps, batch_size=args.batch, lr=1e-4)
    step = (time.perf_counter() - t0) / args.steps
    policy.act(frames[:1], ["reach the goal"])
    t0 = time.perf_counter()
    for i in range(args.steps):
        policy.act(frames[i % args.batch : i % args.batch + 1], ["reach the goal"])
    decode = (time.perf_counter() - t0) / args.steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"SmolVLM-256M-sized ({params / 1e6:.0f}M parameters, LoRA {trainable / 1e6:.2f}M), "
          f"{args.threads} threads, float32: build+load {build:.1f} s, SFT step (batch "
          f"{args.batch}) {step:.2f} s, action decode (1 frame) {decode:.2f} s, peak RSS "
          f"{peak:.2f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
