"""Recipe ``rapl``: preference-aligned visual encoders and OT visual rewards (Tian et al. 2024).

    collect Meta-World episodes (scripted expert, noisy, goal-mismatched, random, other-task)
    -> render them (camera, size, frame stride) -> split trajectories into train / held-out
    -> a teacher ranks triplets of train videos (full episodes) and pairs of held-out videos
    -> per label budget: align the encoder with the triplets (RAPL) and fit RLHF baselines
    -> score each reward on held-out videos: Spearman with the GT reward, preference accuracy
    -> (optional) SAC on state observations with each reward; success rate

Rewards compared (all on the same frames, demos and labels):

=================  ===============================================================
``rapl@b``         OT reward with the encoder aligned on ``b`` triplets
``unaligned``      OT reward with the same encoder at initialisation (no alignment)
``pixels``         OT reward on raw pixels (8x8 average-pooled frames as features)
``rlhf_state@b``   MLPReward on the 39-d states, BT on the same ``b`` triplets
``rlhf_embed@b``   MLPReward on the unaligned encoder's frame embeddings, same labels
``gt``             Meta-World's reward (only with RL: the RL baseline)
=================  ===============================================================

The rendered dataset, each aligned encoder, each RLHF reward and each SAC run are stages of the
run folder: a rerun into the same folder reuses what its config has not changed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from robopref.data import PreferenceQueries, TrajectoryDataset, load_dataset, save_dataset
from robopref.envs import collect_dataset
from robopref.envs.render import render_dataset, strided_video
from robopref.methods.common import RunResult, Stage, start_run
from robopref.methods.rapl import results
from robopref.methods.rapl.config import Config
from robopref.methods.rapl.rl import (
    GroundTruthReward,
    OTRLReward,
    RLReward,
    RLSetup,
    StateRLReward,
    run_sac,
    scene_demos,
)
from robopref.progress import step, track
from robopref.rewards import MLPReward, RewardTrainer
from robopref.rewards.models import load_reward, save_reward
from robopref.rewards.ot_reward import OTReward, affine_to_range
from robopref.rewards.visual import VisualEncoder, align_encoder
from robopref.teachers import label_queries, make_teacher

# What decides each stage's output (config fields; devices and thread counts do not).
SPLIT = {"task", "seed", "num_demos", "test_fraction", "budgets", "query_k", "teacher"}
ALIGN_KEY = SPLIT | {"eval_queries", "encoder", "align"}
RLHF_KEY = SPLIT | {"encoder", "rlhf"}
RL_KEY = ALIGN_KEY | RLHF_KEY | {"render", "ot_eps", "rl"}


@dataclass
class Videos:
    """The rendered dataset split for the recipe: demos, train and held-out videos."""

    ds: TrajectoryDataset
    videos: np.ndarray  # [N, T', H, W, 3] every trajectory's frames
    stride: int  # env steps per frame
    horizon: int  # env steps per episode
    demos: list[int]  # expert episodes: alignment anchors and the OT reward's demos
    train_ids: np.ndarray
    test_ids: np.ndarray


def run(config: Config, out_dir: str | Path) -> RunResult:
    """Run the recipe into ``out_dir``; return its rows (one per reward and budget) and tables."""
    out_dir, rng = start_run(config, out_dir)
    started = time.time()
    data_stage = Stage(
        "collect[rapl]",
        out_dir / "dataset.h5",
        key=_data_key(config),
        reads=[config.dataset] if config.dataset else [],
    )
    ds = data_stage.run(make=partial(_collect, config), save=save_dataset, load=load_dataset)
    data = _split(ds, config, rng)
    data_s = time.time() - started
    train_q, eval_q = _label(data, config)
    gt = {int(i): results.frame_gt(ds[int(i)], data.stride) for i in data.test_ids}

    def ot_row(reward: str, budget: int, embed, since: float, **extra) -> dict:
        ot = OTReward(embed, [data.videos[d] for d in data.demos], eps=config.ot_eps)
        label = f"ot-reward[{results.variant(reward, budget)}]"
        frames = {
            int(i): ot.reward(data.videos[i]) for i in track(data.test_ids, label, unit="video")
        }
        metrics = results.score(frames, gt, eval_q)
        return results.reward_row(
            reward, budget, metrics, time.time() - since, config.seed, **extra
        )

    rows = [ot_row("pixels", 0, _pixel_embed, time.time())]
    since = time.time()
    base = _base_encoder(config, out_dir / "encoders" / "unaligned.pt")
    rows.append(ot_row("unaligned", 0, base.embed, since))
    embed_ds = _embedding_dataset(data, base) if "embedding" in config.rlhf.inputs else None

    writer = _tensorboard(out_dir / "tb")
    encoders, rlhf_models, stages = {}, {}, {}
    for b in sorted(config.budgets):
        q = train_q.subset(np.arange(min(b, train_q.num_queries)))
        since = time.time()
        stages["rapl", b] = Stage(
            f"align[rapl@{b}]",
            out_dir / "encoders" / f"rapl@{b}.pt",
            key=_key(config, ALIGN_KEY, budget=b),
            after=[data_stage],
        )
        make = partial(_align, config, base, data, q, eval_q, writer, f"rapl@{b}")
        encoders[b], history = stages["rapl", b].run(make, _save_aligned, _load_aligned)
        val = [h.get("val_accuracy") for h in history]
        rows.append(ot_row("rapl", b, encoders[b].embed, since, align_val_accuracy=val))
        for inputs in config.rlhf.inputs:
            since = time.time()
            stages[f"rlhf_{inputs}", b] = Stage(
                f"rlhf[{inputs}@{b}]",
                out_dir / "rlhf" / f"{inputs}@{b}.pt",
                key=_key(config, RLHF_KEY, budget=b, inputs=inputs),
                after=[data_stage],
            )
            fit_on = data.ds if inputs == "state" else embed_ds
            log_dir = out_dir / "tb" / f"rlhf_{inputs}@{b}"
            make = partial(_fit_rlhf, config, fit_on, q, log_dir, f"rlhf[{inputs}@{b}]")
            model = stages[f"rlhf_{inputs}", b].run(make, save_reward, load_reward)
            rlhf_models[inputs, b] = model
            frames = {
                int(i): model.predict(fit_on[int(i)].state[:: data.stride]).astype(np.float64)
                for i in data.test_ids
            }
            metrics = results.score(frames, gt, eval_q)
            rows.append(results.reward_row(f"rlhf_{inputs}", b, metrics, time.time() - since,
                                           config.seed))  # fmt: skip

    rl_rows: list[dict] = []
    if config.rl.enabled:
        if "gt" in config.rl.rewards:
            rows.append(
                results.reward_row("gt", 0, results.score(gt, gt, eval_q), 0.0, config.seed)
            )
        rewards = partial(_rl_reward, config, data, base, encoders, rlhf_models)
        setup = functools.cache(partial(_rl_setup, config, data))  # made once, when first needed
        for name in config.rl.rewards:
            budget = config.rl_budget if name in ("rapl", "rlhf_state") else 0
            stage = Stage(
                f"rl[{name}]",
                out_dir / "rl" / f"{name}.json",
                key=_key(config, RL_KEY),
                after=[data_stage, *([stages[name, budget]] if budget else [])],
            )
            make = partial(_rl_run, setup, rewards, name, out_dir / "tb")
            rl_rows.append({**stage.run(make, _save_json, _load_json), "budget": budget})
        results.add_rl(rows, rl_rows)

    results.log_metrics(writer, rows, rl_rows)
    writer.close()
    summary = {
        "task": config.task,
        "num_trajectories": len(ds),
        "episode_length": data.horizon,
        "frames_per_video": int(data.videos.shape[1]),
        "image_shape": list(data.videos.shape[2:]),
        "num_demos": len(data.demos),
        "num_train": len(data.train_ids),
        "num_test": len(data.test_ids),
        "timings": {"data_s": data_s, "total_s": time.time() - started},
    }
    artefacts = {"encoders": str(out_dir / "encoders"), "dataset": str(data_stage.path)}
    return results.run_result(config, rows, rl_rows, summary, artefacts, str(out_dir / "tb"))


# ---- data ------------------------------------------------------------------------------------


def _data_key(config: Config) -> dict:
    collect = config.collect_config.model_dump(mode="json", exclude={"num_workers", "start_method"})
    return {"collect": collect, "render": config.render, "dataset": config.dataset}


def _collect(config: Config) -> TrajectoryDataset:
    """The collected (or read) dataset with rendered frames."""
    collect = config.collect_config
    ds = load_dataset(config.dataset) if config.dataset else None
    if ds is None:
        ds = collect_dataset(collect, progress=True, label="collect[rapl]")
    if all(isinstance(t.observations, dict) and "image" in t.observations for t in ds):
        return ds
    # check_states=False: Meta-World's scripted policies of some tasks (door-open, ...) edit the
    # observation in place, which corrupts stored states of other_task episodes; the replay
    # itself is exact.
    return render_dataset(ds, config.render, collect.max_episode_steps, collect.goal_observable,
                          check_states=False, progress=True)  # fmt: skip


def _split(ds: TrajectoryDataset, config: Config, rng: np.random.Generator) -> Videos:
    lengths = {len(t) for t in ds}
    if len(lengths) != 1:
        raise ValueError(
            f"dataset: expected episodes of one length, found lengths {sorted(lengths)}"
        )
    experts = [i for i, t in enumerate(ds) if t.metadata.get("mode") == "expert"]
    if len(experts) < config.num_demos:  # a dataset read from a file; collected ones are checked
        raise ValueError(
            f"num_demos: expected <= {len(experts)} (expert episodes in the data), found "
            f"{config.num_demos}"
        )
    demos = experts[: config.num_demos]
    rest = rng.permutation([i for i in range(len(ds)) if i not in demos])
    n_test = max(2, int(round(config.test_fraction * len(rest))))
    return Videos(
        ds=ds,
        videos=np.stack([strided_video(t) for t in ds]),
        stride=int(ds[0].metadata.get("image_stride", 1)),
        horizon=lengths.pop(),
        demos=demos,
        train_ids=np.sort(rest[n_test:]),
        test_ids=np.sort(rest[:n_test]),
    )


def _label(data: Videos, config: Config) -> tuple[PreferenceQueries, PreferenceQueries]:
    """Ranked ``query_k``-tuples of train videos (the largest budget; a budget takes the first
    ones) and held-out oracle pairs."""
    train_q = label_queries(data.ds, make_teacher(config.teacher), max(config.budgets),
                            k=config.query_k, segment_length=data.horizon, seed=config.seed,
                            trajectory_ids=data.train_ids)  # fmt: skip
    eval_q = label_queries(data.ds, make_teacher("oracle"), config.eval_queries, k=2,
                           segment_length=data.horizon, seed=config.seed + 1,
                           trajectory_ids=data.test_ids)  # fmt: skip
    return train_q, eval_q


def _key(config: Config, fields: set[str], **extra) -> dict:
    return {**config.model_dump(mode="json", include=fields), **extra}


# ---- rewards ---------------------------------------------------------------------------------


def _pixel_embed(frames: np.ndarray) -> np.ndarray:
    """Raw-pixel features: 8x8 average-pooled RGB frames, ``[..., 192]``."""
    f = np.asarray(frames, dtype=np.float32) / 255.0
    H, W = f.shape[-3:-1]
    f = f[..., : H // 8 * 8, : W // 8 * 8, :]
    f = f.reshape(*f.shape[:-3], 8, H // 8, 8, W // 8, 3).mean((-4, -2))
    return f.reshape(*f.shape[:-3], -1)


def _base_encoder(config: Config, path: Path) -> VisualEncoder:
    """The encoder at initialisation (seeded): the unaligned baseline and where alignment starts."""
    torch.manual_seed(config.seed)
    base = VisualEncoder(**config.encoder.model_dump())
    path.parent.mkdir(parents=True, exist_ok=True)
    base.save(path)
    return base


def _embedding_dataset(data: Videos, encoder: VisualEncoder) -> TrajectoryDataset:
    """The dataset with ``state`` replaced by frame embeddings ``[T, d]`` (held per stride)."""
    out = []
    for traj, video in zip(data.ds, data.videos):
        emb = np.repeat(encoder.embed(video), data.stride, axis=0)[: len(traj)]
        out.append(dataclasses.replace(traj, observations=emb))
    return TrajectoryDataset(out)


def _align(config, base, data: Videos, q, eval_q, writer, name: str):
    """A copy of ``base`` aligned on the queries ``q``; returns it and its per-epoch history."""
    enc = copy.deepcopy(base)
    cfg = config.align.model_copy(update={"seed": config.seed, "device": config.device})
    with step(f"align[{name}] {cfg.epochs} epochs") as info:
        history = align_encoder(enc, data.videos, q.traj_index, q.labels, data.demos, cfg,
                                eval_q.traj_index, eval_q.labels)  # fmt: skip
        info["note"] = f"held-out accuracy {history[-1].get('val_accuracy', float('nan')):.2f}"
    for h in history:
        for key in ("train_loss", "val_accuracy"):
            if np.isfinite(h.get(key, np.nan)):
                writer.add_scalar(f"align/{key}/{name}", h[key], h["epoch"] + 1)
    return enc.cpu(), history


def _save_aligned(value, path: Path) -> None:
    encoder, history = value
    encoder.save(path)
    path.with_suffix(".history.json").write_text(json.dumps(history) + "\n")


def _load_aligned(path: Path):
    return VisualEncoder.load(path), json.loads(path.with_suffix(".history.json").read_text())


def _fit_rlhf(config: Config, ds, q, log_dir: Path, label: str) -> MLPReward:
    """An MLP reward of ``ds``'s ``state`` (states or frame embeddings), BT on the labels."""
    torch.manual_seed(config.seed)  # the same initial weights whichever stages were reused
    model = MLPReward(ds[0].state.shape[1], 0, hidden=config.rlhf.hidden)
    update = {"seed": config.seed, "device": config.device, "log_dir": str(log_dir)}
    with step(label):
        RewardTrainer(model, config.rlhf.trainer.model_copy(update=update)).fit(ds, q)
    return model.cpu()


# ---- RL --------------------------------------------------------------------------------------


def _rl_setup(config: Config, data: Videos) -> RLSetup:
    horizon = config.rl.max_episode_steps or data.horizon
    if not config.rl.fixed_configuration:
        return RLSetup(config, horizon, [data.videos[d] for d in data.demos])
    with step(f"render[rl scene] {config.num_demos} demos"):
        videos, success, episodes = scene_demos(config, horizon)
    return RLSetup(config, horizon, videos, episodes, success)


def _rl_reward(config, data: Videos, base, encoders, rlhf_models, name: str, setup) -> RLReward:
    """The reward ``name`` SAC is trained on; learned ones mapped to ``rl.reward_range``."""
    low, high = config.rl.reward_range
    if name == "gt":
        return GroundTruthReward()
    if name == "rlhf_state":
        model = rlhf_models["state", config.rl_budget]
        states = np.concatenate([data.ds[int(i)].state for i in data.train_ids])
        return StateRLReward(model, *affine_to_range(model.predict(states), low, high))
    enc = encoders[config.rl_budget] if name == "rapl" else base
    ot = OTReward(enc.embed, setup.demos, eps=config.ot_eps)
    train_rewards = [ot.reward(data.videos[i]) for i in data.train_ids]
    ot.affine = affine_to_range(np.concatenate(train_rewards), low, high)
    return OTRLReward(ot, config)


def _rl_run(setup, rewards, name: str, log_dir: Path) -> dict:
    # the scene demos are rendered only when some SAC run is not reused
    return run_sac(setup(), name, rewards(name, setup()), log_dir)


def _save_json(row: dict, path: Path) -> None:
    path.write_text(json.dumps(row, indent=1, default=float) + "\n")


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _tensorboard(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))
