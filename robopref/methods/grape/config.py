"""The typed config of the ``grape`` recipe: tasks and their cost declarations, the VLA model,
SFT, LoRA, the guided cost (and its variants), the round learners and the evaluation protocol.

Cross-field rules (known tasks, every cost term declared by every in-domain task, the loss and
its options) are validators: a config that cannot run fails when it is read, before any work.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from robopref.config import Device, Seed, StrictModel
from robopref.losses import get_loss
from robopref.policies.vla import (
    DEFAULT_TEMPLATE,
    KEYPOINTS,
    SCORE_TERMS,
    EvalProtocol,
    TaskCosts,
    check_task_costs,
)
from robopref.policies.vla import Stage as CostStage

Learner = Literal["tpo", "rejection_sampling", "step_dpo", "more_sft"]


class StageConfig(StrictModel):
    """A stage: keypoints ``a`` and ``b`` (hand, obj1, obj2, goal) closer than ``threshold`` m."""

    name: str
    """Name of the stage (shown in errors)."""
    a: str
    """First keypoint: hand, obj1, obj2 or goal."""
    b: str
    """Second keypoint: hand, obj1, obj2 or goal."""
    threshold: float = Field(gt=0)
    """The stage is complete once the keypoints are closer than this (metres)."""

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
    """Sequential keypoint constraints (GRAPE's spatio-temporal costs)."""
    target_bodies: list[str] | None = None
    """MuJoCo body names (with their children) the robot may touch; contacts with anything else
    are collisions. None: not declared; []: nothing may be touched."""

    def costs(self) -> TaskCosts:
        stages = tuple(CostStage(s.name, s.a, s.b, s.threshold) for s in self.stages)
        bodies = None if self.target_bodies is None else tuple(self.target_bodies)
        return TaskCosts(stages, bodies)


class ModelConfig(StrictModel):
    """The VLA policy: a tiny random LM, or a local Hugging Face causal LM."""

    path: str | None = None
    """Local Hugging Face causal LM folder; None builds a tiny random LM."""
    dtype: str = "auto"
    """torch dtype for a local model ("auto", "float32", "bfloat16", ...)."""
    arch: Literal["llama", "gpt2"] = "llama"
    """Architecture of the tiny LM."""
    hidden_size: int = 64
    """Hidden size of the tiny LM."""
    n_layers: int = 2
    """Layers of the tiny LM."""
    n_heads: int = 2
    """Attention heads of the tiny LM."""
    intermediate_size: int | None = None
    """MLP width of the tiny LM (None: the architecture's default)."""
    obs_mode: Literal["state", "image", "image+state"] = "state"
    """What the policy sees: the 39-d state, rendered frames, or both."""
    n_state_tokens: int = 2
    """Embeddings the state is encoded into."""
    image_size: int = 32
    """Pixels of the square rendered frames."""
    image_grid: int = 2
    """Image embeddings = image_grid ** 2."""
    camera: str = "corner"
    """Meta-World camera of the rendered frames."""
    fast_render: bool = True
    """No shadows, reflections or multisampling in rendered frames (robopref.envs.render)."""
    prompt_template: str = DEFAULT_TEMPLATE
    """The prompt around the task's instruction."""

    @model_validator(mode="after")
    def _causal_lm(self) -> ModelConfig:
        import json
        from pathlib import Path

        config = Path(self.path or "") / "config.json"
        if self.path is not None and config.is_file():
            if "vision_config" in json.loads(config.read_text()):
                raise ValueError(
                    f"model.path: {self.path} is an image-text-to-text model; the grape rounds "
                    "take a causal LM (a VLM runs in grape_offline and robopref vla-eval)"
                )
        return self


class SFTConfig(StrictModel):
    """Behaviour cloning on noisy scripted demonstrations of the in-domain tasks."""

    demos_per_task: int = Field(20, ge=1)
    """Demonstrations per in-domain task."""
    action_noise: float = Field(0.1, ge=0)
    """Std of the Gaussian noise on the scripted actions."""
    successful_only: bool = True
    """Keep successful demonstrations only."""
    epochs: int = Field(20, ge=0)
    """Epochs over the demonstration steps."""
    batch_size: int = Field(256, ge=1)
    """Steps per batch."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""

    def train_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`robopref.policies.vla.sft_train`."""
        return self.model_dump(include={"epochs", "batch_size", "lr", "weight_decay"})


class LoraConfig(StrictModel):
    """LoRA adapters on the LM, trained by every round learner."""

    rank: int = Field(8, ge=1)
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA alpha."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] | None = None
    """Module names to adapt; None: the LM's attention projections."""
    train_obs_encoder: bool = False
    """Also train the observation encoder."""
    train_action_head: bool = False
    """Also train the LM output head (it holds the action-token rows)."""


class CostWeights(StrictModel):
    """Weights of the guided score (see :func:`robopref.policies.vla.guided_scores`)."""

    success: float = 1.0
    """Weight of task success."""
    stages: float = 1.0
    """Weight of the external reward exp(-sum of stage costs / stage_scale)."""
    stage_scale: float = Field(0.1, gt=0)
    """Metres: the scale of the stage costs in the external reward."""
    logp: float = 0.05
    """Weight of the per-step log-likelihood of the trajectory under the current policy."""
    length: float = 0.0
    """Efficiency: weight of the episode length / max_episode_steps (as a cost)."""
    collisions: float = 0.0
    """Safety: weight of the robot's contacts with non-target bodies per step (as a cost)."""
    action: float = 0.0
    """Safety: weight of the mean squared action (as a cost)."""

    @model_validator(mode="before")
    @classmethod
    def _terms(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = [*SCORE_TERMS, "stage_scale"]
            unknown = sorted(set(data) - set(known))
            if unknown:
                raise ValueError(f"unknown cost term {unknown[0]!r}, expected one of {known}")
        return data

    def weights(self) -> dict[str, float]:
        return self.model_dump(exclude={"stage_scale"})


class TPOConfig(StrictModel):
    """The rounds: rollouts of the current policy, ranked by the guided cost, and the update
    (TPO; step-level DPO uses the same pairs and optimiser settings)."""

    rounds: int = Field(3, ge=0)
    """Rounds per learner and cost variant (a longer run resumes the earlier rounds)."""
    rollouts_per_task: int = Field(8, ge=2)
    """Rollouts per in-domain task and round."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the rollouts."""
    pairs: Literal["best_worst", "all", "lists"] = "all"
    """Preference items per task: the best/worst pair, all pairs, or ranked lists."""
    margin: float = Field(0.0, ge=0)
    """Minimum score gap of a pair."""
    max_list_size: int | None = None
    """Largest ranked list (pairs: lists)."""
    loss: str = "dpo"
    """A loss of robopref.losses ("plackett_luce" / "lipo_lambda" with pairs: lists)."""
    loss_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the loss."""
    beta: float = Field(0.1, gt=0)
    """DPO's beta: scales the log-ratio into the score."""
    normalize: bool = False
    """Score = beta * the mean per-token log-ratio instead of the sum."""
    sft_weight: float = Field(0.0, ge=0)
    """Adds sft_weight * the chosen rollouts' NLL per token (an SFT anchor)."""
    epochs: int = Field(2, ge=1)
    """Epochs over the preference items of a round."""
    batch_size: int = Field(4, ge=1)
    """Preference items per batch."""
    lr: float = Field(5e-4, gt=0)
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clipping (None: off)."""

    @model_validator(mode="after")
    def _loss(self) -> TPOConfig:
        get_loss(self.loss, **self.loss_options)
        return self

    def update_options(self) -> dict[str, Any]:
        """The optimiser keywords shared by ``tpo_train`` and ``step_dpo_train``."""
        keys = {"beta", "epochs", "batch_size", "lr", "weight_decay", "max_grad_norm"}
        return self.model_dump(include=keys)


class RejectionSamplingConfig(StrictModel):
    """Rejection-sampling fine-tuning: BC (on the LoRA adapters) of selected rollouts per round."""

    select: Literal["success", "best"] = "success"
    """success: the successful rollouts of a task (else its top_k); best: its top_k by score."""
    top_k: int = Field(1, ge=1)
    """Rollouts kept per task by score."""
    epochs: int = Field(2, ge=1)
    """Epochs over the kept rollouts' steps."""
    batch_size: int = Field(256, ge=1)
    """Steps per batch."""
    lr: float = Field(1e-4, gt=0)
    """AdamW learning rate."""
    actions: Literal["executed", "greedy"] = "executed"
    """Imitate the executed (sampled) actions, or the policy's greedy action at each visited
    state (the mode, not the sampling noise)."""
    with_demos: bool = True
    """Add the SFT demonstrations to each round's BC data (an SFT anchor). Without them the kept
    rollouts are mostly of the easy tasks, and BC on them lowers the others' success
    (docs/rooms/grape.md, "Why rejection sampling lowered success")."""


class MoreSFTConfig(StrictModel):
    """The "more SFT" control: each round, BC of the LoRA adapters on the SFT demonstrations for
    as many optimizer steps as task-cost TPO made in that round (no rollouts): what the
    preference learners gain beyond it is not just more training."""

    batch_size: int = Field(256, ge=1)
    """Steps per batch."""
    lr: float = Field(3e-4, gt=0)
    """AdamW learning rate."""


class EvalConfig(StrictModel):
    """The evaluation of the SFT policy and of the rounds, the same episodes for every policy."""

    episodes_per_task: int = Field(10, ge=1)
    """Episodes per task and split."""
    seed: Seed = 10_000
    """Episode i of every task is reset with seed + i, for every policy."""
    decoding: Literal["greedy", "sampled"] = "greedy"
    """How actions are decoded."""
    temperature: float | None = Field(None, gt=0)
    """Sampling temperature (decoding: sampled); None: tpo.temperature."""
    every_round: bool = True
    """False: evaluate the SFT policy and the last round only."""
    chunk: int | None = Field(None, ge=1)
    """Episodes per task run in lockstep at once (None: all); each holds a MuJoCo env, so this
    bounds memory. The sampling stream depends on it, the same for every policy."""


class GrapeConfig(StrictModel):
    """GRAPE on Meta-World: SFT, then rounds of rollouts, guided-cost preferences and updates per
    learner and cost variant, each evaluated on the in-domain and held-out tasks."""

    method: Literal["grape"] = "grape"
    tasks: list[str]
    """In-domain tasks: SFT demonstrations and round rollouts."""
    held_out_tasks: list[str] = Field(default_factory=list)
    """Tasks for evaluation only."""
    task_specs: dict[str, TaskSpec] = Field(default_factory=dict)
    """Per task: its stages and target bodies."""
    max_episode_steps: int = Field(100, ge=1)
    """Step limit of every episode (episodes also end at success)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The VLA policy."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """Supervised fine-tuning on scripted demonstrations."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA adapters of the round learners."""
    cost: CostWeights = Field(default_factory=CostWeights)
    """The main cost variant, "task"."""
    variants: dict[str, CostWeights] = Field(default_factory=dict)
    """More cost variants for TPO by name, e.g. efficiency, safety."""
    tpo: TPOConfig = Field(default_factory=TPOConfig)
    """Rounds, rollouts, preference items and the TPO update."""
    baselines: list[Literal["rejection_sampling", "step_dpo", "more_sft"]] = Field(
        default_factory=list
    )
    """Learners run on the task cost beside TPO, on the same rollout seeds (more_sft: on the
    demonstrations, with task-cost TPO's number of update steps per round)."""
    rejection_sampling: RejectionSamplingConfig = Field(default_factory=RejectionSamplingConfig)
    """The rejection-sampling baseline."""
    more_sft: MoreSFTConfig = Field(default_factory=MoreSFTConfig)
    """The more-SFT control."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """The evaluation protocol."""
    seed: Seed = 0
    """Seed of demonstrations, rollouts, sampling and updates."""
    device: Device = "auto"
    """torch device ("auto": CUDA when present)."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    tensorboard: bool = True
    """Log to TensorBoard under <out_dir>/tb."""
    progress: bool = True
    """Show progress bars."""
    resume: bool = True
    """Reuse the checkpoints in the run folder that this config made (false: make them again)."""

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
        """The main cost ("task") and the variants, in config order."""
        return {"task": self.cost, **self.variants}

    def learners(self) -> list[tuple[Learner, str]]:
        """``(learner, cost variant)`` in run order: TPO per variant, then the baselines."""
        return [("tpo", v) for v in self.cost_variants()] + [(b, "task") for b in self.baselines]

    def eval_protocol(self) -> EvalProtocol:
        e = self.eval
        return EvalProtocol(
            episodes_per_task=e.episodes_per_task,
            seed=e.seed,
            greedy=e.decoding == "greedy",
            temperature=e.temperature or self.tpo.temperature,
            chunk=e.chunk,
        )


Config = GrapeConfig
