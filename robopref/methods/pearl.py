"""Recipe ``pearl``: zero-shot cross-task preference transfer, end to end.

    collect source and target data -> label source pairs with a simulated teacher
    -> transfer labels to target pairs (GW / baselines) -> learn a reward (robust or plain)
    -> relabel the target data with the reward mean -> offline policy (``policy.name``: iql,
    awr or filtered_bc) -> success rate in Meta-World

One run evaluates several *variants* on the same data so that they are compared on equal
footing:

============  ===========================  ==========================
variant       target labels                 reward model
============  ===========================  ==========================
pearl         ``transfer.method`` (auto)    Gaussian (robust, RRL)
pearl_bt      ``transfer.method`` (auto)    MLP (Bradley-Terry)
gw_plain      plain GW transfer (CPA)       MLP (Bradley-Terry)
sim           nearest source pair           MLP
dis           distance-weighted             MLP
oracle        scripted teacher              MLP
shuffled      oracle, permuted              MLP   (negative control)
============  ===========================  ==========================

``transfer.method: auto`` (the default) chooses the fused-GW setting without target labels
(:func:`robopref.transfer.select_config`); a ``reward`` feature embeds segments with a small
reward model fitted on the source labels (:func:`source_reward_embedder`).

``shuffled`` is the negative control: the oracle's labels of the target pairs randomly permuted
across the pairs (same count, same label marginals, no information about which segment is
better). A suite whose ``oracle`` and ``shuffled`` success rates are not clearly apart cannot
tell a good reward from a bad one (``robopref report`` flags it as *not informative*).

Every variant of a run is evaluated on the same episodes: ``eval_episodes`` resets with seeds
``eval_seed, eval_seed + 1, ...`` (default ``eval_seed = 10_000 + seed``). Rows carry
``success_rate``, its binomial standard error ``success_se = sqrt(p (1 - p) / n)`` and
``eval_episodes``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from robopref.config import Device, Distinct, Seed, StrictModel
from robopref.data import (
    PreferenceQueries,
    TrajectoryDataset,
    load_dataset,
    sample_queries,
    save_dataset,
)
from robopref.envs import CollectConfig, collect_dataset, evaluate_policy
from robopref.methods.common import cached, checkpoint_dir, start_run
from robopref.policies.offline import PolicyConfig, make_learner
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.rewards import GaussianReward, MLPReward, RewardTrainer, RewardTrainerConfig
from robopref.teachers import TeacherConfig, make_teacher
from robopref.transfer import TransferConfig, label_accuracy, sample_pool_pairs, transfer_labels
from robopref.utils import atomic_path, seed_everything

Variant = Literal["pearl", "pearl_bt", "gw_plain", "sim", "dis", "oracle", "shuffled"]
VARIANTS: dict[str, tuple[str, bool]] = {  # variant -> (label source, robust reward)
    "pearl": ("transfer", True),  # "transfer": the configured transfer.method
    "pearl_bt": ("transfer", False),
    "gw_plain": ("gw", False),
    "sim": ("sim", False),
    "dis": ("dis", False),
    "oracle": ("oracle", False),
    "shuffled": ("shuffled", False),
}


class QueryConfig(StrictModel):
    segment_length: int = Field(25, ge=1)
    source_pool: int = Field(300, ge=2)  # distinct labelled source segments
    source_queries: int = Field(2000, ge=1)  # labelled source pairs among them
    target_pool: int = Field(300, ge=2)
    target_queries: int = Field(1000, ge=1)  # target pairs that receive transferred labels
    eval_queries: int = Field(500, ge=1)  # held-out oracle-labelled target pairs
    min_confidence: float = Field(0.0, ge=0, le=1)  # drop transferred labels below this


class RewardConfig(StrictModel):
    hidden: tuple[int, ...] = (256, 256)
    prior_std: float = 0.1  # RRL: variance regulariser target (robust variants)
    reg_weight: float = 1.0
    trainer: RewardTrainerConfig = Field(default_factory=RewardTrainerConfig)


class Config(StrictModel):
    method: str = "pearl"
    source: CollectConfig
    target: CollectConfig
    source_dataset: str | None = (
        None  # load instead of collecting (HDF5, robopref/robomimic layout)
    )
    target_dataset: str | None = None
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    queries: QueryConfig = Field(default_factory=QueryConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    variants: Distinct[Variant] = ["pearl", "pearl_bt", "gw_plain", "sim", "oracle"]
    eval_episodes: int = Field(50, ge=1)
    # independent permutations of the shuffled control per run: a reward fitted to permuted
    # labels ranks the directed episodes on top or at the bottom almost at random, so one draw
    # per seed makes the control's mean very noisy (docs/decisions.md, 'PEARL suite')
    shuffled_permutations: int = Field(1, ge=1)
    eval_max_steps: int | None = Field(None, ge=1)
    seed: Seed = 0
    device: Device = "auto"
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    eval_seed: Seed | None = None  # reset seed of the first evaluation episode; None: 10_000 + seed

    @model_validator(mode="before")
    @classmethod
    def _legacy_iql_key(cls, data):
        """Older configs say ``iql: {...}``: a shorthand for ``policy.iql`` (its keys win)."""
        if isinstance(data, dict) and isinstance(data.get("iql"), dict):
            data = dict(data)
            policy = dict(data.get("policy") or {})
            policy["iql"] = {**(policy.get("iql") or {}), **data.pop("iql")}
            data["policy"] = policy
        return data


def _dataset(path: str | None, collect: CollectConfig, cache: Path) -> TrajectoryDataset:
    if path:
        return load_dataset(path)
    # reused only when this very collect config made it (a run into an older run's folder with
    # other tasks collects again); the worker count does not change the data
    return cached(
        cache,
        collect.model_dump(mode="json", exclude={"num_workers", "start_method"}),
        make=lambda: collect_dataset(collect, progress=True),
        save=save_dataset,
        load=load_dataset,
        what="collected data",
    )


def _target_labels(
    variant: str,
    config: Config,
    source: TrajectoryDataset,
    source_q: PreferenceQueries,
    target: TrajectoryDataset,
    target_q: PreferenceQueries,
    permutation: int = 0,
) -> tuple[PreferenceQueries, dict]:
    method, _ = VARIANTS[variant]
    if method == "oracle":
        return make_teacher(config.teacher).label(target, target_q), {}
    if method == "shuffled":
        return shuffled_labels(
            make_teacher(config.teacher).label(target, target_q), config.seed, permutation
        ), {}
    transfer = config.transfer
    if method != "transfer":
        # the GW baseline keeps its historical setting (mean/std structure, eps from config)
        transfer = transfer.model_copy(update={"method": method})
    embedder = None
    if _uses_reward_feature(transfer):
        embedder = source_reward_embedder(source, source_q, config)
    return transfer_labels(source, source_q, target, target_q, transfer, embedder)


def _uses_reward_feature(t: TransferConfig) -> bool:
    feats = {t.feature}
    if t.method == "fgw":
        feats.add(t.cross_feature)
    if t.method == "auto":
        feats |= set(t.auto.cross_features)
    return "reward" in feats


def source_reward_embedder(source: TrajectoryDataset, source_q: PreferenceQueries, config: Config):
    """Fit a small Bradley-Terry MLP reward on the source labels and return an embedder:
    ``(dataset, items) -> [N, hidden[-1] + 1]``, the per-step last hidden layer averaged over
    the segment plus the segment's mean predicted reward. Shared by both tasks (same robot,
    same observation), so distances between embeddings are a cross-task cost."""
    import numpy as np
    import torch

    obs_dim, act_dim = source[0].state.shape[1], source[0].actions.shape[1]
    model = MLPReward(obs_dim, act_dim, hidden=(64, 64))
    trainer_cfg = RewardTrainerConfig(
        epochs=5, batch_size=64, seed=config.seed, device="cpu", quiet=True, val_fraction=0.0
    )
    RewardTrainer(model, trainer_cfg).fit(source, source_q)
    body = model.net[:-1]

    def embed(dataset: TrajectoryDataset, items) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for t, s, h in zip(items.traj_index, items.start, items.length):
                traj = dataset[int(t)]
                obs = torch.as_tensor(traj.state[s : s + h], dtype=torch.float32)
                act = torch.as_tensor(traj.actions[s : s + h], dtype=torch.float32)
                x = model.inputs(obs, act)
                hid = body(x)
                rows.append(torch.cat([hid.mean(0), model(obs, act).mean()[None]]).numpy())
        return np.stack(rows).astype(np.float64)

    return embed


def shuffled_labels(
    labels: PreferenceQueries, seed: int, permutation: int = 0
) -> PreferenceQueries:
    """The negative control: ``labels``' label rows randomly permuted across queries.

    Same queries, same number of labels, same label values; which segment of a pair is
    preferred no longer depends on the segments. Permutes within groups of equal ``mask`` rows
    (all queries for pairs), so padding stays where it was.

    A reward fitted to these labels still scores far from 0.5 on held-out pairs in a single
    run (0.31-0.72 over 10 seeds of the README demo, mean 0.47): any state function orders
    pairs of distinct episode kinds consistently, so read the control over seeds
    (docs/decisions.md, "PEARL shuffled control"). ``permutation`` > 0 draws another
    independent permutation for the same ``seed``.
    """
    # permutation 0 keeps the generator of the single-permutation control
    rng = np.random.default_rng([seed, 0x5F] if permutation == 0 else [seed, 0x5F, permutation])
    new = labels.labels.copy()
    mask = labels.mask if labels.mask is not None else np.ones(new.shape, dtype=bool)
    _, group = np.unique(mask, axis=0, return_inverse=True)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        new[rows] = labels.labels[rng.permutation(rows)]
    return dataclasses.replace(labels, labels=new, teacher=f"{labels.teacher}-shuffled")


def _reward_model(robust: bool, obs_dim: int, act_dim: int, config: RewardConfig):
    if robust:
        return GaussianReward(
            obs_dim,
            act_dim,
            hidden=config.hidden,
            prior_std=config.prior_std,
            reg_weight=config.reg_weight,
        )
    return MLPReward(obs_dim, act_dim, hidden=config.hidden)


def run(config: Config, out_dir: Path) -> dict:
    out_dir, rng = start_run(config, out_dir)
    source = _dataset(config.source_dataset, config.source, out_dir / "source.h5")
    target = _dataset(config.target_dataset, config.target, out_dir / "target.h5")
    qc = config.queries

    source_q = make_teacher(config.teacher).label(
        source, sample_pool_pairs(source, qc.source_pool, qc.source_queries, qc.segment_length, rng)
    )
    target_q = sample_pool_pairs(target, qc.target_pool, qc.target_queries, qc.segment_length, rng)
    oracle = make_teacher(TeacherConfig(name="oracle"))
    target_truth = oracle.label(target, target_q)
    eval_q = oracle.label(
        target, sample_queries(target, qc.eval_queries, 2, qc.segment_length, rng)
    )

    obs_dim, act_dim = target[0].state.shape[1], target[0].actions.shape[1]
    target_task = target[0].task
    # reward and IQL checkpoints resume a killed run; they are kept only for the same data and
    # settings (IQL would otherwise resume a policy trained on another task's data). More
    # epochs / steps still resume: the trainers count them from zero.
    data_key = config.model_dump(
        mode="json",
        include={"source", "target", "source_dataset", "target_dataset", "teacher", "queries"}
        | {"transfer", "seed"},
        exclude={
            "source": {"num_workers", "start_method"},
            "target": {"num_workers", "start_method"},
        },
    )
    reward_key = {**data_key, "reward": config.reward.model_dump(mode="json")}
    reward_key["reward"]["trainer"].pop("epochs")
    # the learner and its options, less the step count (a longer run resumes a shorter one)
    options = config.policy.options().model_dump(mode="json", exclude={"steps", "device"})
    policy_key = {**reward_key, "policy": [config.policy.name, options]}
    rows = []
    runs = [
        (variant, j)
        for variant in config.variants
        for j in range(config.shuffled_permutations if variant == "shuffled" else 1)
    ]
    for variant, permutation in runs:
        started = time.time()
        seed_everything(config.seed)
        labels, info = _target_labels(
            variant, config, source, source_q, target, target_q, permutation
        )
        name = variant if permutation == 0 else f"{variant}-p{permutation}"  # checkpoints, logs
        label_acc = label_accuracy(labels, target_truth)
        keep = labels.confidence >= qc.min_confidence
        train_q = labels if keep.all() else labels.subset(keep)

        robust = VARIANTS[variant][1]
        model = _reward_model(robust, obs_dim, act_dim, config.reward)
        trainer_cfg = config.reward.trainer.model_copy(
            update={
                "seed": config.seed,
                "device": config.device,
                "log_dir": str(out_dir / "tb" / f"reward-{name}"),
                "checkpoint_dir": str(
                    checkpoint_dir(out_dir / "ckpt" / f"reward-{name}", reward_key, "checkpoints")
                ),
            }
        )
        trainer = RewardTrainer(model, trainer_cfg)
        trainer.fit(target, train_q)
        reward_acc = trainer.accuracy(target, eval_q)

        buffer = TransitionBuffer.from_dataset(target, reward_fn=model.predict)
        learner = config.policy.name
        agent = make_learner(
            config.policy,
            obs_dim,
            act_dim,
            seed=config.seed,
            device=config.device,
            log_dir=str(out_dir / "tb" / f"{learner}-{name}"),
            checkpoint_dir=str(
                checkpoint_dir(out_dir / "ckpt" / f"{learner}-{name}", policy_key, "checkpoints")
            ),
        )
        policy_started, policy_cpu = time.time(), time.process_time()
        agent.train(buffer)
        policy_s, policy_cpu = time.time() - policy_started, time.process_time() - policy_cpu
        eval_started = time.time()
        evaluation = evaluate_policy(
            agent.act,
            target_task,
            num_episodes=config.eval_episodes,
            seed=config.seed + 10_000 if config.eval_seed is None else config.eval_seed,
            max_episode_steps=config.eval_max_steps or config.target.max_episode_steps,
        )
        success = float(evaluation["success_rate"])
        # the chosen transfer setting as one field: text columns would split report groups
        setting = {k: v for k, v in info.items() if isinstance(v, str)}
        rows.append(
            {
                "variant": variant,
                **({"permutation": permutation} if variant == "shuffled" else {}),
                "source_task": source[0].task,
                "target_task": target_task,
                "seed": config.seed,
                "label_accuracy": label_acc,
                "mean_confidence": float(labels.confidence.mean()),
                "num_train_labels": int(len(train_q)),
                "reward_accuracy": reward_acc,
                "success_rate": success,
                "success_se": math.sqrt(success * (1.0 - success) / config.eval_episodes),
                "eval_episodes": config.eval_episodes,
                "policy": learner,
                "policy_steps": agent.step,
                "policy_train_s": round(policy_s, 1),
                "policy_cpu_s": round(policy_cpu, 1),  # CPU time of this process, all threads
                "eval_s": round(time.time() - eval_started, 1),
                "mean_return": float(evaluation["mean_return"]),
                "wall_s": round(time.time() - started, 1),
                **{f"transfer_{k}": v for k, v in info.items() if isinstance(v, (int, float))},
                **({"transfer_setting": setting} if setting else {}),
            }
        )
    results = {
        "source_task": source[0].task,
        "target_task": target_task,
        "seed": config.seed,
        "rows": rows,
    }
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    report = render_table(rows)
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(
            f"# PEARL: {source[0].task} -> {target_task} (seed {config.seed})\n\n{report}\n"
        )
    _print_table(rows)
    return results


COLUMNS = [
    ("variant", "variant", "{}"),
    ("label_accuracy", "label acc", "{:.3f}"),
    ("reward_accuracy", "reward acc", "{:.3f}"),
    ("success_rate", "success", "{:.2f}"),
    ("num_train_labels", "labels", "{}"),
    ("wall_s", "time (s)", "{}"),
]


def render_table(rows: list[dict]) -> str:
    """Markdown table of the per-variant metrics."""
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(
        title=f"PEARL {rows[0]['source_task']} -> {rows[0]['target_task']} (seed {rows[0]['seed']})"
    )
    for _, title, _ in COLUMNS:
        table.add_column(title)
    for r in rows:
        table.add_row(*[fmt.format(r[key]) for key, _, fmt in COLUMNS])
    Console().print(table)
