"""robopref.ot vs POT, side by side in one process on identical inputs.

CPU section (always):
  * entropic GW, square loss: POT ``ot.gromov.entropic_gromov_wasserstein`` (numpy, PGD, default
    inner Sinkhorn) for ``--outer`` outer iterations vs robopref (Numba engine, same outer map,
    same eps, same init p q^T). Reported: POT time, objective and marginal violation; our time
    to reach POT's objective (within ``--rtol``: the smallest outer cap k in CAPS whose run,
    timed from scratch, ends at or below it with marginals within 1e-6); our time with the same
    outer cap as POT; the ratios.
  * Sinkhorn: POT ``ot.sinkhorn`` (``sinkhorn_knopp`` and ``sinkhorn_log``) vs robopref to the
    same marginal tolerance.
GPU section (only when CUDA is available): torch engine vs POT with the torch backend on CUDA,
and batched GW (``--batch`` problems of size ``--batch-n``).

Instance: two Gaussian point clouds (2-D and 3-D), Euclidean distances divided by their max,
uniform weights, seed 0.

    python benchmarks/ot.py                      # n = 128 256, a few minutes on 2 cores
    python benchmarks/ot.py --sizes 128 256 512 1024 2048 --threads 1
    python benchmarks/ot.py --default-sizes 512 --no-fixed-cap --no-sinkhorn --threads 1

"Default call vs default call" (``--default-sizes``): POT's and our entropic GW and FGW called
with default settings (each stops by its own default rule), interleaved ``--reps`` times.
"""

from __future__ import annotations

import argparse
import os
import sys

# this file is called ot.py: keep its folder off sys.path so that `import ot` finds POT
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 256], help="n for the CPU GW table"
    )
    ap.add_argument("--eps", type=float, default=5e-3, help="entropic regularisation (GW)")
    ap.add_argument(
        "--outer", type=int, default=100, help="outer GW iterations (POT and cap for us)"
    )
    ap.add_argument("--rtol", type=float, default=1e-5, help="'same objective' relative tolerance")
    ap.add_argument("--sinkhorn-eps", type=float, default=1e-2, help="eps for the Sinkhorn table")
    ap.add_argument(
        "--threads", type=int, default=0, help="BLAS/Numba threads (0: library default)"
    )
    ap.add_argument("--no-sinkhorn", action="store_true", help="skip the Sinkhorn table")
    ap.add_argument("--no-fixed-cap", action="store_true", help="skip the fixed-cap GW table")
    ap.add_argument(
        "--default-sizes", type=int, nargs="*", default=[],
        help="n for the 'default call vs default call' table (GW and FGW; e.g. 512)",
    )  # fmt: skip
    ap.add_argument(
        "--default-eps", type=float, nargs="+", default=[0.005, 0.01, 0.05],
        help="eps values of the default-call table",
    )  # fmt: skip
    ap.add_argument("--reps", type=int, default=3, help="default-call table: interleaved repeats")
    ap.add_argument("--alpha", type=float, default=0.5, help="FGW trade-off (default-call table)")
    ap.add_argument("--gpu-sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--batch", type=int, default=256, help="GPU batched GW: number of problems")
    ap.add_argument("--batch-n", type=int, default=128, help="GPU batched GW: size of each")
    ap.add_argument("--gpu-device", default="cuda", help="'cpu' smoke-tests the GPU section")
    ap.add_argument("--skip-pot-gpu-above", type=int, default=4096, help="skip slow POT GPU runs")
    return ap.parse_args()


ARGS = _parse()
if ARGS.threads > 0:  # must be set before numpy / numba are imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
import ot  # noqa: E402

import robopref.ot as rot  # noqa: E402


def instance(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
    C1 = ot.dist(X, X, metric="euclidean")
    C2 = ot.dist(Y, Y, metric="euclidean")
    return C1 / C1.max(), C2 / C2.max(), ot.unif(n), ot.unif(n)


def marg_err(T, p, q) -> float:
    """L1 violation of both marginals (numpy or torch)."""
    return float(abs(T.sum(1) - p).sum() + abs(T.sum(0) - q).sum())


# outer-iteration caps tried, in order, to find the cheapest run that reaches POT's objective
CAPS = (5, 10, 15, 20, 30, 40, 60, 80, 100, 150, 200, 300)


def ours_to_target(C1, C2, p, q, target: float, timer):
    """Smallest cap k in CAPS (<= --outer) whose run ends with objective <= target (1 + rtol)
    and marginals within 1e-6; each run is timed from scratch (its final inner Sinkhorn is
    always solved to full accuracy, so the coupling is a proper one). Returns (k, s, obj)."""
    for k in (c for c in CAPS if c <= ARGS.outer):
        (T, log), t = timer(
            partial(
                rot.entropic_gromov_wasserstein,
                C1,
                C2,
                p,
                q,
                ARGS.eps,
                max_iter=k,
                tol=0.0,
                log=True,
            )  # fmt: skip
        )
        obj = float(log["gw_dist"])
        if obj <= target * (1 + ARGS.rtol) and marg_err(T, p, q) <= 1e-6:
            return k, t, obj
    return None, None, None


def cpu_timer(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def gw_row(n, C1, C2, p, q, timer, pot_enabled=True) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pot_enabled:
            (T_pot, log_pot), t_pot = timer(
                partial(
                    ot.gromov.entropic_gromov_wasserstein, C1, C2, p, q, "square_loss",
                    epsilon=ARGS.eps, max_iter=ARGS.outer, tol=0.0, log=True,
                )
            )  # fmt: skip
            obj_pot, err_pot = float(log_pot["gw_dist"]), f"{marg_err(T_pot, p, q):.1e}"
        else:
            t_pot, obj_pot, err_pot = float("nan"), float("nan"), "-"
        (T, log), t_full = timer(
            partial(
                rot.entropic_gromov_wasserstein, C1, C2, p, q, ARGS.eps, max_iter=ARGS.outer,
                tol=0.0, log=True,
            )
        )  # fmt: skip
        k, t_hit, obj_hit = ours_to_target(C1, C2, p, q, obj_pot, timer)
    hit = f"{t_hit:.3f} (k = {k}, {obj_hit:.7f})" if k else "not reached"
    ratio = f"**{t_pot / t_hit:.1f}x**" if k else "-"
    return (
        f"| {n} | {t_pot:.3f} | {obj_pot:.7f} | {err_pot} | {hit} | {ratio} "
        f"| {t_full:.3f} | {t_pot / t_full:.1f}x | {float(log['gw_dist']):.7f} "
        f"| {marg_err(T, p, q):.1e} | {log['inner_iter']} |"
    )


GW_HEADER = [
    "| n | POT time (s) | POT objective | POT marg. err | ours: time to POT objective (s) "
    "| ratio | ours, same outer cap (s) | ratio | ours objective | ours marg. err "
    "| ours inner it. |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def cpu_gw() -> list[str]:
    rows = list(GW_HEADER)
    print("\n".join(rows), flush=True)
    for n in ARGS.sizes:
        rows.append(gw_row(n, *instance(n), cpu_timer))
        print(rows[-1], flush=True)
    return rows


def fgw_cost(n: int, seed: int = 0):
    """Cross-domain feature cost of :func:`instance`: distances between the first two
    coordinates of the two clouds, divided by the max."""
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
    M = ot.dist(X, Y[:, :2])
    return M / M.max()


def default_calls() -> list[str]:
    """POT's default call against ours, each stopping by its own default rule.

    POT: ``entropic_gromov_wasserstein(C1, C2, p, q, "square_loss", epsilon=eps)`` and
    ``entropic_fused_gromov_wasserstein(M, ..., alpha=alpha)`` (max_iter 1000, tol 1e-9 on
    ``||dT||_F`` tested every 10th iteration, inner Sinkhorn 1000 iterations / 1e-9). Ours:
    ``rot.entropic_(fused_)gromov_wasserstein(..., eps)`` with no stopping argument. Runs are
    interleaved (POT, ours, POT, ours, ...) ``--reps`` times; medians are reported.
    """
    rows = [
        "| n | problem | eps | POT median (s) | ours median (s) | ratio of medians "
        "| per-rep ratios | POT outer it. | ours outer it. | POT objective | ours objective "
        "| rel. gap | ours marg. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    for n in ARGS.default_sizes:
        C1, C2, p, q = instance(n)
        M = fgw_cost(n)
        for eps in ARGS.default_eps:
            for kind in ("GW", "FGW"):
                if kind == "GW":
                    pot = partial(
                        ot.gromov.entropic_gromov_wasserstein, C1, C2, p, q, "square_loss",
                        epsilon=eps, log=True,
                    )  # fmt: skip
                    ours = partial(rot.entropic_gromov_wasserstein, C1, C2, p, q, eps, log=True)
                    key = "gw_dist"
                else:
                    pot = partial(
                        ot.gromov.entropic_fused_gromov_wasserstein, M, C1, C2, p, q,
                        "square_loss", epsilon=eps, alpha=ARGS.alpha, log=True,
                    )  # fmt: skip
                    ours = partial(
                        rot.entropic_fused_gromov_wasserstein, M, C1, C2, p, q, eps,
                        ARGS.alpha, log=True,
                    )  # fmt: skip
                    key = "fgw_dist"
                t_pot, t_ours = [], []
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for _ in range(ARGS.reps):
                        (T_p, log_p), t = cpu_timer(pot)
                        t_pot.append(t)
                        (T_o, log_o), t = cpu_timer(ours)
                        t_ours.append(t)
                obj_p, obj_o = float(log_p[key]), float(log_o[key])
                ratios = " ".join(f"{a / b:.1f}" for a, b in zip(t_pot, t_ours))
                mp, mo = float(np.median(t_pot)), float(np.median(t_ours))
                name = kind if kind == "GW" else f"FGW (alpha {ARGS.alpha:g})"
                rows.append(
                    f"| {n} | {name} | {eps:g} | {mp:.3f} | {mo:.3f} | **{mp / mo:.1f}x** "
                    f"| {ratios} | {10 * (len(log_p['err']) - 1) + 1} "
                    f"| {log_o['n_iter']} | {obj_p:.9f} | {obj_o:.9f} "
                    f"| {(obj_o - obj_p) / abs(obj_p):+.1e} | {marg_err(T_o, p, q):.1e} |"
                )
                print(rows[-1], flush=True)
    return rows


def cpu_sinkhorn() -> list[str]:
    rows = [
        "| n | eps | POT sinkhorn_knopp (s) | POT sinkhorn_log (s) | ours (s) | ratio vs knopp "
        "| ratio vs log | ours iters | max plan diff / max plan |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    for n in ARGS.sizes:
        C1, C2, p, q = instance(n)
        rng = np.random.default_rng(1)
        M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)))
        M /= M.max()
        eps, tol = ARGS.sinkhorn_eps, 1e-9
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ot.sinkhorn(p, q, M, eps, numItermax=100000, stopThr=tol)
            t_k = time.perf_counter() - t0
            t0 = time.perf_counter()
            P_log = ot.sinkhorn(p, q, M, eps, method="sinkhorn_log", numItermax=100000, stopThr=tol)
            t_l = time.perf_counter() - t0
            t0 = time.perf_counter()
            P, log = rot.sinkhorn(p, q, M, eps, max_iter=100000, tol=tol, log=True)
            t_o = time.perf_counter() - t0
        diff = np.abs(P - P_log).max() / P_log.max()
        rows.append(
            f"| {n} | {eps:g} | {t_k:.4f} | {t_l:.4f} | {t_o:.4f} | {t_k / t_o:.1f}x "
            f"| {t_l / t_o:.1f}x | {int(log['n_iter'])} | {diff:.1e} |"
        )
        print(rows[-1], flush=True)
    return rows


def gpu() -> list[str]:
    import torch

    dev = torch.device(ARGS.gpu_device)
    cuda = dev.type == "cuda"
    rows = [f"device: {torch.cuda.get_device_name(dev) if cuda else dev}", "", *GW_HEADER]
    print("\n".join(rows), flush=True)

    def sync_time(fn):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    C1, C2, p, q = (torch.as_tensor(x, device=dev) for x in instance(64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rot.entropic_gromov_wasserstein(C1, C2, p, q, ARGS.eps, max_iter=3)  # CUDA warm-up
    for n in ARGS.gpu_sizes:
        C1, C2, p, q = (torch.as_tensor(x, device=dev) for x in instance(n))
        rows.append(gw_row(n, C1, C2, p, q, sync_time, n <= ARGS.skip_pot_gpu_above))
        print(rows[-1], flush=True)

    B, n = ARGS.batch, ARGS.batch_n
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(B, n, 2)), device=dev)
    Y = torch.as_tensor(rng.normal(size=(B, n, 3)), device=dev)
    C1, C2 = torch.cdist(X, X), torch.cdist(Y, Y)
    C1 = C1 / C1.amax((-1, -2), keepdim=True)
    C2 = C2 / C2.amax((-1, -2), keepdim=True)
    for dtype in (torch.float64, torch.float32):
        (T, log), t_b = sync_time(
            lambda dtype=dtype: rot.entropic_gromov_wasserstein_batched(
                C1.to(dtype), C2.to(dtype), None, None, 0.05, max_iter=ARGS.outer, tol=1e-6,
                inner_tol=1e-6, log=True,
            )
        )  # fmt: skip
        rows.append(
            f"\nBatched GW ({dtype}): {B} problems of n = {n}, eps = 0.05, tol = 1e-6: "
            f"{t_b:.3f} s, {log['n_iter']} outer / {log['inner_iter']} inner iterations"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    t = rot.warmup()
    print(f"# robopref.ot benchmark  (numba warm-up {t:.1f} s)")
    print("command: python " + " ".join(sys.argv))
    print(f"POT {ot.__version__}, numpy {np.__version__}, threads={ARGS.threads or 'default'}\n")
    if ARGS.default_sizes:
        print("## Default call vs default call (each solver's own stopping rule)\n")
        default_calls()
    if not ARGS.no_fixed_cap:
        print(f"\n## Entropic GW, square loss, eps = {ARGS.eps}, {ARGS.outer} outer iterations\n")
        cpu_gw()
    if not ARGS.no_sinkhorn:
        print(f"\n## Sinkhorn, eps = {ARGS.sinkhorn_eps}, tol 1e-9 (L1 marginal)\n")
        cpu_sinkhorn()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda or ARGS.gpu_device != "cuda":
        print(f"\n## GPU section ({ARGS.gpu_device}): torch engine vs POT (torch backend)\n")
        gpu()
    else:
        print("\n(no CUDA device: GPU section skipped)")


if __name__ == "__main__":
    main()
