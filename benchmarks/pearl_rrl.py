"""PEARL's robustness claim (RRL) under noisy labels: a Gaussian robust reward against a plain
Bradley-Terry MLP reward, both trained on the same labels and scored on 500 held-out
oracle-labelled target pairs.

Two conditions:

* ``transfer``: the source task's pairs are labelled by a noisy teacher and moved to the target
  with ``transfer.method: auto`` in its ``select`` mode (PEARL's pipeline);
* ``direct``: the same target pairs are labelled by the noisy teacher on the target itself (the
  setting the robustness claim is about: noisy labels reach the reward untouched).

Teachers (B-Pref style, ``robopref.teachers``), named ``teacher:level``:

* ``mistake:E``: each label flipped with probability ``eps = E``;
* ``stochastic:E``: Boltzmann-rational, ``beta`` solved per labelled query set so that the
  expected label error ``mean sigmoid(-beta |R_0 - R_1|)`` equals ``E`` (``beta`` is in
  1 / reward units and the return scale differs by task, so one ``beta`` would mean a different
  noise level on each task);
* ``myopic:G``: discount ``gamma = G`` of the segment return (its error saturates near
  0.05-0.12 on these tasks even at ``gamma = 0.1``: late rewards predict the return well);
* ``oracle:0``: clean labels (reference).

The coupling of every ``auto`` grid setting depends on the features only, not on the source
labels (the labels enter the half-source score and the label rule), so the couplings are
computed once per (pair, seed) and reused for every label set: exact, since
``coupling_for`` is a deterministic function of its inputs (a cache keyed by their bytes).
Datasets as ``benchmarks/pearl_transfer.py``. Rows already in ``--out`` are skipped, and a run
stops starting new label sets after ``--budget-min`` minutes (rerun to continue).

    python benchmarks/pearl_rrl.py --out docs/results/pearl-rrl.jsonl
    python benchmarks/pearl_rrl.py --report --out docs/results/pearl-rrl.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pearl_transfer_data import DEFAULT_CACHE, PAIRS, get_dataset  # noqa: E402

import robopref.transfer.cpa as cpa  # noqa: E402
from robopref.data import sample_queries  # noqa: E402
from robopref.rewards import (  # noqa: E402
    GaussianReward,
    MLPReward,
    RewardTrainer,
    RewardTrainerConfig,
)
from robopref.rewards.segments import gather_segments  # noqa: E402
from robopref.teachers import TeacherConfig, make_teacher  # noqa: E402
from robopref.transfer import (  # noqa: E402
    TransferConfig,
    label_accuracy,
    sample_pool_pairs,
    transfer_labels,
)
from robopref.utils import seed_everything  # noqa: E402

STUDY = "rrl-noise"
# The study ran with ``auto``'s grid selection (then the default); pinned so reruns match the rows.
SELECT = TransferConfig(auto={"mode": "select"})
PAPER = (0.1, 1.0)  # prior std, KL weight: the library's defaults (the paper gives no numbers)

_couplings: dict[str, np.ndarray] = {}
_coupling_for = cpa.coupling_for


def _cached_coupling(xs, xt, M, method, epsilon, alpha, config):
    h = hashlib.sha1()
    for a in (xs, xt, M):
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    h.update(repr((xs.shape, xt.shape, method, epsilon, alpha, config.model_dump())).encode())
    key = h.hexdigest()
    if key not in _couplings:
        _couplings[key] = _coupling_for(xs, xt, M, method, epsilon, alpha, config)
    return _couplings[key].copy()


def stochastic_beta(dataset, queries, error: float) -> float:
    """``beta`` whose expected pair-label error on ``queries`` is ``error`` (bisection)."""
    R, _ = make_teacher(TeacherConfig(name="oracle")).returns(dataset, queries)
    d = np.abs(R[:, 0] - R[:, 1])
    d = d[d > 0]
    lo, hi = -12.0, 8.0  # log beta
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        err = np.mean(0.5 * (1.0 - np.tanh(0.5 * np.exp(mid) * d)))  # sigmoid(-x), no overflow
        lo, hi = (mid, hi) if err > error else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def teacher_for(spec: str, dataset, queries, seed: int) -> tuple[TeacherConfig, float]:
    name, level = spec.split(":")
    level = float(level)
    if name == "mistake":
        return TeacherConfig(name="mistake", eps=level, seed=seed), level
    if name == "stochastic":
        beta = stochastic_beta(dataset, queries, level)
        return TeacherConfig(name="stochastic", beta=beta, seed=seed), beta
    if name == "myopic":
        return TeacherConfig(name="myopic", gamma=level, seed=seed), level
    if name == "oracle":
        return TeacherConfig(name="oracle", seed=seed), 0.0
    raise SystemExit(f"--teachers: expected mistake|stochastic|myopic|oracle:LEVEL, found {spec!r}")


def reward_specs(sweep: bool, extra: list[str]) -> list[tuple[str, float | None, float | None]]:
    specs = [("bt", None, None), ("gaussian_rrl", *PAPER)]
    for e in extra:
        s, w = map(float, e.split(":"))
        if (s, w) != PAPER:
            specs.append(("gaussian_rrl", s, w))
    if sweep:
        specs += [
            ("gaussian_rrl", s, w)
            for s in (0.1, 0.3, 1.0)
            for w in (0.1, 1.0, 10.0)
            if (s, w) != PAPER
        ]
    return specs


def variance_diagnostics(model: GaussianReward, target, labels, truth) -> dict:
    """Mean per-step sigma of the reward on training pairs whose label is wrong vs right."""
    seg = gather_segments(target, labels, model.obs_dim, model.act_dim)
    with torch.no_grad():
        mu, logvar = model.mean_logvar(seg.obs, seg.act)  # [Q, 2, H]
    m = seg.step_mask.float()
    sigma = (torch.exp(0.5 * logvar) * m).sum((1, 2)) / m.sum((1, 2))
    margin = ((mu * m).sum(2)[:, 0] - (mu * m).sum(2)[:, 1]).abs()
    y, t = labels.pair_probability(), truth.pair_probability()
    decided = (t != 0.5) & (y != 0.5)
    wrong = torch.as_tensor(decided & ((y > 0.5) != (t > 0.5)))
    right = torch.as_tensor(decided & ((y > 0.5) == (t > 0.5)))

    def mean(x, sel):
        return round(float(x[sel].mean()), 4) if bool(sel.any()) else None

    return {
        "sigma_wrong": mean(sigma, wrong), "sigma_right": mean(sigma, right),
        "margin_wrong": mean(margin, wrong), "margin_right": mean(margin, right),
    }  # fmt: skip


def row_key(r: dict) -> tuple:
    return (
        r.get("condition"), r["pair"], r["seed"], r.get("teacher"), r.get("level"),
        r["reward"], r.get("prior_std"), r.get("reg_weight"),
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=Path("docs/results/pearl-rrl.jsonl"))
    ap.add_argument("--pairs", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--conditions", nargs="*", default=["transfer", "direct"])
    ap.add_argument(
        "--teachers", nargs="*",
        default=["oracle:0", "mistake:0.2", "mistake:0.4", "stochastic:0.2", "stochastic:0.4",
                 "myopic:0.5"],
    )  # fmt: skip
    ap.add_argument(
        "--sweep", action="store_true", help="also the 3 x 3 prior std x KL weight grid"
    )
    ap.add_argument(
        "--rrl", nargs="*", default=[], metavar="STD:W",
        help="extra RRL settings (prior std : KL weight) beside the paper's",
    )  # fmt: skip
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--budget-min", type=float, default=13.0)
    ap.add_argument("--report", action="store_true", help="print the tables of --out and exit")
    args = ap.parse_args()
    if args.report:
        print(report(args.out))
        return
    torch.set_num_threads(1)
    cpa.coupling_for = _cached_coupling
    t_start = time.time()
    done = set()
    if args.out.exists():
        done = {
            row_key(r)
            for r in map(json.loads, filter(str.strip, args.out.read_text().splitlines()))
            if r.get("study") == STUDY
        }
    specs = reward_specs(args.sweep, args.rrl)
    oracle = make_teacher(TeacherConfig(name="oracle"))
    with args.out.open("a") as fh:
        for pi in args.pairs:
            pair = PAIRS[pi]
            name = f"{pair[0][:-3]}->{pair[1][:-3]}"
            for seed in args.seeds:
                _couplings.clear()
                todo = [
                    (c, t)
                    for c in args.conditions
                    for t in args.teachers
                    if any(
                        (c, name, seed, t.split(":")[0], float(t.split(":")[1]), *s) not in done
                        for s in specs
                    )
                ]
                if not todo:
                    continue
                source = get_dataset(args.cache, pair[0], seed)
                target = get_dataset(args.cache, pair[1], 100 + seed)
                rng = seed_everything(seed)
                src_pairs = sample_pool_pairs(source, 300, 3000, 25, rng)
                target_q = sample_pool_pairs(target, 300, 2000, 25, rng)
                eval_q = oracle.label(target, sample_queries(target, 500, 2, 25, rng))
                src_truth, tgt_truth = (
                    oracle.label(source, src_pairs),
                    oracle.label(target, target_q),
                )
                obs_dim, act_dim = target[0].state.shape[1], target[0].actions.shape[1]
                for cond, spec in todo:
                    if time.time() - t_start > 60 * args.budget_min:
                        print("budget spent: rerun to continue", flush=True)
                        return
                    t0 = time.time()
                    info: dict = {}
                    if cond == "transfer":
                        tcfg, param = teacher_for(spec, source, src_pairs, seed)
                        noisy = make_teacher(tcfg).label(source, src_pairs)
                        src_err = 1.0 - label_accuracy(noisy, src_truth)
                        labels, info = transfer_labels(source, noisy, target, target_q, SELECT)
                    else:
                        tcfg, param = teacher_for(spec, target, target_q, seed)
                        labels = make_teacher(tcfg).label(target, target_q)
                        src_err = 1.0 - label_accuracy(labels, tgt_truth)
                    acc = label_accuracy(labels, tgt_truth)
                    t_labels = time.time() - t0
                    tname, level = spec.split(":")
                    for reward, prior_std, reg_weight in specs:
                        key = (cond, name, seed, tname, float(level), reward, prior_std, reg_weight)
                        if key in done:
                            continue
                        t1 = time.time()
                        seed_everything(seed)
                        model = (
                            GaussianReward(
                                obs_dim, act_dim, hidden=(256, 256), prior_std=prior_std,
                                reg_weight=reg_weight,
                            )
                            if reward == "gaussian_rrl"
                            else MLPReward(obs_dim, act_dim, hidden=(256, 256))
                        )  # fmt: skip
                        cfg = RewardTrainerConfig(
                            epochs=args.epochs, batch_size=64, lr=3e-4, seed=seed, device="cpu",
                            quiet=True,
                        )  # fmt: skip
                        trainer = RewardTrainer(model, cfg)
                        trainer.fit(target, labels)
                        row = {
                            "study": STUDY, "condition": cond, "pair": name, "seed": seed,
                            "teacher": tname, "level": float(level),
                            "teacher_param": round(param, 6),
                            "noisy_label_error": round(src_err, 4),
                            "train_label_accuracy": round(acc, 4), "reward": reward,
                            "prior_std": prior_std, "reg_weight": reg_weight,
                            "reward_accuracy": trainer.accuracy(target, eval_q),
                            "auto_alpha": info.get("auto_alpha"),
                            "auto_epsilon": info.get("auto_epsilon"),
                            "auto_cross_feature": info.get("auto_cross_feature"),
                            "labels_s": round(t_labels, 1), "wall_s": round(time.time() - t1, 1),
                        }  # fmt: skip
                        if reward == "gaussian_rrl":
                            row.update(variance_diagnostics(model, target, labels, tgt_truth))
                        fh.write(json.dumps(row) + "\n")
                        fh.flush()
                        done.add(key)
                        print(row, flush=True)


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(path: Path) -> str:
    """Markdown tables from the rows at ``path``: the first study (mean ± std over seeds) and the
    noise study (mean ± SE over seeds, paired RRL - BT difference with its SE)."""
    rows = _load(path)
    out = [_report_first([r for r in rows if "study" not in r]), ""]
    rows = [r for r in rows if r.get("study") == STUDY]
    if rows:
        out += [_report_mapping(rows), "", _report_summary(rows), "", _report_sweep(rows), ""]
        out += [_report_noise(rows)]
    return "\n".join(out)


def _mse(v) -> str:
    v = np.asarray(v, dtype=float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{v.mean():.3f} ± {se:.3f}"


def _teachers(rows):
    order = {"oracle": 0, "mistake": 1, "stochastic": 2, "myopic": 3}
    keys = {(r["teacher"], r["level"]) for r in rows}
    return sorted(keys, key=lambda k: (order.get(k[0], 9), k[1] if k[0] != "myopic" else -k[1]))


def _paired(rows, cond, pair, teacher, level, a, b):
    """Per-seed reward accuracies of reward specs ``a`` and ``b`` (seeds present in both)."""

    def acc(spec):
        return {
            r["seed"]: r
            for r in rows
            if (r["condition"], r["pair"], r["teacher"], r["level"]) == (cond, pair, teacher, level)
            and (r["reward"], r["prior_std"], r["reg_weight"]) == spec
        }

    x, y = acc(a), acc(b)
    seeds = sorted(set(x) & set(y))
    return seeds, x, y


def _report_noise(rows) -> str:
    bt, rrl = ("bt", None, None), ("gaussian_rrl", *PAPER)
    out = [
        "| condition | pair | teacher | seeds | noisy label error | training label acc. "
        "| BT reward acc. | RRL reward acc. | RRL - BT | RRL sigma wrong / right |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cond in dict.fromkeys(r["condition"] for r in rows):
        crow = [r for r in rows if r["condition"] == cond]
        for pair in dict.fromkeys(r["pair"] for r in crow):
            for teacher, level in _teachers([r for r in crow if r["pair"] == pair]):
                seeds, b, g = _paired(rows, cond, pair, teacher, level, bt, rrl)
                if not seeds:
                    continue
                first = [b[s] for s in seeds]
                sig = [
                    (g[s].get("sigma_wrong"), g[s]["sigma_right"])
                    for s in seeds
                    if g[s].get("sigma_wrong") is not None
                ]
                sig_s = (
                    f"{np.mean([w for w, _ in sig]):.3f} / {np.mean([c for _, c in sig]):.3f}"
                    if sig
                    else "-"
                )
                out.append(
                    f"| {cond} | {pair} | {teacher} {level:g} | {len(seeds)} "
                    f"| {_mse([r['noisy_label_error'] for r in first])} "
                    f"| {_mse([r['train_label_accuracy'] for r in first])} "
                    f"| {_mse([b[s]['reward_accuracy'] for s in seeds])} "
                    f"| {_mse([g[s]['reward_accuracy'] for s in seeds])} "
                    f"| {_mse([g[s]['reward_accuracy'] - b[s]['reward_accuracy'] for s in seeds])} "
                    f"| {sig_s} |"
                )
    return "\n".join(out)


def _report_mapping(rows) -> str:
    """Teacher level -> its parameter (range over pairs and seeds) and the label error it gave
    on the labelled task (the source task for ``transfer``, the target for ``direct``)."""
    out = [
        "| teacher | parameter | range (source tasks) | error (source) "
        "| range (target tasks) | error (target) |",
        "|---|---|---|---|---|---|",
    ]
    param = {"mistake": "eps", "stochastic": "beta", "myopic": "gamma", "oracle": "-"}
    for teacher, level in _teachers(rows):
        cells = []
        for cond in ("transfer", "direct"):
            sel = [
                r
                for r in rows
                if (r["condition"], r["teacher"], r["level"], r["reward"])
                == (cond, teacher, level, "bt")
            ]
            if not sel:
                cells += ["-", "-"]
                continue
            p = [r["teacher_param"] for r in sel]
            cells += [
                f"{min(p):.3g} - {max(p):.3g}",
                f"{np.mean([r['noisy_label_error'] for r in sel]):.3f}",
            ]
        out.append(
            f"| {teacher} {level:g} | {param.get(teacher, '-')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(out)


def _margin(r: dict) -> float:
    """Mean |difference of mean segment returns| of the RRL reward on its training pairs."""
    acc = r["train_label_accuracy"]
    if r.get("margin_wrong") is None:
        return r["margin_right"]
    return acc * r["margin_right"] + (1 - acc) * r["margin_wrong"]


def _report_summary(rows) -> str:
    """One row per (condition, teacher): RRL - BT per pair (mean ± SE over seeds) and pooled
    over pairs and seeds (mean ± SE over the pair x seed runs)."""
    bt, rrl = ("bt", None, None), ("gaussian_rrl", *PAPER)
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    out = [
        "| condition | teacher | noisy label error | training label acc. | BT reward acc. "
        "| RRL reward acc. | "
        + " | ".join(f"RRL - BT {p.split('->')[0]}" for p in pairs)
        + " | RRL - BT pooled | RRL sigma wrong / right | RRL margin |",
        "|---|---|---|---|---|---|" + "---|" * len(pairs) + "---|---|---|",
    ]
    for cond in dict.fromkeys(r["condition"] for r in rows):
        crow = [r for r in rows if r["condition"] == cond]
        for teacher, level in _teachers(crow):
            per_pair, b_all, g_all, err, tacc, sw, sr, mg = [], [], [], [], [], [], [], []
            for pair in pairs:
                seeds, b, g = _paired(rows, cond, pair, teacher, level, bt, rrl)
                d = [g[s]["reward_accuracy"] - b[s]["reward_accuracy"] for s in seeds]
                per_pair.append(_mse(d) if d else "-")
                b_all += [b[s]["reward_accuracy"] for s in seeds]
                g_all += [g[s]["reward_accuracy"] for s in seeds]
                err += [b[s]["noisy_label_error"] for s in seeds]
                tacc += [b[s]["train_label_accuracy"] for s in seeds]
                sw += [g[s]["sigma_wrong"] for s in seeds if g[s].get("sigma_wrong") is not None]
                sr += [g[s]["sigma_right"] for s in seeds]
                mg += [_margin(g[s]) for s in seeds]
            if not b_all:
                continue
            d_all = np.subtract(g_all, b_all)
            sig = f"{np.mean(sw):.3f} / {np.mean(sr):.3f}" if sw else f"- / {np.mean(sr):.3f}"
            out.append(
                f"| {cond} | {teacher} {level:g} | {np.mean(err):.3f} | {np.mean(tacc):.3f} "
                f"| {_mse(b_all)} | {_mse(g_all)} | "
                + " | ".join(per_pair)
                + f" | {_mse(d_all)} (n {len(d_all)}) | {sig} | {np.mean(mg):.2f} |"
            )
    return "\n".join(out)


def _report_sweep(rows) -> str:
    """RRL - BT per (prior std, KL weight), averaged over the cells where the sweep ran."""
    bt = ("bt", None, None)
    grid = sorted(
        {(r["prior_std"], r["reg_weight"]) for r in rows if r["reward"] == "gaussian_rrl"}
    )
    if len(grid) < 2:
        return ""
    cells = sorted(
        {
            (r["condition"], r["teacher"], r["level"])
            for r in rows
            if r["reward"] == "gaussian_rrl" and (r["prior_std"], r["reg_weight"]) != PAPER
        }
    )
    out = [
        "| condition | teacher | prior std | KL weight | n (pair x seed) | RRL - BT "
        "| RRL sigma wrong / right |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond, teacher, level in cells:
        for s, w in grid:
            d, sw, sr = [], [], []
            for pair in dict.fromkeys(r["pair"] for r in rows):
                seeds, b, g = _paired(rows, cond, pair, teacher, level, bt, ("gaussian_rrl", s, w))
                d += [g[k]["reward_accuracy"] - b[k]["reward_accuracy"] for k in seeds]
                sw += [g[k]["sigma_wrong"] for k in seeds if g[k].get("sigma_wrong") is not None]
                sr += [g[k]["sigma_right"] for k in seeds]
            if d:
                sig = f"{np.mean(sw):.3f} / {np.mean(sr):.3f}" if sw else "-"
                out.append(
                    f"| {cond} | {teacher} {level:g} | {s:g} | {w:g} | {len(d)} | {_mse(d)} | {sig} |"
                )
    return "\n".join(out)


def _report_first(rows) -> str:
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


if __name__ == "__main__":
    main()
