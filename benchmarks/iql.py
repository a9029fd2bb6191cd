"""IQL update throughput: robopref's IQL vs a plain single-file torch IQL vs d3rlpy 2.8.1.

Every implementation trains on identical random data (``--size`` transitions, obs 39, action
4, reward N(0, 1), no terminals) with identical batch indices (one ``torch.Generator`` seeded
the same), 256x256 ReLU networks, batch 256, CPU. Each implementation runs in its own
long-lived worker subprocess (its own thread pool; d3rlpy in its own virtualenv), warmed up
once; the driver then goes round-robin over the workers, ``--rounds`` times, asking each for
``--chunk`` updates in a rotated order, so that the measurements being compared are seconds
apart. The machine is shared: the report gives the median rate and the median over rounds of
the ratio to the peer (and to the matmul floor) within the same round.

``floor``: the time of the matrix multiplications of one robopref IQL update alone (every
forward ``x W^T`` and backward ``dY^T X``, ``dY W`` at the same shapes, as plain ``torch.mm`` on
preallocated tensors), i.e. the update rate if nothing but the matmul FLOPs cost time.

d3rlpy 2.8.1 pins gymnasium 1.0, so it lives in its own virtualenv (``--d3rlpy-python``,
default ``.venv-d3rlpy/bin/python`` under the working directory; skipped when absent). Make it
with::

    python3.11 -m venv .venv-d3rlpy
    .venv-d3rlpy/bin/pip install torch==2.13.0   # the CPU build, before d3rlpy
    .venv-d3rlpy/bin/pip install d3rlpy==2.8.1

``ours`` is the default config as ``train()`` runs a long run (``compile="auto"``: compiled),
``ours_eager`` the same with ``compile=False`` (what ``auto`` gives runs under 50k steps).
On a machine loaded by other processes, ``--clock cpu`` times each worker by its own CPU time
instead of the wall clock (with ``--threads 1``).

Run::

    python benchmarks/iql.py --rounds 30 --chunk 10 --threads 1
    python benchmarks/iql.py --rounds 30 --chunk 10 --threads 1 --clock cpu
    python benchmarks/iql.py --rounds 20 --chunk 10 --threads 2
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

    if impl in ("ours", "ours_eager", "ours_unfused"):
        sys.path.insert(0, str(REPO))
        from robopref.policies.offline.common import Batch
        from robopref.policies.offline.iql import IQL, IQLConfig

        # "ours": the default config (compile="auto") as train() runs it for a long run, i.e.
        # compiled; "ours_eager": compile=False, which is also what "auto" gives runs shorter
        # than COMPILE_AUTO_MIN_STEPS; "ours_unfused": eager with the foreach Adam.
        options = {"ours": {}, "ours_eager": {"compile": False}}.get(
            impl, {"compile": False, "fused_adam": False}
        )
        agent = IQL(OBS, ACT, IQLConfig(device="cpu", steps=10**6, **options))
        agent._before_training(agent.config.steps)  # what train() does before its loop

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


def serve(impl: str, threads: int, warmup: int, size: int, clock: str = "wall") -> None:
    """Worker loop: build ``impl``, warm up, then for each line ``K`` on stdin run ``K`` updates
    and print their time in seconds (one line): wall-clock, or with ``clock="cpu"`` the CPU
    time of this process (all its threads), which does not count the time it waits for a core
    on a machine loaded by other processes."""
    timer = time.process_time if clock == "cpu" else time.perf_counter
    import torch

    torch.set_num_threads(threads)
    if impl == "floor":
        shapes = floor_shapes()
        mats = [(torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)) for m, k, n in shapes]

        def one():
            for a, b, c in mats:
                torch.mm(a, b, out=c)
    else:
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
        block = torch.empty(BATCH, packed.shape[1])

        def one():
            idx = next(stream)
            if wants_packed:  # gathered as robopref's train() does, into a preallocated block
                update({"packed": torch.index_select(packed, 0, idx, out=block)})
            else:
                update({k: v[idx] for k, v in data.items()})

    t0 = time.perf_counter()  # the warm-up (with any compile) is reported in wall-clock seconds
    for _ in range(warmup):
        one()
    print(f"ready {time.perf_counter() - t0:.2f}", flush=True)
    for line in sys.stdin:
        k = int(line)
        t0 = timer()
        for _ in range(k):
            one()
        print(f"{timer() - t0:.6f}", flush=True)


class Worker:
    """A served worker subprocess (see :func:`serve`)."""

    def __init__(self, python: str, impl: str, threads: int, args):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        warmup = args.warmup_compile if impl == "ours" else args.warmup
        cmd = [python, __file__, "--worker", impl, "--threads", str(threads)]
        cmd += ["--warmup", str(warmup), "--size", str(args.size), "--clock", args.clock]
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"{impl} worker failed to start (see its stderr above)")
        self.warmup_s = float(line.split()[1])

    def rate(self, k: int) -> float:
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        return k / float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=30, help="round-robin rounds per thread count")
    p.add_argument("--chunk", type=int, default=10, help="updates per worker per round")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--warmup-compile", type=int, default=60, help="warm-up updates of 'ours'")
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument(
        "--impls",
        nargs="+",
        default=["ours", "ours_eager", "plain", "d3rlpy", "floor"],
        help="any of ours (default config, long run: compiled), ours_eager (compile: false, "
        "also the default for runs under 50k steps), ours_unfused, plain, d3rlpy, floor",
    )
    p.add_argument("--d3rlpy-python", default=".venv-d3rlpy/bin/python")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time updates by wall clock or by each worker's CPU time (for a loaded machine; "
        "with threads > 1 the CPU time sums the threads, so use it with --threads 1)",
    )
    p.add_argument("--json", help="write all measurements here")
    args = p.parse_args()
    if args.worker:
        serve(args.worker, args.threads[0], args.warmup, args.size, args.clock)
        return
    impls = list(args.impls)
    if "d3rlpy" in impls and not Path(args.d3rlpy_python).exists():
        print(f"skipping d3rlpy: {args.d3rlpy_python} not found", file=sys.stderr)
        impls.remove("d3rlpy")
    peer = next((i for i in ("d3rlpy", "plain", "ours") if i in impls), impls[0])
    results: dict[str, list[float]] = {}
    table = [
        f"| implementation | threads | updates/s (median) | x {peer} (median ratio) | "
        "% of matmul floor (median ratio) | % of floor, quartiles of the ratio | warm-up s |",
        "|---|---|---|---|---|---|---|",
    ]
    for threads in args.threads:
        workers = {
            impl: Worker(
                args.d3rlpy_python if impl == "d3rlpy" else sys.executable, impl, threads, args
            )
            for impl in impls
        }
        rates: dict[str, list[float]] = {impl: [] for impl in impls}
        for r in range(args.rounds):
            order = impls[r % len(impls) :] + impls[: r % len(impls)]
            for impl in order:  # rotated, so no implementation always runs after another
                rates[impl].append(workers[impl].rate(args.chunk))
            print(
                f"threads {threads} round {r}: "
                + ", ".join(f"{i} {rates[i][-1]:.1f}" for i in impls),
                file=sys.stderr,
                flush=True,
            )
        for w in workers.values():
            w.close()
        for impl in impls:
            vals = rates[impl]
            results[f"{impl}@{threads}"] = vals
            ratio = statistics.median(v / w for v, w in zip(vals, rates[peer]))
            floor = spread = ""
            if "floor" in impls and impl != "floor":
                fr = [100 * v / w for v, w in zip(vals, rates["floor"])]
                q1, q2, q3 = statistics.quantiles(fr, n=4)
                floor, spread = f"{q2:.0f} %", f"{q1:.0f}-{q3:.0f} %"
            table.append(
                f"| {impl} | {threads} | {statistics.median(vals):.1f} | {ratio:.2f} | {floor} | "
                f"{spread} | {workers[impl].warmup_s:.1f} |"
            )
        print("\n".join(table), file=sys.stderr, flush=True)  # so far, in case a later one hangs
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    print("\n".join(table))
    if "floor" in impls:
        shapes = floor_shapes()
        print(
            f"\nrobopref IQL update: {sum(2 * m * k * n for m, k, n in shapes) / 1e9:.3f} GFLOP "
            f"in {len(shapes)} matmuls"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
