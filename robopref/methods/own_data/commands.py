"""What the ``robopref`` commands of the own-data steps call: the positional arguments become
config fields, the whole config is validated (``load_run_config``) before any work, and each
returns the step's :class:`RunResult` for ``print_result``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from robopref.methods.result import RunResult
from robopref.methods.run import load_run_config, run_config


def _field(name: str, value: object) -> str:
    # JSON is YAML: a path with ':' or '#' stays one string
    return f"{name}={json.dumps(value)}"


def _out(method: str, data: str, out: str | None) -> Path:
    if out:
        return Path(out)
    return Path("runs") / f"{method}-{Path(data).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_reward(data: str, config: str | None, overrides: list[str], out: str | None) -> RunResult:
    """``robopref train-reward DATA``: run folder with ``reward.pt`` and ``reward.card.json``."""
    items = [*overrides, _field("data", data)]
    return run_config(config, items, _out("train-reward", data, out), method="train-reward")


def train_policy(data: str, config: str | None, overrides: list[str], out: str | None) -> RunResult:
    """``robopref train-policy DATA``: run folder with ``policy.pt``."""
    items = [*overrides, _field("data", data)]
    return run_config(config, items, _out("train-policy", data, out), method="train-policy")


def relabel(
    data: str,
    reward: str,
    out: str | None,
    in_place: bool,
    config: str | None,
    overrides: list[str],
) -> RunResult:
    """``robopref relabel DATA --reward CKPT --out NEW``: the new file (no run folder)."""
    items = [*overrides, _field("data", data), _field("reward", reward)]
    items += [_field("out", out)] if out is not None else []
    items += ["in_place=true"] if in_place else []
    module, cfg = load_run_config(config, items, method="relabel")
    return module.run(cfg)


def score(
    data: str, reward: str, keep_top: float | None, out: str | None, keep_failures: bool
) -> RunResult:
    """``robopref score DATA --reward CKPT [--keep-top F --out NEW]``."""
    from robopref.methods.own_data.score import score as score_episodes

    return score_episodes(data, reward, keep_top, out, keep_failures)
