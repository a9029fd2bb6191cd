"""IQL update throughput: robopref's IQL vs a plain single-file torch IQL vs d3rlpy 2.8.1.

Every implementation trains on identical random data (``--size`` transitions, obs 39, action
4, reward N(0, 1), no terminals) with identical batch indices (one ``torch.Generator`` seeded
the same), 256x256 ReLU networks, batch 256, CPU. Each (implementation, threads) measurement is
a fresh subprocess (so thread pools and allocators do not leak between them) that does
``--warmup`` updates and then times ``--updates``; the measurements are interleaved over
``--reps`` repetitions, in a rotated order, because the machine is shared. The report gives the
median updates/s and the median of the per-repetition ratios to the peer.

``floor``: the time of the matrix multiplications of one robopref IQL update alone (every
forward ``x W^T`` and backward ``dY^T X``, ``dY W`` at the same shapes, as plain ``torch.mm`` on
preallocated tensors), i.e. the update rate if nothing but the matmul FLOPs cost time.

d3rlpy 2.8.1 pins gymnasium 1.0, so it lives in its own virtualenv (``--d3rlpy-python``,
default ``/work/d3rlpy-venv/bin/python``; skipped when absent). Make it with::

    python3.11 -m venv /work/d3rlpy-venv
    /work/d3rlpy-venv/bin/pip install torch==2.13.0   # the CPU build, before d3rlpy
    /work/d3rlpy-venv/bin/pip install d3rlpy==2.8.1

Run::

    python benchmarks/iql.py --reps 5 --updates 300 --threads 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OBS, ACT, HIDDEN, BATCH = 39, 4, 256, 256
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- shared data
def make_data(size: int, seed: int):
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    data = {
        "obs": rng.normal(size=(size, OBS)),
        "act": rng.uniform(-1, 1, (size, ACT)),
        "reward": rng.normal(size=size),
        "next_obs": rng.normal(size=(size, OBS)),
        "terminal": np.zeros(size),
    }
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in data.items()}


def index_stream(size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(0, size, (BATCH,), generator=gen)


# ----------------------------------------------------------------------- plain reference
def plain_iql():
    """A plain single-file IQL (CORL-style, authors' update order), built lazily."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def net(i, o):
        return nn.Sequential(
            nn.Linear(i, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, o),
        )

    class Plain:
        def __init__(self):
            torch.manual_seed(0)
            self.q1, self.q2 = net(OBS + ACT, 1), net(OBS + ACT, 1)
            self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
            self.v = net(OBS, 1)
            self.pi = net(OBS, ACT)
            self.log_std = nn.Parameter(torch.zeros(ACT))
            self.v_opt = torch.optim.Adam(self.v.parameters(), lr=3e-4)
            self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=3e-4)
            self.pi_opt = torch.optim.Adam([*self.pi.parameters(), self.log_std], lr=3e-4)

        def update(self, b):
            obs, act, rew, nobs, term = (
                b["obs"],
                b["act"],
                b["reward"],
                b["next_obs"],
                b["terminal"],
            )
            sa = torch.cat([obs, act], -1)
            with torch.no_grad():
                tq = torch.min(self.q1_t(sa), self.q2_t(sa)).squeeze(-1)
            v = self.v(obs).squeeze(-1)
            u = tq - v
            v_loss = (torch.abs(0.7 - (u < 0).float()) * u**2).mean()
            self.v_opt.zero_grad()
            v_loss.backward()
            self.v_opt.step()
            with torch.no_grad():
                adv = tq - self.v(obs).squeeze(-1)
                w = torch.exp(3.0 * adv).clamp(max=100.0)
                nv = self.v(nobs).squeeze(-1)
            mean = torch.tanh(self.pi(obs))
            std = self.log_std.clamp(-5, 2).exp()
            logp = torch.distributions.Normal(mean, std).log_prob(act).sum(-1)
            pi_loss = -(w * logp).mean()
            self.pi_opt.zero_grad()
            pi_loss.backward()
            self.pi_opt.step()
            y = rew + 0.99 * (1 - term) * nv
            q_loss = F.mse_loss(self.q1(sa).squeeze(-1), y) + F.mse_loss(self.q2(sa).squeeze(-1), y)
            self.q_opt.zero_grad()
            q_loss.backward()
            self.q_opt.step()
            with torch.no_grad():
                for m, t in ((self.q1, self.q1_t), (self.q2, self.q2_t)):
                    for p, tp in zip(m.parameters(), t.parameters()):
                        tp.mul_(0.995).add_(0.005 * p)

    return Plain()


# --------------------------------------------------------------------------------- workers
def make_updater(impl: str):
    """Return ``update(batch_dict)`` for ``impl``."""
    import torch

    if impl in ("ours", "ours_compile", "ours_unfused"):
        sys.path.insert(0, str(REPO))
        from robopref.policies.common import Batch
        from robopref.policies.iql import IQL, IQLConfig

        agent = IQL(
            OBS,
            ACT,
            IQLConfig(
                device="cpu",
                steps=10**6,
                compile=impl == "ours_compile",
                fused_adam=impl != "ours_unfused",
            ),
        )

        def update(b):
            agent._lr_schedule()
            agent._step(Batch(b["packed"], OBS, ACT))
            agent.step += 1

        return update, True
    if impl == "plain":
        return plain_iql().update, False
    if impl == "d3rlpy":
        import d3rlpy
        from d3rlpy.torch_utility import TorchMiniBatch

        algo = d3rlpy.algos.IQLConfig(batch_size=BATCH).create(device="cpu:0")
        algo.create_impl((OBS,), ACT)
        ones = torch.ones(BATCH, 1)

        def update(b):
            mb = TorchMiniBatch(
                observations=b["obs"],
                actions=b["act"],
                rewards=b["reward"][:, None],
                next_observations=b["next_obs"],
                next_actions=b["act"],
                returns_to_go=torch.zeros(BATCH, 1),
                terminals=b["terminal"][:, None],
                intervals=ones,
                device="cpu:0",
            )
            algo.impl.update(mb, algo._grad_step)
            algo._grad_step += 1

        return update, False
    raise ValueError(f"unknown impl {impl!r}")


def floor_shapes() -> list[tuple[int, int, int]]:
    """``(M, K, N)`` of every matmul of one robopref IQL update (forward and backward)."""
    shapes = []

    def mlp(in_dim, out_dim, forward_only=False):
        dims = [in_dim, HIDDEN, HIDDEN, out_dim]
        for i, (k, n) in enumerate(zip(dims[:-1], dims[1:])):
            shapes.append((BATCH, k, n))  # forward x W^T
            if not forward_only:
                shapes.append((n, BATCH, k))  # grad W = dY^T X
                if i > 0:
                    shapes.append((BATCH, n, k))  # grad X = dY W

    for _ in range(2):
        mlp(OBS + ACT, 1, forward_only=True)  # target critics
        mlp(OBS + ACT, 1)  # critics
    mlp(OBS, 1, forward_only=True)  # V(s')
    mlp(OBS, 1)  # V(s)
    mlp(OBS, ACT)  # actor
    return shapes


def worker(impl: str, threads: int, updates: int, warmup: int, size: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if impl == "floor":
        shapes = floor_shapes()
        mats = [(torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)) for m, k, n in shapes]
        flops = sum(2 * m * k * n for m, k, n in shapes)
        for _ in range(warmup):
            for a, b, c in mats:
                torch.mm(a, b, out=c)
        t0 = time.perf_counter()
        for _ in range(updates):
            for a, b, c in mats:
                torch.mm(a, b, out=c)
        dt = time.perf_counter() - t0
        return {"updates_per_s": updates / dt, "gflop_per_update": flops / 1e9}
    data = make_data(size, seed=0)
    packed = torch.cat(
        [
            data["obs"],
            data["act"],
            data["next_obs"],
            data["reward"][:, None],
            data["terminal"][:, None],
        ],
        dim=1,
    )
    update, wants_packed = make_updater(impl)
    stream = index_stream(size, seed=1)

    def batch():
        idx = next(stream)
        if wants_packed:
            return {"packed": packed[idx]}
        return {k: v[idx] for k, v in data.items()}

    t_compile = time.perf_counter()
    for _ in range(warmup):
        update(batch())
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(updates):
        update(batch())
    dt = time.perf_counter() - t0
    return {"updates_per_s": updates / dt, "warmup_s": t_compile}


def run_worker(python: str, impl: str, threads: int, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [
        python,
        __file__,
        "--worker",
        impl,
        "--threads",
        str(threads),
        "--updates",
        str(args.updates),
        "--warmup",
        str(args.warmup_compile if impl == "ours_compile" else args.warmup),
        "--size",
        str(args.size),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--warmup-compile", type=int, default=60)
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--impls",
        nargs="+",
        default=["ours", "plain", "d3rlpy", "floor"],
        help="any of ours, ours_unfused, ours_compile, plain, d3rlpy, floor",
    )
    p.add_argument("--d3rlpy-python", default="/work/d3rlpy-venv/bin/python")
    p.add_argument("--json", help="write all measurements here")
    args = p.parse_args()
    if args.worker:
        print(
            json.dumps(worker(args.worker, args.threads[0], args.updates, args.warmup, args.size))
        )
        return
    impls = list(args.impls)
    if "d3rlpy" in impls and not Path(args.d3rlpy_python).exists():
        print(f"skipping d3rlpy: {args.d3rlpy_python} not found", file=sys.stderr)
        impls.remove("d3rlpy")
    results: dict[tuple[str, int], list[float]] = {}
    for rep in range(args.reps):
        for threads in args.threads:
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for impl in order:
                python = args.d3rlpy_python if impl == "d3rlpy" else sys.executable
                r = run_worker(python, impl, threads, args)
                results.setdefault((impl, threads), []).append(r["updates_per_s"])
                extra = f" (warmup {r['warmup_s']:.1f} s)" if "warmup_s" in r else ""
                print(
                    f"rep {rep} threads {threads} {impl:13s} {r['updates_per_s']:7.1f} upd/s{extra}",
                    file=sys.stderr,
                    flush=True,
                )
    peer = next((i for i in ("d3rlpy", "plain", "ours") if i in impls), impls[0])
    print(
        f"\n| implementation | threads | updates/s (median of {args.reps}) | x {peer} (median ratio) | % of floor |"
    )
    print("|---|---|---|---|---|")
    for threads in args.threads:
        for impl in impls:
            vals = results[(impl, threads)]
            ratio = statistics.median(v / w for v, w in zip(vals, results[(peer, threads)]))
            floor = (
                f"{100 * statistics.median(v / w for v, w in zip(vals, results[('floor', threads)])):.0f} %"
                if "floor" in impls and impl != "floor"
                else ""
            )
            print(f"| {impl} | {threads} | {statistics.median(vals):.1f} | {ratio:.2f} | {floor} |")
    if "floor" in impls:
        shapes = floor_shapes()
        print(
            f"\nrobopref IQL update: {sum(2 * m * k * n for m, k, n in shapes) / 1e9:.3f} GFLOP in "
            f"{len(shapes)} matmuls"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({f"{k[0]}@{k[1]}": v for k, v in results.items()}, indent=1)
        )


if __name__ == "__main__":
    main()
