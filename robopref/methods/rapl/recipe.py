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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from robopref.data import PreferenceQueries, TrajectoryDataset, load_dataset, save_dataset
from robopref.methods.common import RunResult, Stage, start_run
from robopref.methods.rapl import results
from robopref.methods.rapl.config import Config
from robopref.methods.rapl.data import Videos, collect_videos, data_key, label_videos, split_videos
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

# What decides each stage's output (config fields; devices and thread counts do not).
SPLIT = {"task", "seed", "num_demos", "test_fraction", "budgets", "query_k", "teacher"}
ALIGN_KEY = SPLIT | {"eval_queries", "encoder", "align"}
RLHF_KEY = SPLIT | {"encoder", "rlhf"}
RL_KEY = ALIGN_KEY | RLHF_KEY | {"render", "ot_eps"}  # and rl, less its list of rewards


@dataclass
class Scorer:
    """Scores rewards on the held-out videos against the GT reward and the oracle pairs."""

    config: Config
    data: Videos
    eval_q: PreferenceQueries

    def __post_init__(self) -> None:
        stride = self.data.stride
        self.gt = {int(i): results.frame_gt(self.data.ds[int(i)], stride) for i in self.test_ids}

    @property
    def test_ids(self) -> list[int]:
        return [int(i) for i in self.data.test_ids]

    def row(self, reward: str, budget: int, frames: dict, since: float, **extra) -> dict:
        metrics = results.score(frames, self.gt, self.eval_q)
        seconds = time.time() - since
        return results.reward_row(reward, budget, metrics, seconds, self.config.seed, **extra)

    def ot(self, reward: str, budget: int, embed, since: float, **extra) -> dict:
        """The row of the OT reward of frames embedded by ``embed`` against the demos."""
        videos = self.data.videos
        ot = OTReward(embed, [videos[d] for d in self.data.demos], eps=self.config.ot_eps)
        label = f"ot-reward[{results.variant(reward, budget)}]"
        frames = {i: ot.reward(videos[i]) for i in track(self.test_ids, label, unit="video")}
        return self.row(reward, budget, frames, since, **extra)

    def mlp(self, reward: str, budget: int, model: MLPReward, ds, since: float) -> dict:
        """The row of an MLP reward of ``ds``'s ``state`` at the rendered frames."""
        stride = self.data.stride
        frames = {i: model.predict(ds[i].state[::stride]).astype(np.float64) for i in self.test_ids}
        return self.row(reward, budget, frames, since)


@dataclass
class Rewards:
    """The learned rewards, and the stages that made them (what an RL run on them reads)."""

    base: VisualEncoder
    encoders: dict[int, VisualEncoder] = field(default_factory=dict)
    rlhf: dict[tuple[str, int], MLPReward] = field(default_factory=dict)
    stages: dict[tuple[str, int], Stage] = field(default_factory=dict)


def run(config: Config, out_dir: str | Path) -> RunResult:
    """Run the recipe into ``out_dir``; return its rows (one per reward and budget) and tables."""
    out_dir, rng = start_run(config, out_dir)
    started = time.time()
    data_stage = Stage(
        "collect[rapl]",
        out_dir / "dataset.h5",
        key=data_key(config),
        reads=[config.dataset] if config.dataset else [],
    )
    ds = data_stage.run(make=partial(collect_videos, config), save=save_dataset, load=load_dataset)
    data = split_videos(ds, config, rng)
    data_s = time.time() - started
    train_q, eval_q = label_videos(data, config)
    score = Scorer(config, data, eval_q)
    writer = _tensorboard(out_dir / "tb")

    rows = [score.ot("pixels", 0, _pixel_embed, time.time())]
    since = time.time()
    rewards = Rewards(base=_base_encoder(config, out_dir / "encoders" / "unaligned.pt"))
    rows.append(score.ot("unaligned", 0, rewards.base.embed, since))
    embed_ds = _embedding_dataset(data, rewards.base) if "embedding" in config.rlhf.inputs else None
    for b in sorted(config.budgets):
        q = train_q.subset(np.arange(min(b, train_q.num_queries)))
        since = time.time()
        stage = rewards.stages["rapl", b] = Stage(
            f"align[rapl@{b}]",
            out_dir / "encoders" / f"rapl@{b}.pt",
            key=_key(config, ALIGN_KEY, budget=b),
            after=[data_stage],
        )
        make = partial(_align, config, rewards.base, data, q, eval_q, writer, f"rapl@{b}")
        rewards.encoders[b], history = stage.run(make, _save_aligned, _load_aligned)
        val = [h.get("val_accuracy") for h in history]
        rows.append(score.ot("rapl", b, rewards.encoders[b].embed, since, align_val_accuracy=val))
        for inputs in config.rlhf.inputs:
            since = time.time()
            stage = rewards.stages[f"rlhf_{inputs}", b] = Stage(
                f"rlhf[{inputs}@{b}]",
                out_dir / "rlhf" / f"{inputs}@{b}.pt",
                key=_key(config, RLHF_KEY, budget=b, inputs=inputs),
                after=[data_stage],
            )
            fit_on = data.ds if inputs == "state" else embed_ds
            log_dir = out_dir / "tb" / f"rlhf_{inputs}@{b}"
            make = partial(_fit_rlhf, config, fit_on, q, log_dir, f"rlhf[{inputs}@{b}]")
            model = rewards.rlhf[inputs, b] = stage.run(make, save_reward, load_reward)
            rows.append(score.mlp(f"rlhf_{inputs}", b, model, fit_on, since))

    rl_rows: list[dict] = []
    if config.rl.enabled:
        if "gt" in config.rl.rewards:  # scored too: the ceiling of the held-out metrics
            rows.append(score.row("gt", 0, score.gt, time.time()))
        rl_rows = _rl_stage(config, data, rewards, data_stage, out_dir)
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


def _rl_stage(
    config: Config, data: Videos, rewards: Rewards, data_stage: Stage, out_dir: Path
) -> list[dict]:
    """One SAC run (a stage) per reward of ``rl.rewards``; returns their rows."""
    setup = functools.cache(partial(_rl_setup, config, data))  # made once, when first needed
    key = _key(config, RL_KEY, rl=config.rl.model_dump(mode="json", exclude={"rewards"}))
    rows = []
    for name in config.rl.rewards:
        budget = config.rl_budget if name in ("rapl", "rlhf_state") else 0
        stage = Stage(
            f"rl[{name}]",
            out_dir / "rl" / f"{name}.json",
            key={**key, "reward": name},
            after=[data_stage, *([rewards.stages[name, budget]] if budget else [])],
        )
        make = partial(_rl_run, setup, partial(_rl_reward, config, data, rewards), name, out_dir)
        rows.append({**stage.run(make, _save_json, _load_json), "budget": budget})
    return rows


def _rl_setup(config: Config, data: Videos) -> RLSetup:
    horizon = config.rl.max_episode_steps or data.horizon
    if not config.rl.fixed_configuration:
        return RLSetup(config, horizon, [data.videos[d] for d in data.demos])
    with step(f"render[rl scene] {config.num_demos} demos"):
        videos, success, episodes = scene_demos(config, horizon)
    return RLSetup(config, horizon, videos, episodes, success)


def _rl_reward(config: Config, data: Videos, rewards: Rewards, name: str, setup) -> RLReward:
    """The reward ``name`` SAC is trained on; learned ones mapped to ``rl.reward_range``."""
    low, high = config.rl.reward_range
    if name == "gt":
        return GroundTruthReward()
    if name == "rlhf_state":
        model = rewards.rlhf["state", config.rl_budget]
        states = np.concatenate([data.ds[int(i)].state for i in data.train_ids])
        return StateRLReward(model, *affine_to_range(model.predict(states), low, high))
    enc = rewards.encoders[config.rl_budget] if name == "rapl" else rewards.base
    ot = OTReward(enc.embed, setup.demos, eps=config.ot_eps)
    train_rewards = [ot.reward(data.videos[i]) for i in data.train_ids]
    ot.affine = affine_to_range(np.concatenate(train_rewards), low, high)
    return OTRLReward(ot, config)


def _rl_run(setup, reward, name: str, out_dir: Path) -> dict:
    # the scene demos are rendered only when some SAC run is not reused
    return run_sac(setup(), name, reward(name, setup()), out_dir / "tb")


def _save_json(row: dict, path: Path) -> None:
    path.write_text(json.dumps(row, indent=1, default=float) + "\n")


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _tensorboard(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))
