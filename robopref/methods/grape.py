"""Recipe ``grape``: GRAPE (Zhang et al. 2024) on Meta-World with a tokenised-action (VLA) policy.

1. SFT: behaviour cloning of a VLA (:mod:`robopref.policies.vla`) on noisy scripted demonstrations
   of the in-domain tasks, each with its language instruction.
2. Per round (and per cost variant): roll out the current policy (sampling), score each trajectory
   with the guided cost (success, per-task keypoint stages read from the simulator state, the
   policy's own log-likelihood, episode length, robot contacts with non-target geoms, action
   magnitude), rank, build chosen/rejected pairs (or ranked lists) per task, and run TPO (a loss of
   :mod:`robopref.losses` on trajectory-level summed action-token log-ratios) on LoRA adapters
   against the frozen SFT policy.
3. Evaluate the SFT policy and the policy after every round on the in-domain and held-out tasks:
   success rate, episode length (episodes end at success) and collisions.

``robopref run configs/grape/tiny.yaml`` runs on a CPU in minutes (state observations). Writes
``config.yaml``, ``results.json``, ``checkpoints/`` (resumable, atomic) and ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from robopref.config import StrictModel
from robopref.data import Trajectory
from robopref.losses import get_loss
from robopref.methods.common import cache_is_valid, forget_cache, mark_cache, start_run
from robopref.policies.vla import (
    DEFAULT_TEMPLATE,
    KEYPOINTS,
    Stage,
    VLAPolicy,
    apply_lora,
    batch_token_logprobs,
    build_lists,
    build_pairs,
    build_tiny_vla,
    external_reward,
    guided_scores,
    keypoints_from_states,
    load_adapters,
    load_policy,
    load_pretrained_vla,
    save_adapters,
    save_policy,
    sft_train,
    stage_costs,
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
    """Per-task cost declarations: sequential stages and the bodies the robot may touch."""

    stages: list[StageConfig] = Field(default_factory=list)
    target_bodies: list[str] = Field(default_factory=list)  # MuJoCo body names (with children)


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

    def weights(self) -> dict[str, float]:
        return self.model_dump(exclude={"stage_scale"})


class TPOSettings(StrictModel):
    rounds: int = Field(3, ge=0)
    rollouts_per_task: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0)
    pairs: Literal["best_worst", "all", "lists"] = "all"
    margin: float = Field(0.0, ge=0)  # minimum score gap of a pair
    max_list_size: int | None = None
    loss: str = "dpo"
    loss_options: dict[str, Any] = Field(default_factory=dict)
    beta: float = Field(0.1, gt=0)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0

    @model_validator(mode="after")
    def _loss(self) -> TPOSettings:
        get_loss(self.loss, **self.loss_options)
        return self


class EvalSettings(StrictModel):
    episodes_per_task: int = Field(10, ge=1)
    seed: int = 10_000  # episode i of every task is reset with seed + i, for every policy
    greedy: bool = True
    temperature: float = Field(1.0, gt=0)


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
    eval: EvalSettings = Field(default_factory=EvalSettings)
    seed: int = 0
    device: str = "auto"
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
        uses_stages = self.cost.stages != 0 or any(v.stages != 0 for v in self.variants.values())
        missing = [
            t for t in self.tasks if uses_stages and not self.task_specs.get(t, TaskSpec()).stages
        ]
        if missing:
            raise ValueError(
                f"task_specs: the stage cost has a non-zero weight but tasks {missing} declare no stages"
            )
        if "task" in self.variants:
            raise ValueError("variants: 'task' is the name of the main cost (field 'cost')")
        return self


Config = GrapeConfig


# ----------------------------------------------------------------------------------------------
# Environments, contacts and rollouts
# ----------------------------------------------------------------------------------------------


class CollisionCounter:
    """Counts the contacts between the robot (the bodies under ``right_l0``: arm and gripper) and
    any geom whose body is neither the robot's nor a target body (``target_bodies`` and their
    children) in a MuJoCo ``data``."""

    def __init__(self, model: Any, target_bodies: list[str], task: str = ""):
        import mujoco

        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(model.nbody)]
        parent = np.asarray(model.body_parentid)

        def subtree(root: int) -> np.ndarray:
            inside = np.zeros(model.nbody, dtype=bool)
            for b in range(model.nbody):
                x = b
                while True:
                    if x == root:
                        inside[b] = True
                        break
                    if x == 0:
                        break
                    x = parent[x]
            return inside

        if "right_l0" not in names:
            raise ValueError(f"{task}: no body 'right_l0' (the Sawyer arm) in the MuJoCo model")
        self.robot = subtree(names.index("right_l0"))
        self.target = np.zeros(model.nbody, dtype=bool)
        for name in target_bodies:
            if name not in names:
                known = sorted(n for n in names[1:] if n)
                raise ValueError(
                    f"task_specs.{task}.target_bodies: unknown body {name!r}; bodies: {known}"
                )
            self.target |= subtree(names.index(name))
        self.geom_body = np.asarray(model.geom_bodyid)

    def __call__(self, data: Any) -> int:
        if data.ncon == 0:
            return 0
        bodies = self.geom_body[np.asarray(data.contact.geom[: data.ncon])]  # [ncon, 2]
        robot = self.robot[bodies]
        one_robot = robot[:, 0] != robot[:, 1]
        other = np.where(robot[:, 0], bodies[:, 1], bodies[:, 0])
        return int((one_robot & ~self.target[other]).sum())


class EnvPool:
    """Reusable Meta-World envs per task (construction costs ~0.2 s; episodes are reset by seed)."""

    def __init__(self, config: GrapeConfig):
        self.config = config
        self.envs: dict[str, list] = {}
        self.counters: dict[str, CollisionCounter] = {}

    def get(self, task: str, n: int) -> list:
        from robopref.envs import make_env

        m = self.config.model
        pixels = "image" in m.obs_mode
        envs = self.envs.setdefault(task, [])
        while len(envs) < n:
            envs.append(
                make_env(
                    task,
                    seed=0,
                    max_episode_steps=self.config.max_episode_steps,
                    terminate_on_success=True,
                    render_mode="rgb_array" if pixels else None,
                    camera=m.camera if pixels else None,
                    width=m.image_size,
                    height=m.image_size,
                )
            )
        if task not in self.counters:
            spec = self.config.task_specs.get(task, TaskSpec())
            self.counters[task] = CollisionCounter(
                envs[0].unwrapped.model, spec.target_bodies, task
            )
        return envs[:n]

    def close(self) -> None:
        for envs in self.envs.values():
            for env in envs:
                env.close()


def rollout(
    policy: VLAPolicy,
    pool: EnvPool,
    task: str,
    seeds: list[int],
    greedy: bool,
    temperature: float = 1.0,
    generator: Any = None,
) -> list[Trajectory]:
    """Roll out ``policy`` in ``len(seeds)`` episodes of ``task`` in lockstep (one batched policy
    call per step). Episodes end at success or at the step limit.

    Returns trajectories whose ``actions`` are the executed actions (bin centres, so they
    re-tokenise exactly), observations ``[T, 39]`` (or ``{"state", "image"}``), and metadata
    ``seed``, ``collisions`` (total contacts with non-target geoms), ``stage_costs`` (metres),
    ``stages_done`` and ``final_state`` (the state after the last action).
    """
    from robopref.envs import instruction

    config = pool.config
    spec = config.task_specs.get(task, TaskSpec())
    stages = [Stage(s.name, s.a, s.b, s.threshold) for s in spec.stages]
    pixels = "image" in policy.obs_mode
    envs = pool.get(task, len(seeds))
    counter = pool.counters[task]
    text = instruction(task)
    n = len(seeds)
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]
    rec = [
        {"states": [], "images": [], "actions": [], "rewards": [], "successes": [], "collisions": 0}
        for _ in range(n)
    ]
    frames = [env.render() for env in envs] if pixels else None
    active = list(range(n))
    while active:
        batch: dict[str, np.ndarray] = {
            "state": np.stack([obs[i] for i in active]).astype(np.float32)
        }
        if pixels:
            batch["image"] = np.stack([frames[i] for i in active])
        actions = policy.act(batch, [text] * len(active), greedy, temperature, generator)
        still = []
        for a, i in zip(actions, active, strict=True):
            r = rec[i]
            r["states"].append(obs[i].astype(np.float32))
            if pixels:
                r["images"].append(frames[i])
            obs[i], reward, terminated, truncated, info = envs[i].step(a)
            r["actions"].append(a)
            r["rewards"].append(reward)
            r["successes"].append(info["success"])
            r["collisions"] += counter(envs[i].unwrapped.data)
            if pixels:
                frames[i] = envs[i].render()
            if terminated or truncated:
                r["final"] = obs[i].astype(np.float32)
            else:
                still.append(i)
        active = still
    out = []
    for i, r in enumerate(rec):
        states = np.asarray(r["states"])
        trajectory_states = np.concatenate([states, r["final"][None]])
        costs, done = stage_costs(keypoints_from_states(trajectory_states), stages)
        observations = (
            {"state": states, "image": np.asarray(r["images"], dtype=np.uint8)}
            if pixels
            else states
        )
        out.append(
            Trajectory(
                observations=observations,
                actions=np.asarray(r["actions"], dtype=np.float32),
                rewards=np.asarray(r["rewards"]),
                successes=np.asarray(r["successes"]),
                task=task,
                instruction=text,
                metadata={
                    "seed": int(seeds[i]),
                    "collisions": int(r["collisions"]),
                    "stage_costs": costs.tolist(),
                    "stages_done": done.tolist(),
                    "final_state": r["final"].tolist(),
                },
            )
        )
    return out


def collect_demos(config: GrapeConfig, pool: EnvPool) -> list[Trajectory]:
    """Noisy scripted demonstrations of the in-domain tasks (successful ones when asked)."""
    from robopref.envs import instruction, run_episode, scripted_policy

    demos = []
    for ti, task in enumerate(config.tasks):
        env = pool.get(task, 1)[0]
        expert = scripted_policy(task)
        pixels = "image" in config.model.obs_mode
        kept, i = 0, 0
        while kept < config.sft.demos_per_task and i < 5 * config.sft.demos_per_task:
            seed = _seed(config, 1, ti, i)
            i += 1
            if pixels:
                traj = _scripted_with_frames(env, expert, seed, config.sft.action_noise)
            else:
                ep = run_episode(env, expert, seed=seed, noise=config.sft.action_noise)
                traj = Trajectory(ep.observations, ep.actions, ep.rewards, ep.successes, ep.dones)
            if config.sft.successful_only and not traj.success:
                continue
            traj.task, traj.instruction = task, instruction(task)
            traj.metadata = {"seed": seed, "mode": "scripted"}
            demos.append(traj)
            kept += 1
        if kept == 0:
            raise RuntimeError(
                f"sft: no successful scripted demonstration of {task} in {i} tries within "
                f"max_episode_steps={config.max_episode_steps}; raise max_episode_steps, lower "
                "sft.action_noise or set sft.successful_only=false"
            )
    return demos


def _scripted_with_frames(env: Any, expert: Any, seed: int, noise: float) -> Trajectory:
    rng = np.random.default_rng([seed, 1])
    obs, _ = env.reset(seed=seed)
    states, images, actions, rewards, successes = [], [], [], [], []
    done = False
    while not done:
        images.append(env.render())
        a = np.clip(expert(obs) + noise * rng.standard_normal(4), -1, 1).astype(np.float32)
        states.append(obs.astype(np.float32))
        obs, reward, terminated, truncated, info = env.step(a)
        actions.append(a)
        rewards.append(reward)
        successes.append(info["success"])
        done = terminated or truncated
    return Trajectory(
        {"state": np.asarray(states), "image": np.asarray(images, dtype=np.uint8)},
        np.asarray(actions),
        np.asarray(rewards),
        np.asarray(successes),
    )


def _seed(config: GrapeConfig, kind: int, *parts: int) -> int:
    """Disjoint episode-seed ranges per use (1: demos, 2: TPO rollouts); eval uses eval.seed + i."""
    return int(np.random.SeedSequence([config.seed, kind, *parts]).generate_state(1)[0] % 2**31)


# ----------------------------------------------------------------------------------------------
# Scoring and evaluation
# ----------------------------------------------------------------------------------------------


def score_components(
    policy: VLAPolicy, trajectories: list[Trajectory], max_steps: int, stage_scale: float
) -> dict[str, np.ndarray]:
    """The guided-score terms ``[N]`` of each trajectory (see :func:`guided_scores`)."""
    import torch

    logp = []
    with torch.no_grad():
        for s in range(0, len(trajectories), 16):
            chunk = trajectories[s : s + 16]
            lp, _ = batch_token_logprobs(policy, chunk)
            logp += [float(lp[i].sum()) / len(t) for i, t in enumerate(chunk)]
    lengths = np.array([len(t) for t in trajectories], dtype=np.float64)
    return {
        "success": np.array([float(t.success) for t in trajectories]),
        "stages": np.array(
            [
                external_reward(np.asarray(t.metadata["stage_costs"]), stage_scale)
                for t in trajectories
            ]
        ),
        "logp": np.array(logp),
        "length": lengths / max_steps,
        "collisions": np.array([t.metadata["collisions"] for t in trajectories]) / lengths,
        "action": np.array([float(np.mean(np.square(t.actions))) for t in trajectories]),
    }


def _summary(trajectories: list[Trajectory]) -> dict[str, float]:
    return {
        "success_rate": float(np.mean([t.success for t in trajectories])),
        "mean_length": float(np.mean([len(t) for t in trajectories])),
        "mean_collisions": float(np.mean([t.metadata["collisions"] for t in trajectories])),
        "stages_done": float(
            np.mean([np.mean(t.metadata["stages_done"] or [0]) for t in trajectories])
        ),
    }


def evaluate(policy: VLAPolicy, pool: EnvPool, tasks: list[str]) -> dict[str, Any]:
    """Per-task and mean success rate, episode length (steps; episodes end at success) and
    collisions (contacts per episode) over ``eval.episodes_per_task`` fixed configurations."""
    import torch

    ev = pool.config.eval
    per_task = {}
    generator = torch.Generator().manual_seed(ev.seed)
    for task in tasks:
        seeds = [ev.seed + i for i in range(ev.episodes_per_task)]
        per_task[task] = _summary(
            rollout(policy, pool, task, seeds, ev.greedy, ev.temperature, generator)
        )
    keys = ("success_rate", "mean_length", "mean_collisions")
    mean = {k: float(np.mean([m[k] for m in per_task.values()])) for k in keys} if tasks else {}
    if tasks:  # binomial standard error of the mean success rate over all episodes
        p, n = mean["success_rate"], ev.episodes_per_task * len(tasks)
        mean["success_se"] = float(np.sqrt(p * (1 - p) / n))
    return {"mean": mean, "per_task": per_task}


def evaluate_all(policy: VLAPolicy, pool: EnvPool) -> dict[str, Any]:
    c = pool.config
    return {
        "in_domain": evaluate(policy, pool, c.tasks),
        "held_out": evaluate(policy, pool, c.held_out_tasks),
    }


# ----------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------


def _build_policy(config: GrapeConfig) -> VLAPolicy:
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


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=float))


def _relative(after: float, before: float) -> float | None:
    return None if before == 0 else 100.0 * (after - before) / abs(before)


def _tpo_round(
    config: GrapeConfig,
    policy: VLAPolicy,
    pool: EnvPool,
    cost: CostWeights,
    vi: int,
    r: int,
    writer: Any,
) -> dict[str, Any]:
    """One GRAPE round: rollouts -> guided scores -> pairs/lists -> TPO. Returns its statistics."""
    import torch

    tpo = config.tpo
    generator = torch.Generator().manual_seed(_seed(config, 3, vi, r))
    trajectories: list[Trajectory] = []
    for ti, task in enumerate(config.tasks):
        seeds = [_seed(config, 2, vi, r, ti, i) for i in range(tpo.rollouts_per_task)]
        trajectories += rollout(policy, pool, task, seeds, False, tpo.temperature, generator)
    components = score_components(policy, trajectories, config.max_episode_steps, cost.stage_scale)
    scores = guided_scores(components, cost.weights())
    task_of = [t.task for t in trajectories]
    if tpo.pairs == "lists":
        groups = [
            (idx.tolist(), lab.tolist())
            for idx, lab in build_lists(scores, task_of, tpo.max_list_size)
        ]
    else:
        pairs = build_pairs(scores, task_of, tpo.pairs, tpo.margin)
        groups = [((w, lo), (1.0, 0.0)) for w, lo in pairs]
    history = tpo_train(
        policy,
        trajectories,
        groups,
        loss=tpo.loss,
        loss_options=tpo.loss_options,
        beta=tpo.beta,
        epochs=tpo.epochs,
        batch_size=tpo.batch_size,
        lr=tpo.lr,
        weight_decay=tpo.weight_decay,
        max_grad_norm=tpo.max_grad_norm,
        seed=_seed(config, 4, vi, r),
        writer=writer,
        step_offset=r * 100_000,
        log_prefix=f"tpo/variant{vi}",
        progress=config.progress,
    )
    return {
        "rollouts": {**_summary(trajectories), "mean_score": float(np.mean(scores))},
        "preference_items": len(groups),
        "tpo": history[-1] if history else None,
        "tpo_history": history,
    }


# the config sections that make the SFT checkpoint and its evaluation
_SFT_SECTIONS = {"tasks", "held_out_tasks", "task_specs", "max_episode_steps", "model", "sft"}
_SFT_SECTIONS |= {"eval", "seed"}


def run(config: GrapeConfig, out_dir: Path) -> dict:
    """SFT, then ``tpo.rounds`` GRAPE rounds per cost variant, with evaluations; writes
    ``results.json`` into ``out_dir`` and returns it (as a dict)."""

    out_dir, _ = start_run(config, out_dir)
    device = resolve_device(config.device)
    if "image" in config.model.obs_mode:
        os.environ.setdefault("MUJOCO_GL", "egl" if device.type == "cuda" else "osmesa")
    ckpt = out_dir / "checkpoints"
    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))
    from rich.console import Console

    console = Console(quiet=not config.progress)
    pool = EnvPool(config)
    start = time.perf_counter()
    try:
        # ---- SFT -------------------------------------------------------------------------
        sft_path, sft_json = ckpt / "sft.pt", ckpt / "sft.json"
        # checkpoints are reused only when the config sections that made them are unchanged
        # (their sidecar ``*.config.json``); once one stage is made again, all later ones are
        sft_key = config.model_dump(mode="json", include=_SFT_SECTIONS)
        fresh = not (
            config.resume
            and sft_path.exists()
            and cache_is_valid(sft_json, sft_key, "SFT checkpoint")
        )
        if not fresh:
            console.print(f"resuming: SFT policy from {sft_path}")
            sft_info = _read_json(sft_json)
        else:
            forget_cache(sft_json)
            policy = _build_policy(config).to(device)
            with console.status("collecting scripted demonstrations"):
                demos = collect_demos(config, pool)
            s = config.sft
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
                metrics = evaluate_all(policy, pool)
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

        # ---- GRAPE rounds per cost variant ----------------------------------------------
        variants = {"task": config.cost, **config.variants}
        variant_results = {}
        for vi, (name, cost) in enumerate(variants.items()):
            vdir = ckpt / name
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
            rounds = []
            resumed: Path | None = None  # adapters of the last completed round, loaded lazily
            round_key = {
                "sft": sft_key,
                "lora": L.model_dump(mode="json"),
                "tpo": config.tpo.model_dump(mode="json", exclude={"rounds"}),
                "variant": [vi, name, cost.model_dump(mode="json")],
            }
            stale = fresh
            for r in range(config.tpo.rounds):
                adapter, info_path = vdir / f"round_{r:02d}.pt", vdir / f"round_{r:02d}.json"
                stale = stale or not (
                    config.resume
                    and adapter.exists()
                    and cache_is_valid(info_path, round_key, f"{name} round {r} checkpoint")
                )
                if not stale:
                    info = _read_json(info_path)
                    resumed = adapter
                    console.print(f"resuming: {name} round {r} from {adapter}")
                else:
                    if resumed is not None:
                        load_adapters(policy, resumed)
                        resumed = None
                    with console.status(f"[{name}] round {r}: rollouts and TPO"):
                        info = _tpo_round(config, policy, pool, cost, vi, r, writer)
                    with console.status(f"[{name}] round {r}: evaluation"):
                        info["eval"] = evaluate_all(policy, pool)
                    forget_cache(info_path)
                    save_adapters(policy, adapter)
                    _write_json(info_path, info)
                    mark_cache(info_path, round_key)
                _log_eval(writer, name, info["eval"], r + 1)
                console.print(_eval_line(f"{name} round {r}", info["eval"]))
                rounds.append(info)
            variant_results[name] = {"cost": cost.model_dump(), "rounds": rounds}
    finally:
        pool.close()
        if writer is not None:
            writer.close()

    results = _results(config, device, sft_info, variant_results, time.perf_counter() - start)
    _write_json(out_dir / "results.json", results)
    _print_table(console, results)
    return results


def _eval_line(label: str, ev: dict[str, Any]) -> str:
    i, h = ev["in_domain"]["mean"], ev["held_out"]["mean"]
    held = f", held-out success {h['success_rate']:.2f}" if h else ""
    return (
        f"{label}: in-domain success {i['success_rate']:.2f} length {i['mean_length']:.1f} "
        f"collisions {i['mean_collisions']:.1f}{held}"
    )


def _log_eval(writer: Any, prefix: str, ev: dict[str, Any], step: int) -> None:
    if writer is None:
        return
    for split in ("in_domain", "held_out"):
        for key, value in ev[split]["mean"].items():
            writer.add_scalar(f"eval/{prefix}/{split}/{key}", value, step)


def _results(config, device, sft_info, variant_results, seconds) -> dict[str, Any]:
    rows = [{"policy": "SFT", "variant": "-", "round": -1, **_flat(sft_info["eval"])}]
    for name, v in variant_results.items():
        for r, info in enumerate(v["rounds"]):
            rows.append(
                {"policy": f"TPO r{r + 1}", "variant": name, "round": r, **_flat(info["eval"])}
            )
    sft = rows[0]
    changes = {}
    for name, v in variant_results.items():
        if not v["rounds"]:
            continue
        last = _flat(v["rounds"][-1]["eval"])
        changes[name] = {
            "in_domain_success_pp": 100 * (last["in_success"] - sft["in_success"]),
            "held_out_success_pp": (
                100 * (last["held_success"] - sft["held_success"])
                if config.held_out_tasks
                else None
            ),
            "in_domain_success_rel_pct": _relative(last["in_success"], sft["in_success"]),
            "held_out_success_rel_pct": (
                _relative(last["held_success"], sft["held_success"])
                if config.held_out_tasks
                else None
            ),
            "length_rel_pct": _relative(last["in_length"], sft["in_length"]),
            "collisions_rel_pct": _relative(last["in_collisions"], sft["in_collisions"]),
        }
    return {
        "method": "grape",
        "device": str(device),
        "tasks": config.tasks,
        "held_out_tasks": config.held_out_tasks,
        "obs_mode": config.model.obs_mode,
        "seconds": seconds,
        "sft": sft_info,
        "variants": variant_results,
        "table": rows,
        "change_vs_sft": changes,
    }


def _flat(ev: dict[str, Any]) -> dict[str, float]:
    i, h = ev["in_domain"]["mean"], ev["held_out"]["mean"]
    out = {
        "in_success": i["success_rate"],
        "in_length": i["mean_length"],
        "in_collisions": i["mean_collisions"],
    }
    if h:
        out.update(
            held_success=h["success_rate"],
            held_length=h["mean_length"],
            held_collisions=h["mean_collisions"],
        )
    return out


def _print_table(console: Any, results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="GRAPE: SFT vs TPO rounds (means over tasks)")
    cols = [k for k in results["table"][0] if k not in ("round",)]
    for c in cols:
        table.add_column(c, justify="right")
    for row in results["table"]:
        table.add_row(
            *(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols)
        )
    console.print(table)
