"""Tables (markdown) and plots (matplotlib) from a results store.

What a report shows comes from the recipe: the :class:`~robopref.methods.result.ReportSpec` that
``robopref bench`` records in the store (``report.json``) names the metrics (in column order),
the row keys that tell compared units apart and the order of their values (variants in config
order), the chance level of a metric and the negative-control variant. Metrics that no row has
are left out (never a column of NaN). A group key whose value follows from the other keys (the
task names of a ``pair`` axis) or is the same in every row is left out of the table; the
constant ones are listed under the title.

``report.md`` is the default report (the spec's metrics), written by ``robopref bench`` and by
``robopref report STORE``; a report with other options (``--metrics``, ``--columns``) goes to its
own file, e.g. ``report-spearman_step+accuracy.md``, so that no report overwrites another. The
plots (``<metric>.png``) depend only on the metric and are shared.

Negative controls: when the rows have a ``variant`` column with both a reference (``oracle``)
and a control (``shuffled``: the same labels randomly permuted), :func:`control_check` compares
their success rates in every group of the other columns (e.g. every task pair, over seeds). A
group whose gap ``mean(oracle) - mean(shuffled)`` is not above 3 standard errors is marked
**not informative** in ``report.md`` and on the ``success_rate`` plot: its success column cannot
tell a good reward from a meaningless one.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from robopref.bench.suite import RESULTS_FILE, load_spec, read_results
from robopref.methods.result import ReportSpec
from robopref.utils import atomic_path

SE_KEYS = {"success_rate": "success_se"}  # a metric's evaluation SE in the rows, if not METRIC_se
DEFAULT_METRICS = ("label_accuracy", "reward_accuracy", "success_rate")  # a store without a spec
CONTROL_SIGMAS = 3.0  # a control gap under this many standard errors is not informative
NOT_GROUP_KEYS = {"cell", "config_hash", "wall_s", "versions", "seed"}
REPORT_FILE = "report.md"


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
    order: dict[str, list[str]] | None = None,
) -> list[dict]:
    """Mean and standard error over seeds of each metric (:func:`_mean_se`: the larger of the
    seed-to-seed SE and the evaluation SE the rows carry), one entry per group of ``group_by`` (default:
    the other string columns), sorted by ``order`` where it lists a key's values (e.g. variants
    in config order) and naturally otherwise.

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
    for key, members in sorted(groups.items(), key=lambda kv: _sort_key(group_by, kv[0], order)):
        entry = dict(zip(group_by, key))
        entry["n"] = len({r.get("seed", ("row", i)) for i, r in enumerate(members)})
        for m in metrics:
            mean, se, _ = _mean_se(members, m, SE_KEYS.get(m, f"{m}_se"))
            entry[m] = (mean, se)
        out.append(entry)
    return out


def _sort_key(keys: tuple[str, ...], values: tuple, order: dict | None) -> list:
    """Listed values first, in their listed order; the others after them, naturally."""
    out = []
    for k, v in zip(keys, values):
        listed = (order or {}).get(k) or []
        out.append((0, listed.index(v), ()) if v in listed else (1, 0, _natural(v)))
    return out


def _ordered(values, key: str, order: dict | None) -> list:
    return [v for _, v in sorted((_sort_key((key,), (v,), order), v) for v in set(values))]


def group_keys(rows: list[dict], spec: ReportSpec | None) -> tuple[list[str], dict[str, str]]:
    """The keys that tell the report's groups apart, in column order, and the constant ones.

    Candidates: every text column of the rows (the suite's axis labels among them) and the
    spec's ``group_by``; the spec's keys come last, in its order. A candidate whose value
    follows from the other keys is left out (``source_task`` and ``target_task`` when a
    ``pair`` axis names them); one that is the same in every row is returned apart, for a line
    under the title. At least one key stays."""
    recipe = list(spec.group_by) if spec else []
    ordered = set(spec.order) if spec else set()
    text = {k for r in rows for k, v in r.items() if isinstance(v, str) and k not in NOT_GROUP_KEYS}
    others = sorted(text - set(recipe), key=_natural)
    keys = others + [k for k in recipe if any(k in r for r in rows)]
    constants: dict[str, str] = {}
    attempts = (
        [k for k in recipe if k not in ordered] + others + [k for k in recipe if k in ordered]
    )
    for k in attempts:
        rest = [j for j in keys if j != k]
        if not rest:
            break
        seen: dict[tuple, set] = defaultdict(set)
        for r in rows:
            seen[tuple(str(r.get(j, "")) for j in rest)].add(str(r.get(k, "")))
        if all(len(v) == 1 for v in seen.values()):
            keys = rest
            values = {str(r.get(k, "")) for r in rows}
            if len(values) == 1:
                constants[k] = values.pop()
    return keys, constants


def present_metrics(rows: list[dict], metrics) -> list[str]:
    """``metrics`` that at least one row has as a finite number."""
    return [
        m
        for m in dict.fromkeys(metrics)
        if any(isinstance(r.get(m), (int, float)) and math.isfinite(r[m]) for r in rows)
    ]


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
    keys: list[str] | None = None,
) -> list[dict]:
    """Per group of ``keys`` (default: the non-variant string columns): is ``reference``
    clearly above ``control``?

    Returns one entry per group that has both variants: the group's keys, ``reference`` and
    ``control`` means with their SEs (see :func:`_mean_se`), ``gap``, ``gap_se`` (the two SEs
    added in quadrature) and ``informative`` = ``gap > sigmas * gap_se``. A gap of zero with
    zero SE (both always fail, or both always succeed) is not informative.
    """
    if keys is None:
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
    keys = [k for k in keys if k != variant_key]
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


def pivot_table(
    agg: list[dict],
    metric: str,
    column_key: str,
    metrics: tuple[str, ...],
    order: dict[str, list[str]] | None = None,
) -> str:
    """One markdown table of ``metric`` (mean ± SE) with a column per value of ``column_key``
    and a row per combination of the other group keys (e.g. variants x tasks), values in
    ``order`` where it lists them."""
    if not agg:
        return "(no results)"
    keys = [k for k in agg[0] if k not in metrics and k not in ("n", column_key)]
    columns = _ordered([e[column_key] for e in agg], column_key, order)
    cells: dict[tuple, dict[str, str]] = {}
    for e in agg:
        mean, se = e[metric]
        cells.setdefault(tuple(e[k] for k in keys), {})[e[column_key]] = f"{mean:.2f} ± {se:.2f}"
    lines = [
        "| " + " | ".join([*keys, *columns]) + " |",
        "|" + "|".join("---" for _ in range(len(keys) + len(columns))) + "|",
    ]
    for row in sorted(cells, key=lambda r: _sort_key(tuple(keys), r, order)):
        lines.append("| " + " | ".join([*row, *(cells[row].get(c, "") for c in columns)]) + " |")
    return "\n".join(lines)


def plot_metric(
    agg: list[dict],
    metric: str,
    x_key: str,
    hue_key: str | None,
    path: str | Path,
    not_informative: list[str] | None = None,
    title: str = "",
    order: dict[str, list[str]] | None = None,
    chance: float | None = None,
    control: str | None = None,
) -> None:
    """Grouped bar chart of ``metric`` (mean ± SE over seeds) per ``x_key`` value, one bar per
    ``hue_key`` value (both in ``order`` where it lists them), each bar labelled with its number
    of seeds ``n``.

    ``chance`` draws the chance level as a dotted line; without one, the mean of the ``control``
    variant (when ``hue_key`` or ``x_key`` is ``variant``) is drawn as a dashed line across its
    group. ``not_informative``: groups (text) whose negative control failed; the plot says so in
    red under its title and above the matching ``x_key`` bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = _ordered([e[x_key] for e in agg], x_key, order)
    hues = _ordered([e[hue_key] for e in agg], hue_key, order) if hue_key else [None]
    colors = plt.get_cmap("tab20" if len(hues) > 10 else "tab10").colors
    width = 0.8 / len(hues)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(xs)) + (2.5 if hue_key else 0), 4.4))

    def entry(x, hue):
        return next((e for e in agg if e[x_key] == x and (hue is None or e[hue_key] == hue)), None)

    top = 0.0
    for h_i, hue in enumerate(hues):
        where = np.arange(len(xs)) + h_i * width
        found = [entry(x, hue) for x in xs]
        means = [e[metric][0] if e else np.nan for e in found]
        ses = [e[metric][1] if e else 0.0 for e in found]
        ax.bar(where, means, width, yerr=ses, label=str(hue) if hue else None,
               color=colors[h_i % len(colors)])  # fmt: skip
        for x, e, m, s in zip(where, found, means, ses):
            if e is not None and np.isfinite(m):
                top = max(top, m + s)
                ax.annotate(f"n={e['n']}", (x, m + s), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize="x-small")  # fmt: skip
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle=":", linewidth=1.5, label="chance")
    elif control is not None and hue_key == "variant" and control in hues:
        label = f"{control} (control)"
        for i, x in enumerate(xs):
            e = entry(x, control)
            if e is not None and np.isfinite(e[metric][0]):
                ax.hlines(e[metric][0], i - width / 2, i + 0.8 - width / 2, colors="black",
                          linestyles="--", linewidth=1.2,
                          label=label)  # fmt: skip
                label = None  # one legend entry
    elif control is not None and x_key == "variant" and control in xs:
        e = entry(control, None)
        if e is not None and np.isfinite(e[metric][0]):
            ax.axhline(e[metric][0], color="black", linestyle="--", linewidth=1.2,
                       label=f"{control} (control)")  # fmt: skip
    ax.set_xticks(np.arange(len(xs)) + width * (len(hues) - 1) / 2)
    ax.set_xticklabels(xs, rotation=20, ha="right")
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{metric.replace('_', ' ')} (mean ± SE over seeds)")
    if top > 0:
        ax.set_ylim(top=top * 1.12)  # room for the n labels
    fig.suptitle(title or metric.replace("_", " "))
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
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(title=hue_key, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def report_name(metrics: tuple[str, ...] | None, columns: str | None) -> str:
    """``report.md`` for the default report; ``report-<metrics>[-by-<columns>].md`` for one
    with other options, so that no report overwrites another."""
    if not metrics and not columns:
        return REPORT_FILE
    parts = ["+".join(metrics)] if metrics else []
    parts += [f"by-{columns}"] if columns else []
    return "report-" + re.sub(r"[^\w.+-]", "_", "-".join(parts)) + ".md"


def write_report(
    store: str | Path, metrics: tuple[str, ...] | None = None, columns: str | None = None
) -> str:
    """Write a markdown report and one PNG per metric into ``store``; return the markdown.

    ``metrics`` default to the recipe's (its ``ReportSpec`` in ``report.json``), or to
    :data:`DEFAULT_METRICS` for a store without one; metrics that no row has are left out. The
    default report is ``report.md``; one with ``metrics`` or ``columns`` (a group key such as
    ``task``: one pivot table per metric follows the long one) is written to
    :func:`report_name`. Returns the markdown."""
    store = Path(store)
    if not (store / RESULTS_FILE).is_file():
        what = "folder" if store.is_dir() else "results store"
        raise ValueError(
            f"no {what} with {RESULTS_FILE} at '{store}' (expected the --store folder of "
            "'robopref bench')"
        )
    name = report_name(tuple(metrics) if metrics else None, columns)
    spec = load_spec(store)
    rows = read_results(store)
    wanted = tuple(metrics or (spec.metrics if spec else DEFAULT_METRICS))
    shown = tuple(present_metrics(rows, wanted))
    if rows and not shown:
        numeric = sorted(
            {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
            - {"cell_rows", "wall_s", "cell_wall_s", "seed"}
        )
        raise ValueError(
            f"metrics: expected some of the rows' numbers {numeric}, found {list(wanted)}"
        )
    order = spec.order if spec else {}
    keys, constants = group_keys(rows, spec)
    agg = aggregate(rows, shown, tuple(keys), order)
    md = f"# Results: {store.name}\n\n"
    if constants:
        md += "All rows: " + ", ".join(f"{k}={v}" for k, v in constants.items()) + ".\n\n"
    if len(shown) < len(wanted):
        left = [m for m in wanted if m not in shown]
        md += f"Left out (in no row): {', '.join(left)}.\n\n"
    md += markdown_table(agg, shown) + "\n"
    if columns and agg:
        if columns not in keys:
            raise ValueError(f"columns: expected one of the group keys {keys}, found {columns!r}")
        for m in shown:
            table = pivot_table(agg, m, columns, shown, order)
            md += f"\n## {m} (mean ± SE over seeds)\n\n{table}\n"
    control = spec.control if spec else "shuffled"
    checks = (
        control_check(rows, control=control, keys=keys)
        if control and "success_rate" in shown
        else []
    )
    not_informative = [
        ", ".join(f"{k}={v}" for k, v in c["group"].items()) or "(all)"
        for c in checks
        if not c["informative"]
    ]
    if checks:
        md += "\n" + control_markdown(checks, control=control)
    if not_informative:  # flag the table itself, right under the title
        title, rest = md.split("\n\n", 1)
        banner = (
            f"**not informative**: oracle - {control} success gap not above "
            f"{CONTROL_SIGMAS:g} standard errors for {'; '.join(not_informative)} "
            "(see 'Negative control' below)."
        )
        md = f"{title}\n\n{banner}\n\n{rest}"
    if agg:
        x_key = keys[0]
        hue_key = (
            "variant"
            if "variant" in keys and x_key != "variant"
            else (keys[1] if len(keys) > 1 else None)
        )
        for m in shown:
            plot_metric(
                agg,
                m,
                x_key,
                hue_key,
                store / f"{m}.png",
                not_informative if m == "success_rate" else None,
                title=f"{store.name}: {m.replace('_', ' ')}",
                order=order,
                chance=(spec.chance.get(m) if spec else None),
                control=control,
            )
            md += f"\n![{m}]({m}.png)\n"
    with atomic_path(store / name) as tmp:
        tmp.write_text(md)
    return md
