"""Recipe ``grape``: GRAPE (Zhang et al. 2024) on Meta-World with a tokenised-action (VLA) policy.

1. SFT: behaviour cloning of a VLA (:mod:`robopref.policies.vla`) on noisy scripted demonstrations
   of the in-domain tasks, each with its language instruction; then its evaluation.
2. Rounds, per learner and cost variant: roll out the current policy (sampling), score each
   rollout with the guided cost (:mod:`robopref.policies.vla.costs`), build chosen/rejected pairs
   (or ranked lists) per task, and update LoRA adapters against the frozen SFT policy with TPO (a
   loss of :mod:`robopref.losses` on trajectory-level action-token log-ratios, summed or
   per-token means, optionally anchored by the chosen rollouts' NLL). Baselines on the same
   rollout budget and seeds: rejection-sampling fine-tuning (behaviour cloning of the successful
   or best rollouts) and step-level DPO.
3. Each round ends with an evaluation (:mod:`robopref.policies.vla.evaluate`) on the in-domain and
   held-out tasks: success rate, steps per episode, contacts per episode.

Every checkpoint is a :class:`~robopref.methods.common.Stage`: the SFT policy, then one per round,
each after the one before it, so a rerun resumes what its config made and makes again everything
from the first stage it changes. ``robopref run grape/tiny``: minutes on a CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from robopref.config import ConfigError
from robopref.data import Trajectory
from robopref.methods.common import RunResult, Stage, start_run
from robopref.methods.grape.config import GrapeConfig
from robopref.methods.grape.results import eval_line, log_eval, run_result
from robopref.policies.vla import (
    EnvPool,
    PixelSettings,
    VLAPolicy,
    apply_lora,
    build_lists,
    build_pairs,
    build_tiny_vla,
    check_tokenizer,
    evaluate_splits,
    guided_scores,
    load_adapters,
    load_policy,
    load_pretrained_vla,
    rollout,
    save_adapters,
    save_policy,
    score_components,
    scripted_demos,
    select_rejection_sampling,
    sft_train,
    step_dpo_train,
    summarize_rollouts,
    tpo_train,
)
from robopref.progress import bar, is_quiet
from robopref.utils import atomic_path, resolve_device


@dataclass(frozen=True)
class Round:
    """Round ``index`` (from 0) of ``learner`` on cost ``variant``."""

    learner: str
    variant: str
    index: int

    @property
    def label(self) -> str:
        return f"{self.learner}/{self.variant} round {self.index + 1}"


def run(config: GrapeConfig, out_dir: str | Path) -> RunResult:
    """SFT, then ``tpo.rounds`` rounds per cost variant (TPO) and per baseline (task cost), each
    followed by an evaluation. Returns the run's rows and tables."""
    out_dir, _ = start_run(config, out_dir)
    device = resolve_device(config.device)
    _choose_gl_backend(config, device)
    ckpt = out_dir / "checkpoints"
    writer = _writer(config, out_dir)
    pool = make_pool(config)
    start = time.perf_counter()
    try:
        sft = sft_stage(config, ckpt)
        _, sft_info = sft.run(
            make=partial(train_sft, config, pool, device, writer),
            save=partial(_save_checkpoint, save_policy),
            load=partial(_read_sft, config, device),
        )
        log_eval(writer, "sft", sft_info["eval"], 0)
        _say(config, eval_line("sft", sft_info["eval"]))
        learners = {}
        for learner, variant in config.learners():
            current = LearnerPolicy(config, sft.path, device)
            rounds, previous = [], sft
            for r in range(config.tpo.rounds):
                rnd = Round(learner, variant, r)
                stage = round_stage(config, ckpt, rnd, after=previous)
                _, info = stage.run(
                    make=partial(improve_and_evaluate, config, current, pool, rnd, writer),
                    save=partial(_save_checkpoint, save_adapters),
                    load=current.resume_from,
                )
                if info["eval"] is not None:
                    log_eval(writer, f"{learner}/{variant}", info["eval"], r + 1)
                    _say(config, eval_line(rnd.label, info["eval"]))
                rounds.append(info)
                previous = stage
            learners[f"{learner}/{variant}"] = rounds
    finally:
        pool.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    result = run_result(config, str(device), sft_info, learners, seconds)
    result.artefacts = {"checkpoints": str(ckpt)}
    result.tensorboard = str(out_dir / "tb") if config.tensorboard else None
    return result


# ---- stages ---------------------------------------------------------------------------------

# the config sections that make the SFT checkpoint and its evaluation
SFT_SECTIONS = {"tasks", "held_out_tasks", "task_specs", "max_episode_steps", "model", "sft"}
SFT_SECTIONS |= {"eval", "seed"}


def sft_stage(config: GrapeConfig, ckpt: Path) -> Stage:
    """``checkpoints/sft.pt`` (with ``sft.json``: demonstrations, history, evaluation)."""
    key = config.model_dump(mode="json", include=SFT_SECTIONS)
    return Stage("sft", ckpt / "sft.pt", key=key, resume=config.resume)


def round_stage(config: GrapeConfig, ckpt: Path, rnd: Round, after: Stage) -> Stage:
    """``checkpoints/VARIANT/round_RR.pt`` (TPO; ``LEARNER-VARIANT/`` for a baseline): the
    round's adapters, with ``round_RR.json`` (rollouts, update history, evaluation)."""
    folder = rnd.variant if rnd.learner == "tpo" else f"{rnd.learner}-{rnd.variant}"
    key = {
        "learner": [rnd.learner, rnd.variant],
        "lora": config.lora,
        "tpo": config.tpo.model_dump(mode="json", exclude={"rounds"}),
        "cost": config.cost_variants()[rnd.variant],
        "evaluated": _evaluated(config, rnd.index),
    }
    if rnd.learner == "rejection_sampling":
        key["rejection_sampling"] = config.rejection_sampling
    path = ckpt / folder / f"round_{rnd.index:02d}.pt"
    return Stage(rnd.label, path, key=key, after=[after], resume=config.resume)


def _evaluated(config: GrapeConfig, r: int) -> bool:
    return config.eval.every_round or r == config.tpo.rounds - 1


def _save_checkpoint(save_model: Any, made: tuple[VLAPolicy, dict], path: Path) -> None:
    """A stage's ``save``: the model file at the stage's path, its info as JSON beside it."""
    policy, info = made
    save_model(policy, path)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=float))


def _read_info(path: Path) -> tuple[None, dict[str, Any]]:
    """A stage's ``load``: the info beside a checkpoint (the model is loaded where needed)."""
    return None, json.loads(path.with_suffix(".json").read_text())


# ---- SFT ------------------------------------------------------------------------------------


def train_sft(config: GrapeConfig, pool: EnvPool, device: Any, writer: Any) -> tuple:
    """The SFT policy on scripted demonstrations, and its evaluation: ``(policy, info)``."""
    policy = build_policy(config).to(device)
    s = config.sft
    demos = scripted_demos(
        pool,
        config.tasks,
        s.demos_per_task,
        s.action_noise,
        s.successful_only,
        lambda ti, i: _seed(config, 1, ti, i),
        label="demos" if config.progress else None,
    )
    history = sft_train(
        policy, demos, **s.train_options(), seed=config.seed, writer=writer,
        progress=config.progress, label="sft",
    )  # fmt: skip
    info = {
        "demos": len(demos),
        "demo_steps": int(sum(len(d) for d in demos)),
        "history": history,
        "eval": evaluate_splits_of(config, policy, pool, "eval[sft]"),
    }
    return policy, info


def _read_sft(config: GrapeConfig, device: Any, path: Path) -> tuple[None, dict[str, Any]]:
    """The info of a current SFT checkpoint, after checking that its tokenizer writes this
    config's instructions (a checkpoint of other tasks is a user error: wrong ``--out``)."""
    from robopref.envs import instruction

    names = [instruction(t) for t in config.tasks + config.held_out_tasks]
    try:
        check_tokenizer(load_policy(path, device), names, str(path))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _say(config, f"reusing {path}")
    return _read_info(path)


# ---- rounds ---------------------------------------------------------------------------------


class LearnerPolicy:
    """The policy a learner improves over its rounds: the SFT policy with LoRA adapters, built
    at first need (rounds read back from their checkpoints need no model), then holding the
    adapters of the last round read back."""

    def __init__(self, config: GrapeConfig, sft_path: Path, device: Any):
        self.config, self.sft_path, self.device = config, sft_path, device
        self.adapters: Path | None = None
        self.policy: VLAPolicy | None = None

    def get(self) -> VLAPolicy:
        if self.policy is None:
            self.policy = load_policy(self.sft_path, self.device)
            apply_lora(self.policy, **self.config.lora.model_dump())
            if self.adapters is not None:
                load_adapters(self.policy, self.adapters)
        return self.policy

    def resume_from(self, path: Path) -> tuple[None, dict[str, Any]]:
        """A current round: its info; its adapters start the next round made."""
        self.adapters = path
        _say(self.config, f"reusing {path}")
        return _read_info(path)


def improve_and_evaluate(
    config: GrapeConfig, current: LearnerPolicy, pool: EnvPool, rnd: Round, writer: Any
) -> tuple[VLAPolicy, dict[str, Any]]:
    """One round (:func:`improve_round`), then its evaluation when it is evaluated."""
    policy = current.get()
    info = improve_round(config, policy, pool, rnd, writer)
    info["eval"] = None
    if _evaluated(config, rnd.index):
        info["eval"] = evaluate_splits_of(config, policy, pool, f"eval[{rnd.label}]")
    return policy, info


def improve_round(
    config: GrapeConfig, policy: VLAPolicy, pool: EnvPool, rnd: Round, writer: Any = None
) -> dict[str, Any]:
    """One round: rollouts -> guided scores -> the learner's update. The rollout seeds and the
    sampling stream depend only on ``(seed, variant, round)``, so every learner of a variant sees
    the same episode configurations (and, in round 1, the very same rollouts)."""
    import torch

    tpo, cost = config.tpo, config.cost_variants()[rnd.variant]
    vi, r = list(config.cost_variants()).index(rnd.variant), rnd.index
    generator = torch.Generator().manual_seed(_seed(config, 3, vi, r))
    rollouts: list[Trajectory] = []
    n = tpo.rollouts_per_task
    label = f"rollouts[{rnd.label}]"
    with bar(len(config.tasks) * n, label, unit="ep", enabled=config.progress) as shown:
        for ti, task in enumerate(config.tasks):
            seeds = [_seed(config, 2, vi, r, ti, i) for i in range(n)]
            rollouts += rollout(policy, pool, task, seeds, False, tpo.temperature, generator)
            shown.update(n)
    components = score_components(policy, rollouts, config.max_episode_steps, cost.stage_scale)
    scores = guided_scores(components, cost.weights())
    task_of = [t.task for t in rollouts]
    seed = _seed(config, 4, vi, r)
    info: dict[str, Any] = {
        "rollouts": {**summarize_rollouts(rollouts), "mean_score": float(scores.mean())},
        "rollouts_per_task": {
            task: summarize_rollouts([t for t in rollouts if t.task == task])
            for task in config.tasks
        },
    }
    shown_update = dict(progress=config.progress, label=f"update[{rnd.label}]")

    if rnd.learner == "rejection_sampling":
        rs = config.rejection_sampling
        successes = np.array([t.success for t in rollouts])
        keep = select_rejection_sampling(scores, task_of, successes, rs.select, rs.top_k)
        history = sft_train(
            policy, [rollouts[i] for i in keep], epochs=rs.epochs, batch_size=rs.batch_size,
            lr=rs.lr, seed=seed, fit_normalization=False, **shown_update,
        )  # fmt: skip
        return {**info, "preference_items": len(keep), "update": history[-1], "history": history}

    if rnd.learner == "step_dpo" or tpo.pairs != "lists":
        mode = "all" if tpo.pairs == "lists" else tpo.pairs
        pairs = build_pairs(scores, task_of, mode, tpo.margin)
    if rnd.learner == "step_dpo":
        history = step_dpo_train(
            policy, rollouts, pairs, **tpo.update_options(), seed=seed, **shown_update
        )
        n_items = len(pairs)
    else:
        if tpo.pairs == "lists":
            lists = build_lists(scores, task_of, tpo.max_list_size)
            groups = [(i.tolist(), y.tolist()) for i, y in lists]
        else:
            groups = [((w, lo), (1.0, 0.0)) for w, lo in pairs]
        history = tpo_train(
            policy, rollouts, groups, loss=tpo.loss, loss_options=tpo.loss_options,
            **tpo.update_options(), seed=seed, normalize=tpo.normalize,
            sft_weight=tpo.sft_weight, writer=writer, step_offset=r * 100_000,
            log_prefix=f"tpo/{rnd.variant}", **shown_update,
        )  # fmt: skip
        n_items = len(groups)
    update = history[-1] if history else None
    return {**info, "preference_items": n_items, "update": update, "history": history}


# ---- pieces ---------------------------------------------------------------------------------


def make_pool(config: GrapeConfig) -> EnvPool:
    """Envs for the config's tasks (fast-rendered images when the policy sees pixels)."""
    m = config.model
    pixels = PixelSettings(m.camera, m.image_size, m.fast_render) if "image" in m.obs_mode else None
    return EnvPool(config.max_episode_steps, config.task_costs(), pixels)


def build_policy(config: GrapeConfig) -> VLAPolicy:
    """The untrained VLA of ``config.model`` (a tiny random LM, or a local checkpoint)."""
    from robopref.envs import instruction

    m = config.model
    common = dict(
        obs_mode=m.obs_mode,
        n_state_tokens=m.n_state_tokens,
        image_size=m.image_size,
        image_grid=m.image_grid,
        prompt_template=m.prompt_template,
        seed=config.seed,
    )
    if m.path is not None:
        return load_pretrained_vla(m.path, dtype=m.dtype, **common)
    instructions = [instruction(t) for t in config.tasks + config.held_out_tasks]
    return build_tiny_vla(
        instructions,
        arch=m.arch,
        hidden_size=m.hidden_size,
        n_layers=m.n_layers,
        n_heads=m.n_heads,
        intermediate_size=m.intermediate_size,
        **common,
    )


def evaluate_splits_of(
    config: GrapeConfig, policy: VLAPolicy, pool: EnvPool, label: str | None = None
) -> dict[str, Any]:
    """The config's evaluation protocol on its in-domain and held-out tasks."""
    return evaluate_splits(
        policy, pool, config.tasks, config.held_out_tasks, config.eval_protocol(),
        label=label, enabled=config.progress,
    )  # fmt: skip


def _choose_gl_backend(config: GrapeConfig, device: Any) -> None:
    if "image" not in config.model.obs_mode or "MUJOCO_GL" in os.environ:
        return
    backend = "egl" if device.type == "cuda" else "osmesa"
    if "mujoco" in sys.modules:  # the GL backend is chosen when mujoco is first imported
        raise ConfigError(
            f"model.obs_mode: {config.model.obs_mode!r} renders frames; set "
            f"MUJOCO_GL={backend} in the environment before starting"
        )
    os.environ["MUJOCO_GL"] = backend


def _seed(config: GrapeConfig, kind: int, *parts: int) -> int:
    """Disjoint episode-seed ranges per use (1: demos, 2: rollouts, 3: sampling, 4: updates);
    evaluation uses ``eval.seed + i``."""
    return int(np.random.SeedSequence([config.seed, kind, *parts]).generate_state(1)[0] % 2**31)


def _say(config: GrapeConfig, text: str) -> None:
    if config.progress and not is_quiet():
        print(text, file=sys.stderr, flush=True)


def _writer(config: GrapeConfig, out_dir: Path) -> Any:
    if not config.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tb"))
