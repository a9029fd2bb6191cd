"""Tables (markdown) and plots (matplotlib) from a results store.

Negative controls: when the rows have a ``variant`` column with both a reference (``oracle``)
and a control (``shuffled``: the same labels randomly permuted), :func:`control_check` compares
their success rates in every group of the other columns (e.g. every task pair, over seeds). A
group whose gap ``mean(oracle) - mean(shuffled)`` is not above 3 standard errors is marked
**not informative** in ``report.md`` and on the ``success_rate`` plot: its success column cannot
tell a good reward from a meaningless one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from robopref.bench.suite import RESULTS_FILE, read_results
from robopref.utils import atomic_path

DEFAULT_METRICS = ("label_accuracy", "reward_accuracy", "success_rate")
CONTROL_SIGMAS = 3.0  # a control gap under this many standard errors is not informative
NOT_GROUP_KEYS = {"cell", "config_hash", "wall_s", "versions", "seed"}


def _natural(text: str) -> tuple:
    """Sort key that orders ``rapl@50`` before ``rapl@150`` (numbers compare as numbers)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", str(text))
        if part
    )


def aggregate(
    rows: list[dict],
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    group_by: tuple[str, ...] | None = None,
) -> list[dict]:
    """Mean and std over seeds of each metric, one entry per group of the other string columns.

    Rows that share a seed within a group (permutations of a control) count as one seed, their
    mean; ``n`` is the number of seeds."""
    if group_by is None:
        keys = sorted(
            {
                k
                for r in rows
                for k, v in r.items()
                if isinstance(v, str) and k not in NOT_GROUP_KEYS
            }
        )
        group_by = tuple(k for k in keys if k not in ("source_task", "target_task")) or tuple(keys)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k, "") for k in group_by)].append(r)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: [_natural(v) for v in kv[0]]):
        entry = dict(zip(group_by, key))
        entry["n"] = len({r.get("seed", ("row", i)) for i, r in enumerate(members)})
        for m in metrics:
            vals = np.array(_seed_means(members, m), dtype=float)
            entry[m] = (
                (float(vals.mean()), float(vals.std()))
                if len(vals)
                else (float("nan"), float("nan"))
            )
        out.append(entry)
    return out


def _rows_by_seed(members: list[dict], metric: str) -> list[list[dict]]:
    """The rows with a finite ``metric``, grouped by ``seed`` (a row without one stands alone).

    Several rows of one seed (e.g. independent permutations of a shuffled control) are averaged
    by the callers: seeds, not rows, are the independent replicates.
    """
    by_seed: dict = defaultdict(list)
    for i, r in enumerate(members):
        v = r.get(metric)
        if isinstance(v, (int, float)) and np.isfinite(v):
            by_seed[r.get("seed", ("row", i))].append(r)
    return list(by_seed.values())


def _seed_means(members: list[dict], metric: str) -> list[float]:
    """``metric`` per seed: rows of one seed (e.g. permutations of a control) are averaged."""
    return [float(np.mean([r[metric] for r in rs])) for rs in _rows_by_seed(members, metric)]


def _mean_of_ses(ses: list[float]) -> float:
    """SE of the mean of independent estimates with standard errors ``ses``."""
    return float(np.sqrt(np.sum(np.square(ses))) / len(ses))


def _mean_se(members: list[dict], metric: str, se_key: str) -> tuple[float, float, int]:
    """Mean of ``metric`` over seeds and its standard error.

    Rows of the same ``seed`` are averaged first (their evaluation SEs combined the same way),
    so ``n`` counts seeds. The SE is the larger of the seed-to-seed SE (``std(ddof=1) /
    sqrt(n)``, needs ``n >= 2``) and the evaluation SE carried by the rows (``sqrt(sum se_i^2)
    / n`` from ``se_key``, e.g. the binomial SE of each row's success rate over its evaluation
    episodes).
    """
    groups = _rows_by_seed(members, metric)
    vals = np.array([np.mean([r[metric] for r in rs]) for rs in groups])
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), 0
    seed_se = float(vals.std(ddof=1) / np.sqrt(n)) if n >= 2 else 0.0
    per_seed = [[r[se_key] for r in rs if isinstance(r.get(se_key), (int, float))] for rs in groups]
    seed_eval_se = [_mean_of_ses(ses) for ses in per_seed if ses]
    eval_se = _mean_of_ses(seed_eval_se) if seed_eval_se else 0.0
    return float(vals.mean()), max(seed_se, eval_se), n


def control_check(
    rows: list[dict],
    metric: str = "success_rate",
    reference: str = "oracle",
    control: str = "shuffled",
    variant_key: str = "variant",
    sigmas: float = CONTROL_SIGMAS,
) -> list[dict]:
    """Per group of the non-variant string columns: is ``reference`` clearly above ``control``?

    Returns one entry per group that has both variants: the group's keys, ``reference`` and
    ``control`` means with their SEs (see :func:`_mean_se`), ``gap``, ``gap_se`` (the two SEs
    added in quadrature) and ``informative`` = ``gap > sigmas * gap_se``. A gap of zero with
    zero SE (both always fail, or both always succeed) is not informative.
    """
    keys = sorted(
        {
            k
            for r in rows
            for k, v in r.items()
            if isinstance(v, str) and k not in NOT_GROUP_KEYS and k != variant_key
        }
    )
    # as in aggregate(): the task columns name the group only when nothing else does
    keys = [k for k in keys if k not in ("source_task", "target_task")] or keys
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get(variant_key) in (reference, control):
            groups[tuple(r.get(k, "") for k in keys)][r[variant_key]].append(r)
    out = []
    for key in sorted(groups, key=lambda g: [_natural(v) for v in g]):
        by_variant = groups[key]
        if not (by_variant[reference] and by_variant[control]):
            continue
        ref_mean, ref_se, ref_n = _mean_se(by_variant[reference], metric, "success_se")
        ctl_mean, ctl_se, ctl_n = _mean_se(by_variant[control], metric, "success_se")
        gap, gap_se = ref_mean - ctl_mean, float(np.hypot(ref_se, ctl_se))
        out.append(
            {
                "group": dict(zip(keys, key)),
                reference: (ref_mean, ref_se, ref_n),
                control: (ctl_mean, ctl_se, ctl_n),
                "gap": gap,
                "gap_se": gap_se,
                "informative": bool(gap > sigmas * gap_se),
            }
        )
    return out


def control_markdown(
    checks: list[dict], reference: str = "oracle", control: str = "shuffled"
) -> str:
    """A markdown section: one line per group, the verdict first."""
    if not checks:
        return ""
    bad = [c for c in checks if not c["informative"]]
    lines = [
        f"## Negative control: {reference} vs {control} ({CONTROL_SIGMAS:g} standard errors)",
        "",
        (
            f"**not informative**: in {len(bad)} of {len(checks)} group(s) the {reference} - "
            f"{control} success gap is not above {CONTROL_SIGMAS:g} standard errors; their "
            "success column cannot tell a good reward from a meaningless one."
            if bad
            else f"All {len(checks)} group(s) informative."
        ),
        "",
        f"| group | {reference} | {control} | gap ± SE | verdict |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        group = ", ".join(f"{k}={v}" for k, v in c["group"].items()) or "(all)"
        ref, ctl = c[reference], c[control]
        verdict = "informative" if c["informative"] else "**not informative**"
        lines.append(
            f"| {group} | {ref[0]:.3f} ± {ref[1]:.3f} (n={ref[2]}) | "
            f"{ctl[0]:.3f} ± {ctl[1]:.3f} (n={ctl[2]}) | {c['gap']:.3f} ± {c['gap_se']:.3f} | "
            f"{verdict} |"
        )
    return "\n".join(lines) + "\n"


def markdown_table(agg: list[dict], metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    if not agg:
        return "(no results)"
    keys = [k for k in agg[0] if k not in metrics and k != "n"]
    head = "| " + " | ".join([*keys, "n", *metrics]) + " |"
    sep = "|" + "|".join("---" for _ in range(len(keys) + 1 + len(metrics))) + "|"
    lines = [head, sep]
    for e in agg:
        cells = [str(e[k]) for k in keys] + [str(e["n"])]
        cells += [f"{e[m][0]:.3f} ± {e[m][1]:.3f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pivot_table(agg: list[dict], metric: str, column_key: str, metrics: tuple[str, ...]) -> str:
    """One markdown table of ``metric`` (mean ± std) with a column per value of ``column_key``
    and a row per combination of the other group keys (e.g. variants x tasks)."""
    if not agg:
        return "(no results)"
    keys = [k for k in agg[0] if k not in metrics and k not in ("n", column_key)]
    columns = sorted({e[column_key] for e in agg}, key=_natural)
    cells: dict[tuple, dict[str, str]] = {}
    for e in agg:
        mean, std = e[metric]
        cells.setdefault(tuple(e[k] for k in keys), {})[e[column_key]] = f"{mean:.2f} ± {std:.2f}"
    lines = [
        "| " + " | ".join([*keys, *columns]) + " |",
        "|" + "|".join("---" for _ in range(len(keys) + len(columns))) + "|",
    ]
    for row in sorted(cells, key=lambda r: [_natural(v) for v in r]):
        lines.append("| " + " | ".join([*row, *(cells[row].get(c, "") for c in columns)]) + " |")
    return "\n".join(lines)


def plot_metric(
    agg: list[dict],
    metric: str,
    x_key: str,
    hue_key: str | None,
    path: str | Path,
    not_informative: list[str] | None = None,
) -> None:
    """Grouped bar chart of ``metric`` (mean ± std) per ``x_key`` value, one bar per ``hue_key``.

    ``not_informative``: groups (text) whose negative control failed; the plot says so in red
    in its title and above the matching ``x_key`` bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted({e[x_key] for e in agg}, key=_natural)
    hues = sorted({e[hue_key] for e in agg}, key=_natural) if hue_key else [None]
    colors = plt.get_cmap("tab20" if len(hues) > 10 else "tab10").colors
    width = 0.8 / len(hues)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(xs)) + (2.5 if hue_key else 0), 4))
    for h_i, hue in enumerate(hues):
        means, stds = [], []
        for x in xs:
            match = [e for e in agg if e[x_key] == x and (hue is None or e[hue_key] == hue)]
            means.append(match[0][metric][0] if match else np.nan)
            stds.append(match[0][metric][1] if match else 0.0)
        ax.bar(
            np.arange(len(xs)) + h_i * width,
            means,
            width,
            yerr=stds,
            label=str(hue) if hue else None,
            color=colors[h_i % len(colors)],
        )
    ax.set_xticks(np.arange(len(xs)) + width * (len(hues) - 1) / 2)
    ax.set_xticklabels(xs, rotation=20, ha="right")
    ax.set_ylabel(metric.replace("_", " "))
    if not_informative:
        ax.set_title(
            "NOT INFORMATIVE (oracle - shuffled < 3 SE): " + "; ".join(not_informative),
            color="red",
            fontsize="small",
            wrap=True,
        )
        for i, x in enumerate(xs):
            if any(f"{x_key}={x}" in g.split(", ") for g in not_informative):
                ax.text(
                    i + width * (len(hues) - 1) / 2,
                    0.97,
                    "not informative",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    bbox={"facecolor": "white", "edgecolor": "red"},
                    color="red",
                    fontsize="small",
                )
    if hue_key:
        ax.legend(title=hue_key, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(
    store: str | Path, metrics: tuple[str, ...] = DEFAULT_METRICS, columns: str | None = None
) -> str:
    """Write ``report.md`` and one PNG per metric into ``store``; return the markdown. With
    ``columns`` (a group key such as ``task``), one pivot table per metric follows the long one."""
    store = Path(store)
    if not (store / RESULTS_FILE).is_file():
        what = "folder" if store.is_dir() else "results store"
        raise ValueError(
            f"no {what} with {RESULTS_FILE} at '{store}' (expected the --store folder of "
            "'robopref bench')"
        )
    rows = read_results(store)
    agg = aggregate(rows, metrics)
    md = f"# Results: {store.name}\n\n{markdown_table(agg, metrics)}\n"
    if columns and agg:
        if columns not in agg[0]:
            raise ValueError(
                f"columns: expected one of the group keys "
                f"{[k for k in agg[0] if k not in metrics and k != 'n']}, found {columns!r}"
            )
        for m in metrics:
            md += f"\n## {m} (mean ± std over seeds)\n\n{pivot_table(agg, m, columns, metrics)}\n"
    checks = control_check(rows) if "success_rate" in metrics else []
    not_informative = [
        ", ".join(f"{k}={v}" for k, v in c["group"].items()) or "(all)"
        for c in checks
        if not c["informative"]
    ]
    if checks:
        md += "\n" + control_markdown(checks)
    if not_informative:  # flag the table itself, right under the title
        title, rest = md.split("\n\n", 1)
        banner = (
            f"**not informative**: oracle - shuffled success gap not above "
            f"{CONTROL_SIGMAS:g} standard errors for {'; '.join(not_informative)} "
            "(see 'Negative control' below)."
        )
        md = f"{title}\n\n{banner}\n\n{rest}"
    if agg:
        keys = [k for k in agg[0] if k not in metrics and k != "n"]
        x_key = keys[0]
        hue_key = (
            "variant"
            if "variant" in keys and x_key != "variant"
            else (keys[1] if len(keys) > 1 else None)
        )
        for m in metrics:
            plot_metric(
                agg,
                m,
                x_key,
                hue_key,
                store / f"{m}.png",
                not_informative if m == "success_rate" else None,
            )
            md += f"\n![{m}]({m}.png)\n"
    with atomic_path(store / "report.md") as tmp:
        tmp.write_text(md)
    return md
