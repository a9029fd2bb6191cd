"""The ``robopref`` command.

    robopref collect [--config F] [key=value ...]        collect a Meta-World dataset (HDF5)
    robopref label FILE [--config F] [--overwrite | --append] [key=value ...]
                                                         label it with a simulated teacher
    robopref info FILE                                   what is in a dataset
    robopref import SRC OUT.h5 [--state-keys a,b ...]    import robomimic / LeRobot (v2, v3.0) data
    robopref export FILE OUT --format lerobot|robomimic [--reward CKPT]
                                                         export a dataset and its labels
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
    robopref config show NAME|PATH [key=value ...]       a config with every field's description
    robopref config list                                 the configs shipped with the package

Overrides use dotted keys, values are parsed as YAML: ``collect.tasks=[button-press-v3]``.
A config is a file or the name of a packaged one (``pearl/base``, see ``robopref config list``).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from robopref import __version__
from robopref.config import ConfigError, load_config, resolve_config_path
from robopref.data import DataValidationError
from robopref.methods.run import run_config
from robopref.utils import OutputPathError, check_output_path


def _console():
    from rich.console import Console

    return Console()


def _print_summary(summary: dict) -> None:
    from robopref.data.summary import format_summary

    _console().print(format_summary(summary))


def _check_output_file(path: str, flag: str, overwrite: bool | None = None) -> None:
    """Fail before any work when ``path`` cannot be an output file (a directory, a FIFO or
    device node, inside something that is not a directory, an existing file without
    ``--overwrite`` when ``overwrite`` is False, a read-only file)."""
    if Path(path).is_dir():
        raise DataValidationError(f"{path}: {flag}: expected an HDF5 file path, found a directory")
    check_output_path(path, flag=flag, overwrite=overwrite)


def cmd_collect(args: argparse.Namespace) -> int:
    from robopref.data import save_dataset
    from robopref.data.locks import writer_lock
    from robopref.data.summary import summarize
    from robopref.envs import CollectConfig, collect_dataset

    config = load_config(CollectConfig, args.config, args.overrides)
    _check_output_file(args.out, "--out", overwrite=args.overwrite)
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
    if Path(args.file).exists() and not Path(args.file).is_dir():
        check_output_path(args.file, flag="FILE", overwrite=True if args.overwrite else None)
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

    source, out = Path(args.source), Path(args.out)
    if source.exists() and out.exists() and source.samefile(out):
        raise DataValidationError(
            f"{args.out}: OUT: expected a new file, found the source file {args.source} itself "
            f"(writing it would replace the data being read); nothing was written"
        )
    _check_output_file(args.out, "OUT", overwrite=args.overwrite)
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
        if isinstance(e, OSError) and e.filename not in (None, args.source):
            raise  # about another file, e.g. OUT on a full disk: main() names it
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

    if args.format == "lerobot":
        check_output_path(args.out, expect="folder", flag="OUT")
    else:
        _check_output_file(args.out, "OUT")
    model = None
    if args.reward is not None:  # checked before the (possibly large) dataset is read
        from robopref.rewards.relabel import load_reward_checkpoint, relabel_dataset

        model = load_reward_checkpoint(args.reward)
    dataset = load_dataset(args.dataset)
    if model is not None:
        # the reward reads the key it was trained on (its card; 'state' without one)
        from robopref.methods.own_data.data import card_path

        card = card_path(args.reward)
        obs_key = (
            json.loads(card.read_text()).get("obs_key", "state") if card.is_file() else "state"
        )
        dataset = relabel_dataset(dataset, model, args.reward, obs_key)
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

    def selector(dataset, pool, strategy, seed):  # the page's --select ensemble
        from robopref.rewards.active import ActiveSelector

        return ActiveSelector(dataset, pool, strategy, seed=seed)

    return labelling_main(args.args, selector_factory=selector)


def cmd_bench(args: argparse.Namespace) -> int:
    from robopref.bench import load_suite, run_suite, write_report

    suite = load_suite(args.suite)
    store = args.store or str(Path("runs") / "bench" / suite.name)
    run_suite(suite, store, jobs=args.jobs, ray_address=args.ray_address)
    try:
        print(write_report(store))
    except ValueError as e:
        raise ConfigError(f"report {store}: {e}") from None
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robopref.bench import write_report

    metrics = tuple(args.metrics) if args.metrics else None
    try:
        print(write_report(args.store, metrics, columns=args.columns))
    except ValueError as e:
        raise ConfigError(f"report {args.store}: {e}") from None
    return 0


def cmd_grape(args: argparse.Namespace) -> int:
    return _finish(run_config(args.config, args.overrides, args.out, method="grape"), args)


def cmd_vla_eval(args: argparse.Namespace) -> int:
    from robopref.methods.grape.vla_eval import evaluate_adapters

    m = evaluate_adapters(args.base, args.adapters, args.task, args.episodes,
                          args.max_steps, args.image_size, not args.sample, device=args.device)  # fmt: skip
    print(f"{args.task}: success {m['success_rate']:.3f} ± {m['success_se']:.3f} over "
          f"{m['episodes']} episodes, {m['mean_length']:.1f} steps, "
          f"{m['mean_collisions']:.1f} contacts")  # fmt: skip
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = str(resolve_config_path("pearl/demo"))
    return _finish(run_config(config, args.overrides, args.out), args)


def _config_kind(path: Path, data: dict, kind: str | None) -> str:
    if kind:
        return kind
    if "method" in data:
        return "recipe"
    if "axes" in data:
        return "suite"
    if path.resolve().parent.name in ("collect", "label"):
        return path.resolve().parent.name
    raise ConfigError(
        f"config file '{path}': cannot tell which config it is (no 'method:' key of a recipe, "
        "no 'axes:' of a suite); pass --kind collect|label|recipe|suite"
    )


def cmd_config(args: argparse.Namespace) -> int:
    from robopref.config import describe_config, packaged_configs, read_config_data

    if args.action == "list":
        print("\n".join(packaged_configs()))
        return 0
    path = resolve_config_path(args.name)
    kind = _config_kind(path, read_config_data(path), args.kind)
    if kind == "recipe":
        from robopref.methods.run import load_run_config

        config = load_run_config(str(path), args.overrides)[1]
    elif kind == "suite":
        from robopref.bench import load_suite

        if args.overrides:
            raise ConfigError(f"config show {args.name}: a suite takes no overrides")
        config = load_suite(path)
    elif kind == "collect":
        from robopref.envs import CollectConfig

        config = load_config(CollectConfig, path, args.overrides)
    else:
        from robopref.methods.collect import LabelConfig

        config = load_config(LabelConfig, path, args.overrides)
    print(f"# {path} ({kind}: {type(config).__name__})")
    print(describe_config(config))
    return 0


def _example(text: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in text.strip().splitlines())


def _add(sub, name: str, help: str, example: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=_example(example),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


OVERRIDES_HELP = "dotted key=value overrides (values are YAML), e.g. seed=1 train.lr=3e-4"
CONFIG_HELP = "a YAML file or a packaged config's name (robopref config list); default: %(default)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robopref",
        description="Learning from preferences in robotics.",
        epilog="A config is a YAML file or the name of a packaged one (robopref config list).\n"
        + _example(
            """
robopref demo                                 # a small PEARL run, prints a table
robopref run rapl/tiny seed=1                 # any recipe config, with overrides
robopref config show pearl/base               # every field of a config, described
robopref <command> --help                     # options and an example per command"""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"robopref {__version__}")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (tables and errors still print)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add(
        sub,
        "collect",
        "collect a Meta-World dataset into an HDF5 file",
        "robopref collect --out data/mw.h5 tasks=[button-press-v3] expert_episodes=2",
    )
    p.add_argument("--config", default="collect/default", help=CONFIG_HELP)
    p.add_argument("--out", default="dataset.h5", help="output HDF5 file (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tasks=[button-press-v3]")
    p.set_defaults(func=cmd_collect)

    p = _add(
        sub,
        "label",
        "label a dataset's segments with a simulated teacher",
        "robopref label data/mw.h5 teacher.name=mistake num_queries=2000 --overwrite\n"
        "robopref label data/mw.h5 --num-queries 2000 --k 3     # label-ui's spellings work too",
    )
    p.add_argument("file")
    p.add_argument("--config", default="label/default", help=CONFIG_HELP)
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. teacher.name=mistake teacher.eps=0.1"
    )
    for flag in ("--num-queries", "--k", "--segment-length", "--seed"):
        key = flag[2:].replace("-", "_")
        p.add_argument(
            flag, type=int, default=None, dest=f"as_override_{key}", help=f"same as {key}=N"
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

    p = _add(sub, "info", "summarise a dataset file", "robopref info data/mw.h5 --json")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = _add(
        sub,
        "import",
        "import a robomimic HDF5 file or a LeRobot folder",
        "robopref info my_robot_data/            # lists the keys to choose from\n"
        "robopref import my_robot_data/ data/robot.h5 --state-keys robot0_eef_pos,object",
    )
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")
    p.set_defaults(func=cmd_import)

    p = _add(
        sub,
        "export",
        "export a robopref dataset (and its labels) to LeRobot or robomimic",
        "robopref export data/robot.h5 labelled/ --format lerobot --fps 10",
    )
    p.add_argument("dataset", help="robopref HDF5 file")
    p.add_argument("out", help="output: a new LeRobot folder, or a robomimic .hdf5 file")
    p.add_argument("--format", required=True, choices=["lerobot", "robomimic"])
    p.add_argument(
        "--fps", type=float, default=None, help="LeRobot fps (default: the dataset's, else 10)"
    )
    p.add_argument("--robot-type", default=None, help="LeRobot robot_type")
    p.add_argument(
        "--reward",
        default=None,
        metavar="CKPT",
        help="write this reward model's per-step rewards as the rewards (next.reward); the "
        "recorded ones are kept as next.original_reward / extras/original_rewards",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "label-ui",
        help="label queries in the browser (robopref label-ui --help for options)",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="DATASET [--port P --k K ...]")
    p.set_defaults(func=cmd_label_ui)

    p = _add(
        sub,
        "train-reward",
        "fit a reward model to a file's preference labels",
        "robopref train-reward data/robot.h5 model.kind=ensemble --out runs/reward",
    )
    p.add_argument("data", help="robopref HDF5 file with labelled queries")
    p.add_argument("--config", default="own_data/train-reward", help=CONFIG_HELP)
    p.add_argument(
        "overrides", nargs="*", help="e.g. model.kind=ensemble trainer.loss=plackett_luce"
    )
    p.add_argument(
        "--out", default=None, help="run folder (default runs/train-reward-<data>-<time>)"
    )
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_train_reward)

    p = _add(
        sub,
        "score",
        "learned return of every episode; --keep-top writes the best",
        "robopref score data/robot.h5 --reward runs/reward/reward.pt --keep-top 0.25 --out data/top.h5",
    )
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

    p = _add(
        sub,
        "relabel",
        "write a learned reward's per-step rewards into a new file",
        "robopref relabel data/robot.h5 --reward runs/reward/reward.pt --out data/relabelled.h5",
    )
    p.add_argument("data", help="robopref HDF5 file")
    p.add_argument("--reward", required=True, help="reward checkpoint (train-reward's reward.pt)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", default=None, help="the new file")
    target.add_argument("--in-place", action="store_true", help="write over DATA itself")
    p.add_argument("--config", default="own_data/relabel", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_relabel)

    p = _add(
        sub,
        "train-policy",
        "offline policy: iql, awr, filtered_bc or cpl",
        "robopref train-policy data/relabelled.h5 policy.name=iql --out runs/policy",
    )
    p.add_argument("data", help="robopref HDF5 file (relabelled, or labelled for cpl)")
    p.add_argument("--config", default="own_data/train-policy", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help="e.g. policy.name=cpl policy.cpl.steps=2000")
    p.add_argument(
        "--out", default=None, help="run folder (default runs/train-policy-<data>-<time>)"
    )
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_train_policy)

    p = _add(
        sub,
        "run",
        "run a recipe config (its 'method:' key picks the recipe)",
        "robopref run pearl/demo seed=1 --out runs/demo-seed1\n"
        "robopref run my_config.yaml train.lr=3e-4",
    )
    p.add_argument("config", help="a YAML file or a packaged config's name (robopref config list)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--out", default=None, help="run directory (default runs/<method>-<config>-<time>)"
    )
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_run)

    p = _add(
        sub,
        "lm",
        "preference fine-tuning of a language policy",
        "robopref lm --config lm/tiny loss.name=lipo_lambda",
    )
    p.add_argument("--config", default="lm/tiny", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--out", default=None, help="run directory (default runs/lm-<config>-<time>)")
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_lm)

    p = _add(
        sub,
        "grape",
        "GRAPE: trajectory-wise preference alignment of a VLA policy",
        "robopref grape --config grape/cpu seed=1",
    )
    p.add_argument("--config", default="grape/tiny", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--out", default=None, help="run directory (default runs/grape-<config>-<time>)")
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_grape)

    p = _add(
        sub,
        "bench",
        "run every cell of a suite (resumable), then write the report",
        "robopref bench bench/rapl-metaworld --jobs 2 --store runs/bench/rapl-metaworld",
    )
    p.add_argument("suite", help="a suite YAML file or a packaged suite's name (bench/...)")
    p.add_argument(
        "--store", default=None, help="results store directory (default runs/bench/<suite name>)"
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes on this machine")
    p.add_argument(
        "--ray-address", default=None, help="run cells on Ray: 'local' or a cluster address"
    )
    p.set_defaults(func=cmd_bench)

    p = _add(
        sub,
        "report",
        "tables and plots from a results store",
        "robopref report runs/bench/rapl-metaworld --metrics spearman_step accuracy --columns task",
    )
    p.add_argument("store")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="numeric columns to aggregate (default: the recipe's metrics); a report with "
        "--metrics or --columns goes to its own file, e.g. report-accuracy.md, never report.md",
    )
    p.add_argument(
        "--columns", default=None, help="also one table per metric with a column per KEY value"
    )
    p.set_defaults(func=cmd_report)

    p = _add(
        sub,
        "vla-eval",
        "roll out a VLA adapter in a Meta-World task: success ± SE",
        "robopref vla-eval --base models/smolvlm --adapters runs/grape-offline/adapters --task reach-v3",
    )
    p.add_argument("--base", required=True, help="local image-text-to-text model folder")
    p.add_argument("--adapters", default=None, help="adapter folder (peft + robopref_vla.json)")
    p.add_argument("--task", default="reach-v3", help="Meta-World task")
    p.add_argument("--episodes", type=int, default=20, help="episodes (seeds 10000 + i)")
    p.add_argument("--max-steps", type=int, default=100, help="step limit per episode")
    p.add_argument("--image-size", type=int, default=64, help="camera frame size (pixels)")
    p.add_argument("--sample", action="store_true", help="sample actions instead of greedy")
    p.add_argument("--device", default="auto", help="torch device")
    p.set_defaults(func=cmd_vla_eval)

    p = _add(
        sub,
        "demo",
        "small end-to-end PEARL run (minutes on 2 CPU cores)",
        "robopref demo\nrobopref demo seed=1 --out runs/demo-seed1",
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--out", default=None, help="run directory")
    p.add_argument("--json", action="store_true", help="print the run's results as JSON")
    p.set_defaults(func=cmd_demo)

    p = _add(
        sub,
        "config",
        "show a config with every field's description, or list the packaged configs",
        "robopref config show pearl/base\n"
        "robopref config show my_config.yaml seed=3     # with overrides applied\n"
        "robopref config list",
    )
    p.add_argument("action", choices=["show", "list"])
    p.add_argument("name", nargs="?", help="a YAML file or a packaged config's name (for show)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--kind",
        choices=["recipe", "collect", "label", "suite"],
        default=None,
        help="which config it is (default: from its 'method:'/'axes:' keys or its folder)",
    )
    p.set_defaults(func=cmd_config)
    return parser


class _UsageError(Exception):
    """A command line argparse would reject: one line, exit code 2."""


def _flag_hint(extra: list[str]) -> str:
    """``--num_queries 5`` -> `` (did you mean num_queries=5?)`` for a flag-shaped override."""
    for i, token in enumerate(extra):
        if not token.startswith("--") or len(token) < 3:
            continue
        key, eq, value = token[2:].partition("=")
        if not eq and i + 1 < len(extra) and not extra[i + 1].startswith("-"):
            value = extra[i + 1]
        key = key.replace("-", "_")
        return f"; did you mean {key}={value or '...'}?"
    return ""


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may also follow options (``run C --out D a=1``).

    Raises:
        _UsageError: an option the command does not know (a hint when it looks like an
            override written as a flag).
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            flags = " ".join(e for e in extra if e.startswith("-")) or " ".join(extra)
            hint = _flag_hint(extra) if hasattr(args, "overrides") else ""
            raise _UsageError(
                f"{args.command}: unrecognized arguments: {flags}{hint} "
                f"(robopref {args.command} --help)"
            )
        args.overrides = [*args.overrides, *extra]
    # label's flags spelt as in label-ui (--num-queries 50) become overrides
    for name, value in list(vars(args).items()):
        if name.startswith("as_override_") and value is not None:
            args.overrides = [*args.overrides, f"{name.removeprefix('as_override_')}={value}"]
    return args


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the command; bad input (config, data, a busy or unwritable file) prints one line
    ``robopref: ...`` to stderr and returns 2. Other exceptions are bugs and propagate."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["label-ui"]:  # the labelling page parses its own options (incl. --help)
        return cmd_label_ui(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except _UsageError as e:
        print(f"robopref {e}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "config" and args.action == "show" and not args.name:
        print("robopref config show: expected a config name or file (robopref config list)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.quiet:
        from robopref.progress import set_quiet

        set_quiet()
    try:
        return args.func(args)
    except (ConfigError, DataValidationError, OutputPathError) as e:
        print(f"robopref: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        # h5py, pyarrow and torch raise OSErrors without a file name: they are about the file
        # the command writes (or reads)
        target = e.filename or _target(args)
        if target is None:
            raise
        names = f"{target}" + (f" -> {e.filename2}" if e.filename2 else "")
        # writes go through a temporary file renamed at the end: a failed one changed nothing
        unchanged = "; nothing was written and existing files are unchanged" * (
            e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
        )
        print(f"robopref: {names}: {_one_line(e.strerror or str(e))}{unchanged}", file=sys.stderr)
        return 2


def _target(args: argparse.Namespace) -> str | None:
    """The file or folder the command writes (else reads), to name in an error about it."""
    for name in ("out", "file", "dataset", "store"):
        value = getattr(args, name, None)
        if value:
            return str(value)
    return None


if __name__ == "__main__":
    sys.exit(main())
