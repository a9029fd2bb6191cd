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
    python benchmarks/ot.py --default-sizes 512 --no-fixed-cap --no-sinkhorn --threads 1 \
        --instances all --reps 2
    python benchmarks/ot.py --auto-baseline OLD_CHECKOUT --reps 3   # one transfer 'auto' call

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
    ap.add_argument(
        "--instances", nargs="+", default=["gauss-2d-3d-dist"],
        help="default-call instances: gauss-2d-3d-dist gauss-2d-3d-sqdist cube-10d-sqdist "
        "mixture-3d-dist-nonuniform knn-graph-shortest-paths pearl (or 'all')",
    )  # fmt: skip
    ap.add_argument(
        "--auto-baseline", default=None,
        help="folder with the previous robopref package: time one transfer 'auto' call, before "
        "(that package) vs after (this checkout), on the PEARL pair",
    )  # fmt: skip
    ap.add_argument("--auto-items", type=int, default=300, help="segments per task (auto call)")
    ap.add_argument("--auto-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--alpha", type=float, default=0.5, help="FGW trade-off (default-call table)")
    ap.add_argument("--gpu-sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--batch", type=int, default=256, help="GPU batched GW: number of problems")
    ap.add_argument("--batch-n", type=int, default=128, help="GPU batched GW: size of each")
    ap.add_argument("--gpu-device", default="cuda", help="'cpu' smoke-tests the GPU section")
    ap.add_argument("--skip-pot-gpu-above", type=int, default=4096, help="skip slow POT GPU runs")
    return ap.parse_args()


ARGS = _parse()
if ARGS.instances == ["all"]:
    ARGS.instances = [
        "gauss-2d-3d-dist", "gauss-2d-3d-sqdist", "cube-10d-sqdist",
        "mixture-3d-dist-nonuniform", "knn-graph-shortest-paths", "pearl",
    ]  # fmt: skip
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


def _euclid(X, Y=None, squared=False):
    D = ot.dist(X, X if Y is None else Y, metric="sqeuclidean" if squared else "euclidean")
    return D / D.max()


def _shortest_paths(X, k: int = 8):
    """Shortest-path distances on the symmetric k-nearest-neighbour graph of ``X``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    D = ot.dist(X, X, metric="euclidean")
    nn = np.argsort(D, axis=1)[:, 1 : k + 1]
    rows = np.repeat(np.arange(len(X)), k)
    W = csr_matrix((D[rows, nn.ravel()], (rows, nn.ravel())), shape=D.shape)
    S = shortest_path(W, directed=False)
    return S / S[np.isfinite(S)].max()


def _random_instance(name: str, n: int, seed: int = 0):
    """``(C1, C2, M, p, q)`` of a random instance (M: distances between the clouds' common
    coordinates / max)."""
    rng = np.random.default_rng(seed)
    p = q = ot.unif(n)
    if name == "gauss-2d-3d-dist":  # the original instance
        X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
        C1, C2 = _euclid(X), _euclid(Y)
    elif name == "gauss-2d-3d-sqdist":
        X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
        C1, C2 = _euclid(X, squared=True), _euclid(Y, squared=True)
    elif name == "cube-10d-sqdist":
        X, Y = rng.uniform(size=(n, 10)), rng.normal(size=(n, 10))
        C1, C2 = _euclid(X, squared=True), _euclid(Y, squared=True)
    elif name == "mixture-3d-dist-nonuniform":  # 4 clusters vs a ring, Dirichlet weights
        centers = rng.normal(scale=3.0, size=(4, 3))
        X = centers[rng.integers(0, 4, n)] + rng.normal(size=(n, 3))
        t = rng.uniform(0, 2 * np.pi, n)
        Y = np.c_[np.cos(t), np.sin(t), 0.1 * rng.normal(size=n)] * 3 + 0.2 * rng.normal(
            size=(n, 3)
        )
        C1, C2 = _euclid(X), _euclid(Y)
        p, q = rng.dirichlet(np.full(n, 2.0)), rng.dirichlet(np.full(n, 2.0))
    elif name == "knn-graph-shortest-paths":
        X, Y = rng.uniform(size=(n, 2)), rng.normal(size=(n, 2))
        C1, C2 = _shortest_paths(X), _shortest_paths(Y)
    else:
        raise ValueError(f"--instances: unknown instance {name!r}")
    k = min(X.shape[1], Y.shape[1], 2)
    return C1, C2, _euclid(X[:, :k], Y[:, :k]), p, q


RANDOM_INSTANCES = (
    "gauss-2d-3d-dist", "gauss-2d-3d-sqdist", "cube-10d-sqdist", "mixture-3d-dist-nonuniform",
    "knn-graph-shortest-paths",
)  # fmt: skip
PEARL_PAIR = ("window-open-v3", "window-close-v3")


def _pearl_problem(n_items: int, seed: int = 0, cache=None):
    """PEARL's own inputs for one study pair, built as ``robopref.transfer`` builds them:
    datasets from ``benchmarks/pearl_transfer_data.py``'s cache, a pool of ``n_items`` source
    and target segments, oracle labels on the source pairs, standardised ``mean_std``
    features and the default config. Returns ``(source, source_q, target, target_q, config)``
    and the structure / cross costs ``(c1, c2, M)`` of the default FGW call."""
    sys.path.insert(0, _HERE)
    from pearl_transfer_data import DEFAULT_CACHE, dataset_path

    from robopref.data import load_dataset
    from robopref.teachers import TeacherConfig, make_teacher
    from robopref.transfer import TransferConfig, sample_pool_pairs
    from robopref.transfer.cpa import (
        _joint_standardize,
        _task_features,
        normalized,
        pairwise_distances,
        standardize,
        unique_items,
    )

    cache = cache or DEFAULT_CACHE
    paths = [
        dataset_path(cache, PEARL_PAIR[0], seed),
        dataset_path(cache, PEARL_PAIR[1], 100 + seed),
    ]
    missing = [str(x) for x in paths if not x.exists()]
    if missing:
        raise FileNotFoundError(
            f"PEARL datasets not cached: {missing} (benchmarks/pearl_transfer_data.py)"
        )
    source, target = (load_dataset(x) for x in paths)
    rng = np.random.default_rng(seed)
    oracle = make_teacher(TeacherConfig(name="oracle"))
    source_q = oracle.label(source, sample_pool_pairs(source, n_items, 10 * n_items, 25, rng))
    target_q = sample_pool_pairs(target, n_items, 7 * n_items, 25, rng)
    config = TransferConfig()
    si, ti = unique_items(source_q), unique_items(target_q)
    xs = standardize(_task_features(source, si, config.feature, config, None))
    xt = standardize(_task_features(target, ti, config.feature, config, None))
    ms, mt = _joint_standardize(
        _task_features(source, si, config.cross_feature, config, None),
        _task_features(target, ti, config.cross_feature, config, None),
    )
    costs = (
        normalized(pairwise_distances(xs)),
        normalized(pairwise_distances(xt)),
        normalized(pairwise_distances(ms, mt)),
    )
    return (source, source_q, target, target_q, config), costs


def default_instances(n: int) -> list[tuple[str, tuple]]:
    out = []
    for name in ARGS.instances:
        if name == "pearl":
            _, (C1, C2, M) = _pearl_problem(n)
            p, q = ot.unif(C1.shape[0]), ot.unif(C2.shape[0])
            out.append((f"PEARL {PEARL_PAIR[0][:-3]} -> {PEARL_PAIR[1][:-3]}", (C1, C2, M, p, q)))
        else:
            out.append((name, _random_instance(name, n)))
    return out


def default_calls() -> list[str]:
    """POT's default call against ours, each stopping by its own default rule, on each
    instance of ``--instances``; then the worst and median ratio over the instances.

    POT: ``entropic_gromov_wasserstein(C1, C2, p, q, "square_loss", epsilon=eps)`` and
    ``entropic_fused_gromov_wasserstein(M, ..., alpha=alpha)`` (max_iter 1000, tol 1e-9 on
    ``||dT||_F`` tested every 10th iteration, inner Sinkhorn 1000 iterations / 1e-9). Ours:
    ``rot.entropic_(fused_)gromov_wasserstein(..., eps)`` with no stopping argument. Runs are
    interleaved (POT, ours, POT, ours, ...) ``--reps`` times; the ratio of an instance is the
    ratio of its medians.
    """
    rows = [
        "| instance | n | problem | eps | POT median (s) | ours median (s) | ratio "
        "| per-rep ratios | POT outer it. | ours outer it. | POT objective | ours objective "
        "| rel. gap | POT marg. err | ours marg. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    ratios_by_cell: dict = {}
    for n in ARGS.default_sizes:
        for inst, (C1, C2, M, p, q) in default_instances(n):
            for eps in ARGS.default_eps:
                for kind in ("GW", "FGW"):
                    rows.append(_default_row(inst, kind, eps, C1, C2, M, p, q, ratios_by_cell))
                    print(rows[-1], flush=True)
    summary = [
        "",
        "| problem | eps | instances | worst ratio | median ratio | largest rel. gap |",
        "|---|---|---|---|---|---|",
    ]
    for (kind, eps), vals in ratios_by_cell.items():
        r = np.array([v[0] for v in vals])
        summary.append(
            f"| {kind} | {eps:g} | {len(r)} | **{r.min():.1f}x** | {np.median(r):.1f}x "
            f"| {max(v[1] for v in vals):+.1e} |"
        )
    print("\n".join(summary), flush=True)
    return rows + summary


def _default_row(inst, kind, eps, C1, C2, M, p, q, ratios_by_cell) -> str:
    if kind == "GW":
        pot = partial(
            ot.gromov.entropic_gromov_wasserstein, C1, C2, p, q, "square_loss", epsilon=eps,
            log=True,
        )  # fmt: skip
        ours = partial(rot.entropic_gromov_wasserstein, C1, C2, p, q, eps, log=True)
        key = "gw_dist"
    else:
        pot = partial(
            ot.gromov.entropic_fused_gromov_wasserstein, M, C1, C2, p, q, "square_loss",
            epsilon=eps, alpha=ARGS.alpha, log=True,
        )  # fmt: skip
        ours = partial(
            rot.entropic_fused_gromov_wasserstein, M, C1, C2, p, q, eps, ARGS.alpha, log=True
        )
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
    per_rep = " ".join(f"{a / b:.1f}" for a, b in zip(t_pot, t_ours))
    mp, mo = float(np.median(t_pot)), float(np.median(t_ours))
    gap = (obj_o - obj_p) / abs(obj_p)
    n = C1.shape[0]
    name = kind if kind == "GW" else f"FGW (alpha {ARGS.alpha:g})"
    ratios_by_cell.setdefault((name, eps), []).append((mp / mo, gap))
    return (
        f"| {inst} | {n} | {name} | {eps:g} | {mp:.3f} | {mo:.3f} | **{mp / mo:.1f}x** "
        f"| {per_rep} | {10 * (len(log_p['err']) - 1) + 1} | {log_o['n_iter']} | {obj_p:.9f} "
        f"| {obj_o:.9f} | {gap:+.1e} | {marg_err(T_p, p, q):.1e} | {marg_err(T_o, p, q):.1e} |"
    )


def auto_call_child() -> None:
    """One ``transfer.method: auto`` call on the PEARL pair (``--auto-items`` segments per
    task), timed per FGW call of its grid; prints one JSON line (the parent runs this with the
    old and the new ``robopref`` in turn)."""
    import json

    import robopref.transfer.cpa as cpa

    (source, source_q, target, target_q, config), _ = _pearl_problem(ARGS.auto_items)
    config = config.model_copy(update={"method": "auto"})
    calls = []
    inner = cpa.coupling_for

    def timed(xs, xt, M, method, epsilon, alpha, cfg):
        t0 = time.perf_counter()
        T = inner(xs, xt, M, method, epsilon, alpha, cfg)
        calls.append({"alpha": alpha, "eps": epsilon, "n": len(xs), "s": time.perf_counter() - t0})
        return T

    cpa.coupling_for = timed
    rot.warmup()
    cpa.transfer_labels(source, source_q, target, target_q, config)  # compile / load once
    calls.clear()
    t0 = time.perf_counter()
    _, info = cpa.transfer_labels(source, source_q, target, target_q, config)
    total = time.perf_counter() - t0
    print(
        json.dumps(
            {"total": total, "calls": calls, "chosen": [info["auto_alpha"], info["auto_epsilon"]]}
        )
    )


def auto_calls() -> list[str]:
    """Time of one ``auto`` call, old ``robopref`` (``--auto-baseline``: a folder holding the
    previous ``robopref`` package) vs this one, alternating processes ``--reps`` times."""
    import json
    import subprocess

    here = os.path.dirname(_HERE)
    runs = {"before": [], "after": []}
    for _ in range(ARGS.reps):
        for label, path in (("before", ARGS.auto_baseline), ("after", here)):
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run(
                [sys.executable, __file__, "--auto-child", "--auto-items", str(ARGS.auto_items),
                 "--threads", "1"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    rows = [
        f"One `transfer.method: auto` call, {PEARL_PAIR[0]} -> {PEARL_PAIR[1]}, "
        f"{ARGS.auto_items} segments per task, median of {ARGS.reps} alternating runs:",
        "",
        "| call | alpha | eps | n | before (s) | after (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    med = {k: np.median([[c["s"] for c in r["calls"]] for r in v], axis=0) for k, v in runs.items()}
    for i, c in enumerate(runs["after"][0]["calls"]):
        b, a = med["before"][i], med["after"][i]
        what = "grid" if i < len(med["after"]) - 1 else "final"
        rows.append(
            f"| {what} {i + 1} | {c['alpha']:g} | {c['eps']:g} | {c['n']} | {b:.3f} | {a:.3f} | {b / a:.1f}x |"
        )
    tb = float(np.median([r["total"] for r in runs["before"]]))
    ta = float(np.median([r["total"] for r in runs["after"]]))
    rows.append(f"| **whole call** | | | | {tb:.3f} | {ta:.3f} | **{tb / ta:.1f}x** |")
    print("\n".join(rows), flush=True)
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
    if ARGS.auto_child:
        auto_call_child()
        return
    if ARGS.auto_baseline:
        auto_calls()
        return
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
