"""GRAPE's rounds: each rolls out the learner's *current* policy on fresh episode seeds, scores the
rollouts with the guided cost and updates the LoRA adapters with the learner's rule (TPO,
step-level DPO, rejection-sampling fine-tuning, or the more-SFT control on the demonstrations).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data import Trajectory
from robopref.methods.grape.config import GrapeConfig
from robopref.policies.vla import (
    EnvPool,
    VLAPolicy,
    apply_lora,
    build_lists,
    build_pairs,
    evaluate_splits,
    guided_scores,
    load_adapters,
    load_policy,
    rollout,
    score_components,
    select_rejection_sampling,
    sft_train,
    step_dpo_train,
    summarize_rollouts,
    tpo_train,
)
from robopref.progress import bar, is_quiet


@dataclass(frozen=True)
class Round:
    """Round ``index`` (from 0) of ``learner`` on cost ``variant``."""

    learner: str
    variant: str
    index: int

    @property
    def label(self) -> str:
        return f"{self.learner}/{self.variant} round {self.index + 1}"


@dataclass
class RoundInputs:
    """What a round may need besides its policy: the SFT demonstrations (made on first use) and,
    for the more-SFT control, the number of update steps to match."""

    demos: Any = None
    matched_steps: int | None = None


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
        say(self.config, f"reusing {path}")
        return read_info(path)


def improve_and_evaluate(
    config: GrapeConfig,
    current: LearnerPolicy,
    pool: EnvPool,
    rnd: Round,
    writer: Any,
    inputs: RoundInputs,
) -> tuple[VLAPolicy, dict[str, Any]]:
    """One round (:func:`improve_round`), then its evaluation when it is evaluated."""
    policy = current.get()
    start = time.perf_counter()
    info = improve_round(config, policy, pool, rnd, writer, inputs)
    info["eval"] = None
    seconds = info.setdefault("seconds", {"rollouts": 0.0})
    seconds["update"] = time.perf_counter() - start - seconds["rollouts"]
    if evaluated(config, rnd.index):
        start = time.perf_counter()
        info["eval"] = evaluate_splits_of(config, policy, pool, f"eval[{rnd.label}]")
        seconds["eval"] = time.perf_counter() - start
    return policy, info


def rollout_seeds(config: GrapeConfig, variant: str, r: int, task_index: int) -> list[int]:
    """Episode seeds of round ``r``'s rollouts of one task: fresh every round (hashed from
    ``(seed, variant, round, task, i)``, apart from the demonstrations' and the evaluation's),
    shared by the learners of a cost variant."""
    vi = list(config.cost_variants()).index(variant)
    return [seed_of(config, 2, vi, r, task_index, i) for i in range(config.tpo.rollouts_per_task)]


def improve_round(
    config: GrapeConfig,
    policy: VLAPolicy,
    pool: EnvPool,
    rnd: Round,
    writer: Any = None,
    inputs: RoundInputs | None = None,
) -> dict[str, Any]:
    """One round: rollouts of the current policy -> guided scores -> the learner's update. The
    rollout seeds and the sampling stream depend only on ``(seed, variant, round)``, so every
    learner of a variant sees the same episode configurations (and, in round 1, the very same
    rollouts). The more-SFT control rolls nothing out."""
    inputs = inputs or RoundInputs()
    seed = seed_of(config, 4, list(config.cost_variants()).index(rnd.variant), rnd.index)
    shown = dict(progress=config.progress, label=f"update[{rnd.label}]")
    if rnd.learner == "more_sft":
        m = config.more_sft
        steps = inputs.matched_steps or 0
        history = sft_train(
            policy, inputs.demos(), batch_size=m.batch_size, lr=m.lr, seed=seed, steps=steps,
            fit_normalization=False, **shown,
        )  # fmt: skip
        update = history[-1] if history else None
        return {"preference_items": 0, "update_steps": steps, "update": update, "history": history}

    start = time.perf_counter()
    rollouts, scores = fresh_rollouts(config, policy, pool, rnd)
    task_of = [t.task for t in rollouts]
    info: dict[str, Any] = {
        "rollouts": {**summarize_rollouts(rollouts), "mean_score": float(scores.mean())},
        "rollouts_per_task": {
            task: summarize_rollouts([t for t in rollouts if t.task == task])
            for task in config.tasks
        },
        "rollout_seeds": sorted(int(t.metadata["seed"]) for t in rollouts),
        "seconds": {"rollouts": time.perf_counter() - start},
    }
    tpo = config.tpo
    if rnd.learner == "rejection_sampling":
        rs = config.rejection_sampling
        successes = np.array([t.success for t in rollouts])
        keep = select_rejection_sampling(scores, task_of, successes, rs.select, rs.top_k)
        data = [rollouts[i] for i in keep]
        if rs.actions == "greedy":
            data = [greedy_relabel(policy, t) for t in data]
        if rs.with_demos:
            data += list(inputs.demos())
        history = sft_train(
            policy, data, epochs=rs.epochs, batch_size=rs.batch_size, lr=rs.lr, seed=seed,
            fit_normalization=False, **shown,
        )  # fmt: skip
        steps = history[-1]["steps"] if history else 0
        return {
            **info, "preference_items": len(keep), "update_steps": steps, "update": history[-1],
            "history": history,
        }  # fmt: skip

    if rnd.learner == "step_dpo" or tpo.pairs != "lists":
        mode = "all" if tpo.pairs == "lists" else tpo.pairs
        pairs = build_pairs(scores, task_of, mode, tpo.margin)
    if rnd.learner == "step_dpo":
        history = step_dpo_train(
            policy, rollouts, pairs, **tpo.update_options(), seed=seed, **shown
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
            sft_weight=tpo.sft_weight, writer=writer, step_offset=rnd.index * 100_000,
            log_prefix=f"tpo/{rnd.variant}", **shown,
        )  # fmt: skip
        n_items = len(groups)
    update = history[-1] if history else None
    steps = tpo.epochs * -(-n_items // tpo.batch_size)
    return {
        **info, "preference_items": n_items, "update_steps": steps, "update": update,
        "history": history,
    }  # fmt: skip


def fresh_rollouts(
    config: GrapeConfig, policy: VLAPolicy, pool: EnvPool, rnd: Round
) -> tuple[list[Trajectory], np.ndarray]:
    """Round ``rnd``'s rollouts of the current policy (sampled at ``tpo.temperature``) on its
    own episode seeds (:func:`rollout_seeds`), and their guided scores."""
    import torch

    tpo, cost = config.tpo, config.cost_variants()[rnd.variant]
    vi = list(config.cost_variants()).index(rnd.variant)
    generator = torch.Generator().manual_seed(seed_of(config, 3, vi, rnd.index))
    rollouts: list[Trajectory] = []
    n = tpo.rollouts_per_task
    with bar(len(config.tasks) * n, f"rollouts[{rnd.label}]", unit="ep", enabled=config.progress) as shown:  # fmt: skip  # noqa: E501
        for ti, task in enumerate(config.tasks):
            seeds = rollout_seeds(config, rnd.variant, rnd.index, ti)
            rollouts += rollout(policy, pool, task, seeds, False, tpo.temperature, generator)
            shown.update(n)
    components = score_components(policy, rollouts, config.max_episode_steps, cost.stage_scale)
    return rollouts, guided_scores(components, cost.weights())


def greedy_relabel(policy: VLAPolicy, trajectory: Trajectory) -> Trajectory:
    """``trajectory`` with each action replaced by the policy's greedy action at that state."""
    from robopref.policies.vla import trajectory_observations

    out = copy.copy(trajectory)
    obs = trajectory_observations(trajectory)
    n = len(trajectory.actions)
    out.actions = policy.act(obs, [trajectory.instruction] * n, greedy=True)
    return out


def evaluated(config: GrapeConfig, r: int) -> bool:
    return config.eval.every_round or r == config.tpo.rounds - 1


def evaluate_splits_of(
    config: GrapeConfig, policy: VLAPolicy, pool: EnvPool, label: str | None = None
) -> dict[str, Any]:
    """The config's evaluation protocol on its in-domain and held-out tasks."""
    return evaluate_splits(
        policy, pool, config.tasks, config.held_out_tasks, config.eval_protocol(),
        label=label, enabled=config.progress,
    )  # fmt: skip


def read_info(path: Path) -> tuple[None, dict[str, Any]]:
    """A stage's ``load``: the info beside a checkpoint (the model is loaded where needed)."""
    return None, json.loads(path.with_suffix(".json").read_text())


def seed_of(config: GrapeConfig, kind: int, *parts: int) -> int:
    """Disjoint episode-seed ranges per use (1: demos, 2: rollouts, 3: sampling, 4: updates);
    evaluation uses ``eval.seed + i``."""
    return int(np.random.SeedSequence([config.seed, kind, *parts]).generate_state(1)[0] % 2**31)


def say(config: GrapeConfig, text: str) -> None:
    if config.progress and not is_quiet():
        print(text, file=sys.stderr, flush=True)
