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
``eval_episodes`` (:mod:`robopref.methods.pearl.results`).

Resuming: the collected data, each variant's reward checkpoints and each policy's checkpoints
are :class:`~robopref.methods.common.Stage` outputs of the run folder. A rerun into the same
folder reuses them only for the same inputs; a source or target file replaced under the same
path, or data collected again, retrains every reward and policy after it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from robopref.data import (
    PreferenceQueries,
    TrajectoryDataset,
    load_dataset,
    sample_queries,
    save_dataset,
)
from robopref.envs import CollectConfig, collect_dataset, evaluate_on_task
from robopref.methods.common import RunResult, Stage, start_run
from robopref.methods.pearl.config import VARIANTS, Config, RewardConfig
from robopref.methods.pearl.results import pearl_result, variant_row
from robopref.policies.offline import make_learner
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.progress import is_quiet, step
from robopref.rewards import GaussianReward, MLPReward, RewardTrainer, RewardTrainerConfig
from robopref.teachers import TeacherConfig, make_teacher
from robopref.transfer import TransferConfig, label_accuracy, sample_pool_pairs, transfer_labels
from robopref.utils import seed_everything


@dataclasses.dataclass
class _Data:
    """What every variant shares: both datasets, their pairs and the stages that made them."""

    source: TrajectoryDataset
    target: TrajectoryDataset
    source_q: PreferenceQueries  # labelled by the teacher
    target_q: PreferenceQueries  # unlabelled: each variant labels them its own way
    target_truth: PreferenceQueries  # the oracle's labels of target_q
    eval_q: PreferenceQueries  # held-out oracle-labelled target pairs
    stages: list[Stage]


def run(config: Config, out_dir: Path) -> RunResult:
    out_dir, rng = start_run(config, out_dir)
    source, source_stage = data_stage("source", config.source, config.source_dataset, out_dir)
    target, target_stage = data_stage("target", config.target, config.target_dataset, out_dir)
    qc = config.queries
    source_q = make_teacher(config.teacher).label(
        source, sample_pool_pairs(source, qc.source_pool, qc.source_queries, qc.segment_length, rng)
    )
    target_q = sample_pool_pairs(target, qc.target_pool, qc.target_queries, qc.segment_length, rng)
    oracle = make_teacher(TeacherConfig(name="oracle"))
    data = _Data(
        source,
        target,
        source_q,
        target_q,
        oracle.label(target, target_q),
        oracle.label(target, sample_queries(target, qc.eval_queries, 2, qc.segment_length, rng)),
        [source_stage, target_stage],
    )
    runs = [
        (variant, j)
        for variant in config.variants
        for j in range(config.shuffled_permutations if variant == "shuffled" else 1)
    ]
    rows = [_run_variant(variant, j, config, data, out_dir) for variant, j in runs]
    return pearl_result(config, rows, out_dir)


def data_stage(
    role: str, collect: CollectConfig, path: str | None, out_dir: Path
) -> tuple[TrajectoryDataset, Stage]:
    """The ``role`` (source or target) data and the stage that stands for it.

    Collected data is saved as ``out_dir/ROLE.h5`` and reused only when this very collect
    config made it (the worker count does not change the data). A given file is read where it
    is; its content keys the stage (``ROLE.dataset.json`` records it), so a file replaced under
    the same path makes every later stage again."""
    if path:
        stage = Stage(f"load[{role}]", out_dir / f"{role}.dataset.json", reads=[path])
        dataset = stage.run(
            make=lambda: load_dataset(path),
            save=lambda ds, p: p.write_text(json.dumps({"path": str(path), "episodes": len(ds)})),
            load=lambda _: load_dataset(path),
        )
        return dataset, stage
    stage = Stage(
        f"collect[{role}]",
        out_dir / f"{role}.h5",
        key=collect.model_dump(mode="json", exclude={"num_workers", "start_method"}),
    )

    def make() -> TrajectoryDataset:
        with step(f"collect[{role}]"):
            return collect_dataset(collect, progress=not is_quiet())

    return stage.run(make=make, save=save_dataset, load=load_dataset), stage


def _run_variant(variant: str, permutation: int, config: Config, data: _Data, out_dir: Path):
    """Label, reward, policy and evaluation of one variant: its result row."""
    started = time.time()
    seed_everything(config.seed)
    name = variant if permutation == 0 else f"{variant}-p{permutation}"  # checkpoints, logs
    labels, info = target_labels(
        variant, config, data.source, data.source_q, data.target, data.target_q, permutation
    )
    keep = labels.confidence >= config.queries.min_confidence
    train_q = labels if keep.all() else labels.subset(keep)

    # reward checkpoints resume a killed run; kept only for the same data and settings. More
    # epochs still resume: the trainer counts them from zero.
    reward_cfg = config.reward.model_dump(mode="json")
    reward_cfg["trainer"].pop("epochs")
    reward_stage = Stage(
        f"reward[{name}]",
        out_dir / "ckpt" / f"reward-{name}",
        key={
            **config.model_dump(mode="json", include={"teacher", "queries", "transfer", "seed"}),
            "reward": reward_cfg,
        },
        after=data.stages,
    )
    target = data.target
    obs_dim, act_dim = target[0].state.shape[1], target[0].actions.shape[1]
    model = _reward_model(VARIANTS[variant][1], obs_dim, act_dim, config.reward)
    trainer_cfg = config.reward.trainer.model_copy(
        update={
            "seed": config.seed,
            "device": config.device,
            "log_dir": str(out_dir / "tb" / f"reward-{name}"),
            "checkpoint_dir": str(reward_stage.folder()),
        }
    )
    trainer = RewardTrainer(model, trainer_cfg)
    trainer.fit(target, train_q, label=f"reward[{name}]")

    # the learner and its options, less the step count (a longer run resumes a shorter one);
    # the whole reward config: a reward trained longer relabels the data differently
    learner = config.policy.name
    options = config.policy.options().model_dump(mode="json", exclude={"steps", "device"})
    policy_stage = Stage(
        f"policy[{name}]",
        out_dir / "ckpt" / f"{learner}-{name}",
        key={"policy": [learner, options], "reward_epochs": config.reward.trainer.epochs},
        after=[reward_stage],
    )
    agent = make_learner(
        config.policy,
        obs_dim,
        act_dim,
        seed=config.seed,
        device=config.device,
        log_dir=str(out_dir / "tb" / f"{learner}-{name}"),
        checkpoint_dir=str(policy_stage.folder()),
    )
    buffer = TransitionBuffer.from_dataset(target, reward_fn=model.predict)
    policy_started, policy_cpu = time.time(), time.process_time()
    agent.train(buffer, label=f"policy[{name}]")
    policy_s, policy_cpu = time.time() - policy_started, time.process_time() - policy_cpu

    eval_started = time.time()
    episodes = config.eval_episodes
    evaluation = evaluate_on_task(
        agent.act,
        target[0].task,
        num_episodes=episodes,
        seed=config.seed + 10_000 if config.eval_seed is None else config.eval_seed,
        max_episode_steps=config.eval_max_steps or config.target.max_episode_steps,
        label=f"eval[{name}] {episodes} episodes",
    )
    return variant_row(
        variant,
        permutation,
        config,
        data.source[0].task,
        target[0].task,
        label_accuracy=label_accuracy(labels, data.target_truth),
        labels=labels,
        num_train_labels=len(train_q),
        reward_accuracy=trainer.accuracy(target, data.eval_q),
        evaluation=evaluation,
        policy_steps=agent.step,
        timings={
            "policy_train_s": policy_s,
            "policy_cpu_s": policy_cpu,
            "eval_s": time.time() - eval_started,
            "wall_s": time.time() - started,
        },
        info=info,
    )


def target_labels(
    variant: str,
    config: Config,
    source: TrajectoryDataset,
    source_q: PreferenceQueries,
    target: TrajectoryDataset,
    target_q: PreferenceQueries,
    permutation: int = 0,
) -> tuple[PreferenceQueries, dict]:
    """``variant``'s labels of ``target_q`` and the transfer's diagnostics (``{}`` for the
    oracle and the shuffled control)."""
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
    with step(f"transfer[{transfer.method}]") as shown:
        embedder = None
        if _uses_reward_feature(transfer):
            embedder = source_reward_embedder(source, source_q, config)
        labels, info = transfer_labels(source, source_q, target, target_q, transfer, embedder)
        if "auto_cross_feature" in info:
            shown["note"] = (
                f"fgw on {info['auto_cross_feature']}, alpha {info['auto_alpha']:g}, "
                f"epsilon {info['auto_epsilon']:g}"
            )
    return labels, info


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
    run: any state function orders pairs of distinct episode kinds consistently, so read the
    control over seeds (docs/decisions.md, "PEARL shuffled control"). ``permutation`` > 0 draws
    another independent permutation for the same ``seed``.
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
