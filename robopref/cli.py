"""The ``robopref`` command.

    robopref collect [--config F] [key=value ...]        collect a Meta-World dataset (HDF5)
    robopref label FILE [--config F] [--overwrite | --append] [key=value ...]
                                                         label it with a simulated teacher
    robopref info FILE                                   what is in a dataset
    robopref import SRC OUT.h5 [--state-keys a,b ...]    import robomimic / LeRobot (v2, v3.0) data
    robopref export FILE OUT --format lerobot|robomimic  export a dataset and its labels
    robopref label-ui FILE [--port P --k K ...]          label queries yourself in the browser
    robopref train-reward DATA [key=value ...]           reward model from the file's labels
    robopref score DATA --reward CKPT [--keep-top F --out NEW]  learned return per episode
    robopref relabel DATA --reward CKPT --out NEW        learned rewards into a new file
    robopref train-policy DATA [policy.name=cpl ...]     offline policy (iql, awr, filtered_bc, cpl)
    robopref run CONFIG [key=value ...] [--out DIR]      run a recipe (method: pearl | lm | collect ...)
    robopref lm --config F [key=value ...]               preference fine-tuning of a language policy
    robopref grape --config F [key=value ...]            GRAPE: TPO of a tokenised-action policy
    robopref bench SUITE [--jobs N] [--ray-address A]     run a suite of recipe runs (resumable)
    robopref report STORE                                tables and plots from a results store
    robopref demo                                        the README's small end-to-end run

Overrides use dotted keys, values are parsed as YAML: ``collect.tasks=[button-press-v3]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from robopref.config import ConfigError, load_config
from robopref.data import DataValidationError
from robopref.methods.run import run_config

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _console():
    from rich.console import Console

    return Console()


def _print_summary(summary: dict) -> None:
    from robopref.data.summary import format_summary

    _console().print(format_summary(summary))


def _check_output_file(path: str, flag: str) -> None:
    """Fail before any work when ``path`` cannot be an output file (a directory, or inside
    something that is not a directory)."""
    p = Path(path)
    if p.is_dir():
        raise DataValidationError(f"{path}: {flag}: expected an HDF5 file path, found a directory")
    parent = next((a for a in p.absolute().parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataValidationError(f"{path}: {flag}: expected a path inside a folder, found "
                                  f"'{parent}', which is a file")  # fmt: skip


def cmd_collect(args: argparse.Namespace) -> int:
    from robopref.data import save_dataset
    from robopref.data.locks import writer_lock
    from robopref.data.summary import summarize
    from robopref.envs import CollectConfig, collect_dataset

    config = load_config(CollectConfig, args.config, args.overrides)
    _check_output_file(args.out, "--out")
    # Held from the start: a `label` of the old file meanwhile would write its labels over the
    # new trajectories.
    with writer_lock(args.out, what="collect into it"):
        dataset = collect_dataset(config, progress=True)
        save_dataset(dataset, args.out)
    _print_summary(summarize(dataset))
    _console().print(f"wrote {args.out}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from robopref.data.summary import summarize
    from robopref.methods.collect import LabelConfig, label_file

    config = load_config(LabelConfig, args.config, args.overrides)
    existing = "overwrite" if args.overwrite else "append" if args.append else "refuse"
    dataset = label_file(args.file, config, existing=existing)
    _print_summary(summarize(dataset))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import h5py

    from robopref.data import load_dataset
    from robopref.data.importers import describe_source
    from robopref.data.summary import summarize

    path = Path(args.file)
    robopref_file = path.is_file() and h5py.is_hdf5(path)
    if robopref_file:
        with h5py.File(path, "r") as f:
            robopref_file = "robopref_format_version" in f.attrs
    source = describe_source(path)  # the keys a user can pass to `robopref import`
    if not robopref_file:
        if args.json:
            print(json.dumps(source, indent=2))
        else:
            _print_source(source)
        return 0
    summary = summarize(load_dataset(args.file))
    if args.json:
        print(json.dumps({**summary, "keys": source}, indent=2, default=float))
    else:
        _print_summary(summary)
        _print_source(source)
    return 0


def _print_source(source: dict) -> None:
    print(
        f"{source['source']}: {source['format']}"
        + (f" {source['codebase_version']}" if source.get("codebase_version") else "")
        + f", {source.get('episodes')} episodes"
    )
    print("observation keys (--obs-keys, --state-keys, --image-keys):")
    for k, v in source["observations"].items():
        print(f"  {k}  {v}")
    print("other keys: " + ", ".join(f"{k} {v}" for k, v in source["other"].items()))
    if source.get("filter_keys"):
        print("filter keys (--filter-key): " + ", ".join(source["filter_keys"]))


def _finish(result, args: argparse.Namespace) -> int:
    """Every run ends the same way: its tables, paths and tensorboard line; JSON with --json."""
    from robopref.methods.result import print_result

    if getattr(args, "json", False):
        print(json.dumps(result.to_json(), indent=1, default=str))
    else:
        print_result(result)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _finish(run_config(args.config, args.overrides, args.out), args)


def cmd_lm(args: argparse.Namespace) -> int:
    return _finish(run_config(args.config, args.overrides, args.out, method="lm"), args)


def _raised_in_h5py(e: BaseException) -> bool:
    """Whether the innermost Python frame of ``e``'s traceback is inside h5py."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("h5py")


def _keys(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; ``"none"`` -> ``[]``; None stays None."""
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else [k for k in text.split(",") if k.strip()]


def cmd_import(args: argparse.Namespace) -> int:
    from robopref.data.importers import import_to_file

    _check_output_file(args.out, "OUT")
    source, out = Path(args.source), Path(args.out)
    if source.exists() and out.exists() and source.samefile(out):
        raise DataValidationError(
            f"{args.out}: OUT: expected a new file, found the source file {args.source} itself "
            f"(writing it would replace the data being read); nothing was written"
        )
    kwargs = {}
    for name in ("obs_keys", "state_keys", "image_keys"):
        keys = _keys(getattr(args, name))
        if keys is not None:
            kwargs[name] = [k.strip() for k in keys]
    if args.filter_key is not None:
        kwargs["filter_key"] = args.filter_key
    if args.task is not None:
        kwargs["task"] = args.task
    try:
        result = import_to_file(args.source, args.out, format=args.format, **kwargs)
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        # h5py reports a truncated or corrupt file as OSError, or as KeyError/RuntimeError
        # raised inside h5py (bad checksums); the same types raised elsewhere are bugs
        if isinstance(e, DataValidationError) or not (isinstance(e, OSError) or _raised_in_h5py(e)):
            raise
        raise DataValidationError(
            f"{args.source}: expected a readable robomimic HDF5 file or LeRobot folder, found "
            f"one that cannot be read (truncated or corrupt? {type(e).__name__}: {e})"
        ) from e
    obs = ", ".join(f"{k} {list(v)}" for k, v in result["observations"].items())
    print(
        f"wrote {args.out}: {result['episodes']} episodes, {result['frames']} frames; "
        f"observations {obs}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from robopref.data import load_dataset
    from robopref.data.exporters import export_lerobot, export_robomimic

    dataset = load_dataset(args.dataset)
    if args.format == "lerobot":
        export_lerobot(dataset, args.out, fps=args.fps, robot_type=args.robot_type)
    else:
        export_robomimic(dataset, args.out)
    n_q = 0 if dataset.queries is None else len(dataset.queries.traj_index)
    print(f"wrote {args.out} ({args.format}): {len(dataset)} episodes, {n_q} preference queries")
    return 0


def cmd_train_reward(args: argparse.Namespace) -> int:
    from robopref.methods.own_data import commands

    return _finish(commands.train_reward(args.data, args.config, args.overrides, args.out), args)


def cmd_score(args: argparse.Namespace) -> int:
    from robopref.methods.own_data import commands

    result = commands.score(args.data, args.reward, args.keep_top, args.out, args.keep_failures)
    return _finish(result, args)


def cmd_relabel(args: argparse.Namespace) -> int:
    from robopref.methods.own_data import commands

    result = commands.relabel(
        args.data, args.reward, args.out, args.in_place, args.config, args.overrides
    )
    return _finish(result, args)


def cmd_train_policy(args: argparse.Namespace) -> int:
    from robopref.methods.own_data import commands

    return _finish(commands.train_policy(args.data, args.config, args.overrides, args.out), args)


def cmd_label_ui(args: argparse.Namespace) -> int:
    from robopref.humans import main as labelling_main

    return labelling_main(args.args)


def cmd_bench(args: argparse.Namespace) -> int:
    from robopref.bench import load_suite, run_suite, write_report

    suite = load_suite(args.suite)
    store = args.store or str(Path("runs") / "bench" / suite.name)
    run_suite(suite, store, jobs=args.jobs, ray_address=args.ray_address)
    print(write_report(store))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robopref.bench import write_report
    from robopref.bench.report import DEFAULT_METRICS

    metrics = tuple(args.metrics) if args.metrics else DEFAULT_METRICS
    try:
        print(write_report(args.store, metrics, columns=args.columns))
    except ValueError as e:
        raise ConfigError(f"report {args.store}: {e}") from None
    return 0


def cmd_grape(args: argparse.Namespace) -> int:
    return _finish(run_config(args.config, args.overrides, args.out, method="grape"), args)


def cmd_demo(args: argparse.Namespace) -> int:
    config = str(REPO_CONFIGS / "pearl" / "demo.yaml")
    return _finish(run_config(config, args.overrides, args.out), args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robopref", description="Learning from preferences in robotics."
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (tables and errors still print)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect a Meta-World dataset into an HDF5 file")
    p.add_argument("--config", default=str(REPO_CONFIGS / "collect" / "default.yaml"))
    p.add_argument("--out", default="dataset.h5", help="output HDF5 file (written atomically)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tasks=[button-press-v3]")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("label", help="label a dataset's segments with a simulated teacher")
    p.add_argument("file")
    p.add_argument("--config", default=str(REPO_CONFIGS / "label" / "default.yaml"))
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. teacher.name=mistake teacher.eps=0.1"
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true", help="replace the labels the file already holds"
    )
    existing.add_argument(
        "--append",
        action="store_true",
        help="keep the labels the file holds and add the new ones (use another seed= to get "
        "other queries)",
    )
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("info", help="summarise a dataset file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("import", help="import a robomimic HDF5 file or a LeRobot folder")
    p.add_argument("source", help="robomimic .hdf5 file or LeRobot folder (v2.0, v2.1, v3.0)")
    p.add_argument("out", help="output HDF5 file (robopref/robomimic layout)")
    p.add_argument("--format", default="auto", choices=["auto", "robomimic", "lerobot"])
    p.add_argument(
        "--state-keys",
        default=None,
        help="comma-separated low-dim keys concatenated into 'state' (what reward models "
        "read), e.g. robot0_eef_pos,robot0_eef_quat,object",
    )
    p.add_argument(
        "--obs-keys", default=None, help="comma-separated observation keys kept as they are"
    )
    p.add_argument(
        "--image-keys",
        default=None,
        help="comma-separated image/video keys to import ('none' for none; default: all, "
        "or only those in --obs-keys when that is given)",
    )
    p.add_argument(
        "--filter-key", default=None, help="robomimic mask or LeRobot split to import, e.g. train"
    )
    p.add_argument("--task", default=None, help="task name of every trajectory")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export", help="export a robopref dataset (and its labels) to LeRobot or robomimic"
    )
    p.add_argument("dataset", help="robopref HDF5 file")
    p.add_argument("out", help="output: a new LeRobot folder, or a robomimic .hdf5 file")
    p.add_argument("--format", required=True, choices=["lerobot", "robomimic"])
    p.add_argument(
        "--fps", type=float, default=None, help="LeRobot fps (default: the dataset's, else 10)"
    )
    p.add_argument("--robot-type", default=None, help="LeRobot robot_type")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "label-ui",
        help="label queries in the browser (python -m robopref.humans --help for options)",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="DATASET [--port P --k K ...]")
    p.set_defaults(func=cmd_label_ui)

    p = sub.add_parser("train-reward", help="fit a reward model to a file's preference labels")
    p.add_argument("data", help="robopref HDF5 file with labelled queries")
    p.add_argument("--config", default=str(REPO_CONFIGS / "own_data" / "train-reward.yaml"))
    p.add_argument(
        "overrides", nargs="*", help="e.g. model.kind=ensemble trainer.loss=plackett_luce"
    )
    p.add_argument(
        "--out", default=None, help="run folder (default runs/train-reward-<data>-<time>)"
    )
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_train_reward)

    p = sub.add_parser("score", help="learned return of every episode; --keep-top writes the best")
    p.add_argument("data", help="robopref HDF5 file")
    p.add_argument("--reward", required=True, help="reward checkpoint (train-reward's reward.pt)")
    p.add_argument("--keep-top", type=float, default=None, help="share of episodes to keep, (0, 1]")
    p.add_argument("--out", default=None, help="new file for the kept episodes")
    p.add_argument(
        "--keep-failures", action="store_true",
        help="keep the other episodes too, flagged (metadata 'kept', filter keys top/rest)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("relabel", help="write a learned reward's per-step rewards into a new file")
    p.add_argument("data", help="robopref HDF5 file")
    p.add_argument("--reward", required=True, help="reward checkpoint (train-reward's reward.pt)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", default=None, help="the new file")
    target.add_argument("--in-place", action="store_true", help="write over DATA itself")
    p.add_argument("--config", default=str(REPO_CONFIGS / "own_data" / "relabel.yaml"))
    p.add_argument("overrides", nargs="*")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_relabel)

    p = sub.add_parser("train-policy", help="offline policy: iql, awr, filtered_bc or cpl")
    p.add_argument("data", help="robopref HDF5 file (relabelled, or labelled for cpl)")
    p.add_argument("--config", default=str(REPO_CONFIGS / "own_data" / "train-policy.yaml"))
    p.add_argument("overrides", nargs="*", help="e.g. policy.name=cpl policy.cpl.steps=2000")
    p.add_argument(
        "--out", default=None, help="run folder (default runs/train-policy-<data>-<time>)"
    )
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_train_policy)

    p = sub.add_parser("run", help="run a recipe config (its 'method:' key picks the recipe)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--out", default=None, help="run directory (default runs/<method>-<config>-<time>)"
    )
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("lm", help="preference fine-tuning of a language policy")
    p.add_argument("--config", default=str(REPO_CONFIGS / "lm" / "tiny.yaml"))
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", default=None)
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("grape", help="GRAPE: trajectory-wise preference alignment of a VLA policy")
    p.add_argument("--config", default=str(REPO_CONFIGS / "grape" / "tiny.yaml"))
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", default=None)
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_grape)

    p = sub.add_parser("bench", help="run every cell of a suite (resumable), then write the report")
    p.add_argument("suite")
    p.add_argument(
        "--store", default=None, help="results store directory (default runs/bench/<suite name>)"
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes on this machine")
    p.add_argument(
        "--ray-address", default=None, help="run cells on Ray: 'local' or a cluster address"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="tables and plots from a results store")
    p.add_argument("store")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="numeric columns to aggregate (default: label_accuracy reward_accuracy success_rate)",
    )
    p.add_argument(
        "--columns", default=None, help="also one table per metric with a column per KEY value"
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="small end-to-end PEARL run (minutes on 2 CPU cores)")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", default=None)
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_demo)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may also follow options (``run C --out D a=1``)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the command; bad input (config, data, a busy or unwritable file) prints one line
    ``robopref: ...`` to stderr and returns 2. Other exceptions are bugs and propagate."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["label-ui"]:  # the labelling page parses its own options (incl. --help)
        return cmd_label_ui(argparse.Namespace(args=argv[1:]))
    args = _parse(build_parser(), argv)
    if args.quiet:
        from robopref.progress import set_quiet

        set_quiet()
    try:
        return args.func(args)
    except (ConfigError, DataValidationError) as e:
        print(f"robopref: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a file the user named: a bug, show the traceback
            raise
        names = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        print(f"robopref: {names}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
