"""Recipe ``grape``: GRAPE (Zhang et al. 2024) on Meta-World with a tokenised-action (VLA) policy.

1. SFT: behaviour cloning of a VLA (:mod:`robopref.policies.vla`) on noisy scripted demonstrations
   of the in-domain tasks, each with its language instruction.
2. Rounds, per cost variant: roll out the current policy (sampling), score each rollout with the
   guided cost (:mod:`robopref.policies.vla.costs`), build chosen/rejected pairs (or ranked lists)
   per task, and update LoRA adapters against the frozen SFT policy with TPO (a loss of
   :mod:`robopref.losses` on trajectory-level action-token log-ratios, summed or per-token means,
   optionally anchored by the chosen rollouts' NLL). Baselines on the same rollout budget and
   seeds: rejection-sampling fine-tuning (behaviour cloning of the successful / best rollouts)
   and step-level DPO.
3. Evaluation (:mod:`robopref.policies.vla.evaluate`) of the SFT policy and of every round on the
   in-domain and held-out tasks: success rate, steps per episode, contacts per episode.

``robopref run configs/grape/tiny.yaml`` runs on a CPU in minutes (state observations). Writes
``config.yaml``, ``results.json`` (``rows``: one record per policy, variant, round and split),
``checkpoints/`` (resumable, atomic) and ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from robopref.config import ConfigError, Device, Seed, StrictModel
from robopref.data import Trajectory
from robopref.losses import get_loss
from robopref.methods.common import cache_is_valid, forget_cache, mark_cache, start_run
from robopref.policies.vla import (
    DEFAULT_TEMPLATE,
    KEYPOINTS,
    SCORE_TERMS,
    EnvPool,
    EvalProtocol,
    PixelSettings,
    Stage,
    TaskCosts,
    VLAPolicy,
    apply_lora,
    build_lists,
    build_pairs,
    build_tiny_vla,
    check_task_costs,
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
    summarize,
    tpo_train,
)
from robopref.utils import atomic_path, resolve_device

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


class StageConfig(StrictModel):
    """A stage: keypoints ``a`` and ``b`` (hand, obj1, obj2, goal) closer than ``threshold`` m."""

    name: str
    a: str
    b: str
    threshold: float = Field(gt=0)

    @model_validator(mode="after")
    def _known(self) -> StageConfig:
        for key in (self.a, self.b):
            if key not in KEYPOINTS:
                raise ValueError(
                    f"stage '{self.name}': keypoint {key!r} not in {sorted(KEYPOINTS)}"
                )
        return self


class TaskSpec(StrictModel):
    """Per-task cost declarations: sequential stages and the bodies the robot may touch
    (``None`` = not declared; ``[]`` = nothing may be touched)."""

    stages: list[StageConfig] = Field(default_factory=list)
    target_bodies: list[str] | None = None  # MuJoCo body names (with children)

    def costs(self) -> TaskCosts:
        stages = tuple(Stage(s.name, s.a, s.b, s.threshold) for s in self.stages)
        bodies = None if self.target_bodies is None else tuple(self.target_bodies)
        return TaskCosts(stages, bodies)


class ModelSettings(StrictModel):
    path: str | None = None  # local Hugging Face causal LM folder; None = a tiny random LM
    dtype: str = "auto"
    arch: Literal["llama", "gpt2"] = "llama"
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    intermediate_size: int | None = None
    obs_mode: Literal["state", "image", "image+state"] = "state"
    n_state_tokens: int = 2
    image_size: int = 32  # pixels (square renders)
    image_grid: int = 2  # image embeddings = image_grid ** 2
    camera: str = "corner"
    fast_render: bool = True  # no shadows/reflections/multisampling (robopref.envs.render)
    prompt_template: str = DEFAULT_TEMPLATE


class SFTSettings(StrictModel):
    demos_per_task: int = Field(20, ge=1)
    action_noise: float = Field(0.1, ge=0)  # std of Gaussian noise on the scripted actions
    successful_only: bool = True
    epochs: int = Field(20, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = 0.0


class LoraSettings(StrictModel):
    rank: int = Field(8, ge=1)
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None  # default: the LM's attention projections
    train_obs_encoder: bool = False
    train_action_head: bool = False


class CostWeights(StrictModel):
    """Weights of the guided score (see :func:`robopref.policies.vla.guided_scores`)."""

    success: float = 1.0
    stages: float = 1.0
    stage_scale: float = Field(0.1, gt=0)  # metres: R_ext = exp(-sum stage costs / scale)
    logp: float = 0.05  # per-step log-likelihood of the trajectory under the current policy
    length: float = 0.0  # efficiency: episode length / max_episode_steps
    collisions: float = 0.0  # safety: robot contacts with non-target geoms per step
    action: float = 0.0  # safety: mean squared action

    @model_validator(mode="before")
    @classmethod
    def _terms(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - {*SCORE_TERMS, "stage_scale"})
            if unknown:
                raise ValueError(
                    f"unknown cost term {unknown[0]!r}, expected one of {[*SCORE_TERMS, 'stage_scale']}"
                )
        return data

    def weights(self) -> dict[str, float]:
        return self.model_dump(exclude={"stage_scale"})


class TPOSettings(StrictModel):
    rounds: int = Field(3, ge=0)
    rollouts_per_task: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0)  # sampling temperature of the rollouts
    pairs: Literal["best_worst", "all", "lists"] = "all"
    margin: float = Field(0.0, ge=0)  # minimum score gap of a pair
    max_list_size: int | None = None
    loss: str = "dpo"  # "plackett_luce" / "lipo_lambda" with pairs: lists
    loss_options: dict[str, Any] = Field(default_factory=dict)
    beta: float = Field(0.1, gt=0)
    normalize: bool = False  # score = beta * mean per-token log-ratio instead of the sum
    sft_weight: float = Field(0.0, ge=0)  # + sft_weight * chosen NLL per token (SFT anchor)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0

    @model_validator(mode="after")
    def _loss(self) -> TPOSettings:
        get_loss(self.loss, **self.loss_options)
        return self


class RejectionSamplingSettings(StrictModel):
    """Rejection-sampling fine-tuning: BC (on the LoRA adapters) of selected rollouts per round."""

    select: Literal["success", "best"] = "success"  # successful ones (else the top_k), or top_k
    top_k: int = Field(1, ge=1)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-4, gt=0)


class EvalSettings(StrictModel):
    episodes_per_task: int = Field(10, ge=1)
    seed: Seed = 10_000  # episode i of every task is reset with seed + i, for every policy
    decoding: Literal["greedy", "sampled"] = "greedy"
    temperature: float | None = Field(None, gt=0)  # sampled: default = tpo.temperature
    every_round: bool = True  # False: evaluate the SFT policy and the last round only


class GrapeConfig(StrictModel):
    method: Literal["grape"] = "grape"
    tasks: list[str]  # in-domain: SFT demos and TPO rollouts
    held_out_tasks: list[str] = Field(default_factory=list)  # evaluation only
    task_specs: dict[str, TaskSpec] = Field(default_factory=dict)
    max_episode_steps: int = Field(100, ge=1)
    model: ModelSettings = Field(default_factory=ModelSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    cost: CostWeights = Field(default_factory=CostWeights)  # the main variant, "task"
    variants: dict[str, CostWeights] = Field(default_factory=dict)  # e.g. efficiency, safety
    tpo: TPOSettings = Field(default_factory=TPOSettings)
    baselines: list[Literal["rejection_sampling", "step_dpo"]] = Field(default_factory=list)
    rejection_sampling: RejectionSamplingSettings = Field(default_factory=RejectionSamplingSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    seed: Seed = 0
    device: Device = "auto"
    num_threads: int | None = None
    tensorboard: bool = True
    progress: bool = True
    resume: bool = True  # continue from the checkpoints in out_dir

    @model_validator(mode="after")
    def _check(self) -> GrapeConfig:
        from robopref.envs import check_task

        if not self.tasks:
            raise ValueError("tasks: expected at least one in-domain task")
        for field, names in (("tasks", self.tasks), ("held_out_tasks", self.held_out_tasks)):
            for t in names:
                check_task(t, field)
        for t in self.task_specs:
            check_task(t, "task_specs")
        if "task" in self.variants:
            raise ValueError("variants: 'task' is the name of the main cost (field 'cost')")
        specs = self.task_costs()
        for name, cost in self.cost_variants().items():
            where = "cost" if name == "task" else f"variants.{name}"
            check_task_costs(self.tasks, specs, cost.weights(), where)
        return self

    def task_costs(self) -> dict[str, TaskCosts]:
        return {t: s.costs() for t, s in self.task_specs.items()}

    def cost_variants(self) -> dict[str, CostWeights]:
        return {"task": self.cost, **self.variants}

    def eval_protocol(self) -> EvalProtocol:
        e = self.eval
        return EvalProtocol(
            episodes_per_task=e.episodes_per_task,
            seed=e.seed,
            greedy=e.decoding == "greedy",
            temperature=e.temperature or self.tpo.temperature,
        )


Config = GrapeConfig


# ----------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------


def run(config: GrapeConfig, out_dir: Path) -> dict:
    """SFT, then ``tpo.rounds`` rounds per cost variant (TPO) and per baseline (task cost), each
    followed by an evaluation; writes ``results.json`` into ``out_dir`` and returns it."""
    out_dir, _ = start_run(config, out_dir)
    device = resolve_device(config.device)
    if "image" in config.model.obs_mode and "MUJOCO_GL" not in os.environ:
        backend = "egl" if device.type == "cuda" else "osmesa"
        if "mujoco" in sys.modules:  # the GL backend is chosen when mujoco is first imported
            raise ConfigError(
                f"model.obs_mode: {config.model.obs_mode!r} renders frames; set "
                f"MUJOCO_GL={backend} in the environment before starting"
            )
        os.environ["MUJOCO_GL"] = backend
    ckpt = out_dir / "checkpoints"
    writer = _writer(config, out_dir)
    from rich.console import Console

    console = Console(quiet=not config.progress)
    pool = make_pool(config)
    start = time.perf_counter()
    try:
        sft_path = ckpt / "sft.pt"
        # checkpoints are reused only when the config sections that made them are unchanged
        # (their sidecar ``*.config.json``); once one stage is made again, all later ones are
        sft_key = config.model_dump(mode="json", include=_SFT_SECTIONS)
        sft_info, fresh = _sft(config, pool, device, sft_path, sft_key, writer, console)
        learners = [("tpo", name) for name in config.cost_variants()]
        learners += [(b, "task") for b in config.baselines]
        trained = {}
        for learner, variant in learners:
            vdir = ckpt / (variant if learner == "tpo" else f"{learner}-{variant}")
            rounds = []
            policy = load_policy(sft_path, device)
            L = config.lora
            apply_lora(
                policy,
                L.rank,
                L.alpha,
                L.dropout,
                L.target_modules,
                L.train_obs_encoder,
                L.train_action_head,
            )
            resumed: Path | None = None  # adapters of the last completed round, loaded lazily
            round_key = {
                "sft": sft_key,
                "lora": L.model_dump(mode="json"),
                "tpo": config.tpo.model_dump(mode="json", exclude={"rounds"}),
                "rejection_sampling": config.rejection_sampling.model_dump(mode="json"),
                "learner": [learner, variant],
                "cost": config.cost_variants()[variant].model_dump(mode="json"),
            }
            stale = fresh
            for r in range(config.tpo.rounds):
                adapter, info_path = vdir / f"round_{r:02d}.pt", vdir / f"round_{r:02d}.json"
                label = f"{learner} [{variant}] round {r + 1}"
                stale = stale or not (
                    config.resume
                    and adapter.exists()
                    and cache_is_valid(info_path, round_key, f"{label} checkpoint")
                )
                if not stale:
                    info, resumed = _read_json(info_path), adapter
                    console.print(f"resuming: {label} from {adapter}")
                else:
                    if resumed is not None:
                        load_adapters(policy, resumed)
                        resumed = None
                    with console.status(f"{label}: rollouts and update"):
                        info = improve_round(config, policy, pool, learner, variant, r, writer)
                    info["eval"] = None
                    if config.eval.every_round or r == config.tpo.rounds - 1:
                        with console.status(f"{label}: evaluation"):
                            info["eval"] = evaluate_policy(config, policy, pool)
                    forget_cache(info_path)
                    save_adapters(policy, adapter)
                    _write_json(info_path, info)
                    mark_cache(info_path, round_key)
                if info["eval"] is not None:
                    _log_eval(writer, f"{learner}/{variant}", info["eval"], r + 1)
                    console.print(_eval_line(label, info["eval"]))
                rounds.append(info)
            trained[f"{learner}/{variant}"] = {
                "policy": learner,
                "variant": variant,
                "cost": config.cost_variants()[variant].model_dump(),
                "rounds": rounds,
            }
    finally:
        pool.close()
        if writer is not None:
            writer.close()

    results = _results(config, device, sft_info, trained, time.perf_counter() - start)
    _write_json(out_dir / "results.json", results)
    _print_table(console, results)
    return results


def improve_round(
    config: GrapeConfig,
    policy: VLAPolicy,
    pool: EnvPool,
    learner: str,
    variant: str,
    r: int,
    writer: Any = None,
) -> dict[str, Any]:
    """One round: rollouts -> guided scores -> the learner's update. The rollout seeds and the
    sampling stream depend only on ``(seed, variant, round)``, so every learner of a variant sees
    the same episode configurations (and, in round 1, the very same rollouts)."""
    import torch

    tpo, cost = config.tpo, config.cost_variants()[variant]
    vi = list(config.cost_variants()).index(variant)
    generator = torch.Generator().manual_seed(_seed(config, 3, vi, r))
    rollouts: list[Trajectory] = []
    for ti, task in enumerate(config.tasks):
        seeds = [_seed(config, 2, vi, r, ti, i) for i in range(tpo.rollouts_per_task)]
        rollouts += rollout(policy, pool, task, seeds, False, tpo.temperature, generator)
    components = score_components(policy, rollouts, config.max_episode_steps, cost.stage_scale)
    scores = guided_scores(components, cost.weights())
    task_of = [t.task for t in rollouts]
    seed = _seed(config, 4, vi, r)
    info: dict[str, Any] = {
        "rollouts": {**summarize(rollouts), "mean_score": float(scores.mean())},
        "rollouts_per_task": {
            task: summarize([t for t in rollouts if t.task == task]) for task in config.tasks
        },
    }

    if learner == "rejection_sampling":
        rs = config.rejection_sampling
        successes = np.array([t.success for t in rollouts])
        keep = select_rejection_sampling(scores, task_of, successes, rs.select, rs.top_k)
        history = sft_train(
            policy,
            [rollouts[i] for i in keep],
            epochs=rs.epochs,
            batch_size=rs.batch_size,
            lr=rs.lr,
            seed=seed,
            fit_normalization=False,
        )
        return {**info, "preference_items": len(keep), "update": history[-1], "history": history}

    if learner == "step_dpo" or tpo.pairs != "lists":
        mode = "all" if tpo.pairs == "lists" else tpo.pairs
        pairs = build_pairs(scores, task_of, mode, tpo.margin)
    if learner == "step_dpo":
        history = step_dpo_train(
            policy,
            rollouts,
            pairs,
            beta=tpo.beta,
            epochs=tpo.epochs,
            batch_size=tpo.batch_size,
            lr=tpo.lr,
            weight_decay=tpo.weight_decay,
            max_grad_norm=tpo.max_grad_norm,
            seed=seed,
        )
        n_items = len(pairs)
    else:
        if tpo.pairs == "lists":
            groups = [
                (i.tolist(), y.tolist()) for i, y in build_lists(scores, task_of, tpo.max_list_size)
            ]
        else:
            groups = [((w, lo), (1.0, 0.0)) for w, lo in pairs]
        history = tpo_train(
            policy,
            rollouts,
            groups,
            loss=tpo.loss,
            loss_options=tpo.loss_options,
            beta=tpo.beta,
            epochs=tpo.epochs,
            batch_size=tpo.batch_size,
            lr=tpo.lr,
            weight_decay=tpo.weight_decay,
            max_grad_norm=tpo.max_grad_norm,
            seed=seed,
            normalize=tpo.normalize,
            sft_weight=tpo.sft_weight,
            writer=writer,
            step_offset=r * 100_000,
            log_prefix=f"tpo/{variant}",
            progress=config.progress,
        )
        n_items = len(groups)
    return {
        **info,
        "preference_items": n_items,
        "update": history[-1] if history else None,
        "history": history,
    }


# ----------------------------------------------------------------------------------------------
# Pieces of the recipe
# ----------------------------------------------------------------------------------------------


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


def evaluate_policy(config: GrapeConfig, policy: VLAPolicy, pool: EnvPool) -> dict[str, Any]:
    return evaluate_splits(
        policy, pool, config.tasks, config.held_out_tasks, config.eval_protocol()
    )


# the config sections that make the SFT checkpoint and its evaluation
_SFT_SECTIONS = {"tasks", "held_out_tasks", "task_specs", "max_episode_steps", "model", "sft"}
_SFT_SECTIONS |= {"eval", "seed"}


def _sft(
    config, pool, device, sft_path: Path, sft_key: dict, writer, console
) -> tuple[dict[str, Any], bool]:
    """Train (or read back, when ``sft_key`` made it) the SFT policy and its evaluation.
    Returns ``(info, fresh)``, ``fresh`` True when the policy was trained now."""
    from robopref.envs import instruction

    sft_json = sft_path.with_suffix(".json")
    fresh = not (
        config.resume and sft_path.exists() and cache_is_valid(sft_json, sft_key, "SFT checkpoint")
    )
    if not fresh:
        console.print(f"resuming: SFT policy from {sft_path}")
        policy = load_policy(sft_path, device)
        names = [instruction(t) for t in config.tasks + config.held_out_tasks]
        try:
            check_tokenizer(policy, names, str(sft_path))
        except ValueError as e:  # a user error (wrong --out), reported in one line by the CLI
            raise ConfigError(str(e)) from None
        sft_info = _read_json(sft_json)
    else:
        forget_cache(sft_json)
        policy = build_policy(config).to(device)
        s = config.sft
        with console.status("collecting scripted demonstrations"):
            demos = scripted_demos(
                pool,
                config.tasks,
                s.demos_per_task,
                s.action_noise,
                s.successful_only,
                lambda ti, i: _seed(config, 1, ti, i),
            )
        history = sft_train(
            policy,
            demos,
            epochs=s.epochs,
            batch_size=s.batch_size,
            lr=s.lr,
            weight_decay=s.weight_decay,
            seed=config.seed,
            writer=writer,
            progress=config.progress,
        )
        with console.status("evaluating the SFT policy"):
            metrics = evaluate_policy(config, policy, pool)
        save_policy(policy, sft_path)
        sft_info = {
            "demos": len(demos),
            "demo_steps": int(sum(len(d) for d in demos)),
            "history": history,
            "eval": metrics,
        }
        _write_json(sft_json, sft_info)
        mark_cache(sft_json, sft_key)
    _log_eval(writer, "sft", sft_info["eval"], 0)
    console.print(_eval_line("SFT", sft_info["eval"]))
    return sft_info, fresh


def _seed(config: GrapeConfig, kind: int, *parts: int) -> int:
    """Disjoint episode-seed ranges per use (1: demos, 2: rollouts, 3: sampling, 4: updates);
    evaluation uses ``eval.seed + i``."""
    return int(np.random.SeedSequence([config.seed, kind, *parts]).generate_state(1)[0] % 2**31)


def _writer(config: GrapeConfig, out_dir: Path) -> Any:
    if not config.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tb"))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=float))


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _eval_line(label: str, ev: dict[str, Any]) -> str:
    i, h = ev["in_domain"]["mean"], ev["held_out"]["mean"]
    held = f", held-out success {h['success_rate']:.3f}" if h else ""
    return (
        f"{label}: in-domain success {i['success_rate']:.3f} ± {i['success_se']:.3f} "
        f"steps {i['mean_length']:.1f} contacts {i['mean_collisions']:.1f}{held}"
    )


def _log_eval(writer: Any, prefix: str, ev: dict[str, Any], step: int) -> None:
    if writer is None:
        return
    for split in ("in_domain", "held_out"):
        for key, value in ev[split]["mean"].items():
            writer.add_scalar(f"eval/{prefix}/{split}/{key}", value, step)


def result_rows(
    policy: str, variant: str, r: int, seed: int, ev: dict[str, Any]
) -> list[dict[str, Any]]:
    """Records of ``docs/results/grape.jsonl``: one per split with ``policy``, ``variant``,
    ``round``, ``seed``, ``split``, ``success``, ``success_se``, ``steps``, ``contacts``,
    ``episodes``."""
    rows = []
    for split, key in (("in-domain", "in_domain"), ("held-out", "held_out")):
        m = ev[key]["mean"]
        if not m:
            continue
        rows.append(
            {
                "policy": policy,
                "variant": variant,
                "round": r,
                "seed": seed,
                "split": split,
                "success": m["success_rate"],
                "success_se": m["success_se"],
                "steps": m["mean_length"],
                "contacts": m["mean_collisions"],
                "episodes": m.get("episodes"),
            }
        )
    return rows


def _results(config, device, sft_info, trained, seconds) -> dict[str, Any]:
    rows = result_rows("sft", "-", 0, config.seed, sft_info["eval"])
    table = [{"policy": "SFT", "variant": "-", "round": 0, **_flat(sft_info["eval"])}]
    changes = {}
    sft = table[0]
    for key, v in trained.items():
        for r, info in enumerate(v["rounds"]):
            if info["eval"] is None:
                continue
            rows += result_rows(v["policy"], v["variant"], r + 1, config.seed, info["eval"])
            table.append(
                {
                    "policy": v["policy"],
                    "variant": v["variant"],
                    "round": r + 1,
                    **_flat(info["eval"]),
                }
            )
        if v["rounds"]:
            last = _flat(v["rounds"][-1]["eval"])
            changes[key] = {
                "in_domain_success_pp": 100 * (last["in_success"] - sft["in_success"]),
                "held_out_success_pp": (
                    100 * (last["held_success"] - sft["held_success"])
                    if config.held_out_tasks
                    else None
                ),
                "steps_rel_pct": _relative(last["in_length"], sft["in_length"]),
                "contacts_rel_pct": _relative(last["in_collisions"], sft["in_collisions"]),
            }
    return {
        "method": "grape",
        "device": str(device),
        "tasks": config.tasks,
        "held_out_tasks": config.held_out_tasks,
        "obs_mode": config.model.obs_mode,
        "seconds": seconds,
        "sft": sft_info,
        "learners": trained,
        "rows": rows,
        "table": table,
        "change_vs_sft": changes,
    }


def _relative(after: float, before: float) -> float | None:
    return None if before == 0 else 100.0 * (after - before) / abs(before)


def _flat(ev: dict[str, Any]) -> dict[str, float]:
    i, h = ev["in_domain"]["mean"], ev["held_out"]["mean"]
    out = {
        "in_success": i["success_rate"],
        "in_se": i["success_se"],
        "in_length": i["mean_length"],
        "in_collisions": i["mean_collisions"],
    }
    if h:
        out.update(
            held_success=h["success_rate"], held_se=h["success_se"], held_length=h["mean_length"]
        )
    return out


def _print_table(console: Any, results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="GRAPE: SFT vs rounds (means over tasks)")
    cols = list(results["table"][0])
    for c in cols:
        table.add_column(c, justify="right")
    for row in results["table"]:
        table.add_row(
            *(
                f"{row.get(c):.3f}" if isinstance(row.get(c), float) else str(row.get(c))
                for c in cols
            )
        )
    console.print(table)


def collect_rows(run_dirs: list[str | Path], **extra: Any) -> list[dict[str, Any]]:
    """The ``rows`` of the ``results.json`` of several runs (e.g. one per seed), each with
    ``extra`` fields added: the lines of ``docs/results/grape.jsonl``."""
    rows = []
    for d in run_dirs:
        rows += [{**r, **extra} for r in _read_json(Path(d) / "results.json")["rows"]]
    return rows


def pooled(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Success pooled over rows (seeds): episode-weighted mean, its binomial standard error over
    all episodes, and the mean steps and contacts per episode."""
    n = np.array([r["episodes"] for r in rows], dtype=float)
    p = float(np.sum(n * [r["success"] for r in rows]) / n.sum())
    return {
        "success": p,
        "success_se": float(np.sqrt(p * (1 - p) / n.sum())),
        "steps": float(np.average([r["steps"] for r in rows], weights=n)),
        "contacts": float(np.average([r["contacts"] for r in rows], weights=n)),
        "episodes": int(n.sum()),
        "seeds": len(rows),
    }
