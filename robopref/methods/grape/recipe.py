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
from functools import partial
from pathlib import Path
from typing import Any

from robopref.config import ConfigError
from robopref.methods.common import RunResult, Stage, start_run
from robopref.methods.grape.config import GrapeConfig
from robopref.methods.grape.results import eval_line, log_eval, run_result
from robopref.methods.grape.rounds import (
    LearnerPolicy,
    Round,
    RoundInputs,
    evaluate_splits_of,
    evaluated,
    improve_and_evaluate,
    read_info,
    say,
    seed_of,
)
from robopref.policies.vla import (
    EnvPool,
    PixelSettings,
    VLAPolicy,
    build_tiny_vla,
    check_tokenizer,
    load_policy,
    load_pretrained_vla,
    save_adapters,
    save_policy,
    scripted_demos,
    sft_train,
)
from robopref.utils import atomic_path, resolve_device


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
        say(config, eval_line("sft", sft_info["eval"]))
        demos = _Demos(config, pool)
        learners: dict[str, list[dict]] = {}
        tpo_stages: dict[int, Stage] = {}  # task-cost TPO's rounds, matched by more_sft
        for learner, variant in config.learners():
            current = LearnerPolicy(config, sft.path, device)
            rounds, previous = [], sft
            for r in range(config.tpo.rounds):
                rnd = Round(learner, variant, r)
                after = [previous]
                inputs = RoundInputs(demos)
                if learner == "more_sft":
                    after.append(tpo_stages[r])
                    inputs.matched_steps = learners["tpo/task"][r]["update_steps"]
                stage = round_stage(config, ckpt, rnd, after=after)
                _, info = stage.run(
                    make=partial(improve_and_evaluate, config, current, pool, rnd, writer, inputs),
                    save=partial(_save_checkpoint, save_adapters),
                    load=current.resume_from,
                )
                if info["eval"] is not None:
                    log_eval(writer, f"{learner}/{variant}", info["eval"], r + 1)
                    say(config, eval_line(rnd.label, info["eval"]))
                rounds.append(info)
                previous = stage
                if (learner, variant) == ("tpo", "task"):
                    tpo_stages[r] = stage
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


def round_stage(config: GrapeConfig, ckpt: Path, rnd: Round, after: list[Stage]) -> Stage:
    """``checkpoints/VARIANT/round_RR.pt`` (TPO; ``LEARNER-VARIANT/`` for a baseline): the
    round's adapters, with ``round_RR.json`` (rollouts, update history, evaluation)."""
    folder = rnd.variant if rnd.learner == "tpo" else f"{rnd.learner}-{rnd.variant}"
    key = {
        "learner": [rnd.learner, rnd.variant],
        "lora": config.lora,
        "tpo": config.tpo.model_dump(mode="json", exclude={"rounds"}),
        "cost": config.cost_variants()[rnd.variant],
        "evaluated": evaluated(config, rnd.index),
    }
    if rnd.learner == "rejection_sampling":
        key["rejection_sampling"] = config.rejection_sampling
    if rnd.learner == "more_sft":
        key["more_sft"] = config.more_sft
    path = ckpt / folder / f"round_{rnd.index:02d}.pt"
    return Stage(rnd.label, path, key=key, after=after, resume=config.resume)


def _save_checkpoint(save_model: Any, made: tuple[VLAPolicy, dict], path: Path) -> None:
    """A stage's ``save``: the model file at the stage's path, its info as JSON beside it."""
    policy, info = made
    save_model(policy, path)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=float))


# ---- SFT ------------------------------------------------------------------------------------


class _Demos:
    """The SFT demonstrations, made on first use (a resumed run that needs none makes none)."""

    def __init__(self, config: GrapeConfig, pool: EnvPool):
        self.config, self.pool, self.demos = config, pool, None

    def __call__(self) -> list:
        if self.demos is None:
            s = self.config.sft
            self.demos = scripted_demos(
                self.pool,
                self.config.tasks,
                s.demos_per_task,
                s.action_noise,
                s.successful_only,
                lambda ti, i: seed_of(self.config, 1, ti, i),
                label="demos" if self.config.progress else None,
            )
        return self.demos


def train_sft(config: GrapeConfig, pool: EnvPool, device: Any, writer: Any) -> tuple:
    """The SFT policy on scripted demonstrations, and its evaluation: ``(policy, info)``."""
    policy = build_policy(config).to(device)
    s = config.sft
    t0 = time.perf_counter()
    demos = _Demos(config, pool)()
    t1 = time.perf_counter()
    history = sft_train(
        policy, demos, **s.train_options(), seed=config.seed, writer=writer,
        progress=config.progress, label="sft",
    )  # fmt: skip
    t2 = time.perf_counter()
    info = {
        "demos": len(demos),
        "demo_steps": int(sum(len(d) for d in demos)),
        "history": history,
        "eval": evaluate_splits_of(config, policy, pool, "eval[sft]"),
    }
    info["seconds"] = {"demos": t1 - t0, "update": t2 - t1, "eval": time.perf_counter() - t2}
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
    say(config, f"reusing {path}")
    return read_info(path)


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


def _writer(config: GrapeConfig, out_dir: Path) -> Any:
    if not config.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tb"))
