"""Recipe ``rapl``: preference-aligned visual encoders and OT visual rewards (Tian et al. 2024).

    collect Meta-World episodes (scripted expert, noisy, goal-mismatched, random, other-task)
    -> render them (camera, size, frame stride) -> split trajectories into train / held-out
    -> a teacher ranks triplets of train videos (full episodes) and pairs of held-out videos
    -> per label budget: align the encoder with the triplets (RAPL) and fit RLHF baselines
    -> evaluate each reward on held-out videos: Spearman with the GT reward, preference accuracy
    -> (optional) SAC on state observations with the RAPL OT reward from pixels; success rate

Rewards compared (all on the same frames, demos and labels):

=================  ===============================================================
``rapl@b``         OT reward with the encoder aligned on ``b`` triplets
``unaligned``      OT reward with the same encoder at initialisation (no alignment)
``pixels``         OT reward on raw pixels (8x8 average-pooled frames as features)
``rlhf_state@b``   MLPReward on the 39-d states, BT on the same ``b`` triplets
``rlhf_embed@b``   MLPReward on the unaligned encoder's frame embeddings, same labels
=================  ===============================================================
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from robopref.config import Device, Seed, StrictModel
from robopref.data import Trajectory, TrajectoryDataset, load_dataset, save_dataset
from robopref.envs import CollectConfig, collect_dataset, evaluate_policy, make_env, run_episode
from robopref.envs.render import (
    FrameRenderer,
    RenderConfig,
    render_dataset,
    replay_frames,
    strided_video,
)
from robopref.envs.tasks import ScriptedPolicy
from robopref.methods.common import start_run
from robopref.policies.online.rlpd import RLPDConfig
from robopref.rewards import MLPReward, RewardTrainer, RewardTrainerConfig
from robopref.rewards.ot_reward import OTReward, affine_to_range
from robopref.rewards.visual import AlignConfig, VisualEncoder, align_encoder, top1_accuracy
from robopref.teachers import label_queries, make_teacher
from robopref.utils import atomic_path

log = logging.getLogger(__name__)


class EncoderConfig(StrictModel):
    backbone: Literal["cnn", "resnet18"] = "cnn"
    out_dim: int = Field(32, ge=1)
    weights_path: str | None = None  # local ResNet-18 state_dict (nothing is downloaded)
    freeze_backbone: bool = False
    cnn_width: int = Field(16, ge=1)


class RLHFConfig(StrictModel):
    inputs: list[Literal["state", "embedding"]] = Field(
        default_factory=lambda: ["state", "embedding"]
    )
    hidden: tuple[int, ...] = (64, 64)
    trainer: RewardTrainerConfig = Field(
        default_factory=lambda: RewardTrainerConfig(epochs=200, lr=1e-3, batch_size=32, quiet=True)
    )


class RLConfig(StrictModel):
    enabled: bool = False
    # sac: SB3's SAC (demos only with demos_in_buffer); rlpd: SAC with the scene demos used the
    # RLPD way (half of every batch from a separate demo buffer, LayerNorm critics, ``rlpd.utd``
    # gradient steps per transition, ``rlpd.num_envs`` vector envs); see robopref/policies/online/rlpd.py
    algo: Literal["sac", "rlpd"] = "sac"
    rlpd: RLPDConfig = Field(default_factory=RLPDConfig)
    # rewards SAC is trained on; learned ones use the labels of ``budget`` triplets
    rewards: list[Literal["rapl", "unaligned", "rlhf_state", "gt"]] = Field(
        default_factory=lambda: ["rapl", "unaligned", "rlhf_state", "gt"]
    )
    budget: int | None = None  # default: the largest of ``budgets``
    # one scene for training and evaluation: collect.scene_seed when the data was collected in one
    # scene, else reset(seed=configuration_seed + seed); ``num_demos`` scripted demos of that
    # scene are the OT reward's demos. False: a new configuration every episode, the data's
    # expert episodes as demos
    fixed_configuration: bool = True
    configuration_seed: Seed = 10_000
    demo_noise: float = Field(0.1, ge=0)  # action noise of the scene's demos after the first
    # SACfD-style: the scene demos' transitions, rewarded by the reward SAC is trained on, are put
    # in the replay buffer before training (only with fixed_configuration)
    demos_in_buffer: bool = False
    # learned rewards are mapped affinely so that the 5% / 95% quantiles of their per-frame values
    # on the train videos become these (Meta-World's GT reward lies in [0, 10] per step)
    reward_range: tuple[float, float] = (0.0, 10.0)
    mode: Literal["episode", "prefix"] = "episode"
    total_steps: int = Field(20000, ge=1)
    learning_starts: int = Field(1000, ge=0)
    # without fixed_configuration: episodes of new scenes; with it: the deterministic policy gets
    # 1 episode of the scene, the sampled one eval_episodes (sampled_success_rate)
    eval_episodes: int = Field(10, ge=1)
    max_episode_steps: int | None = None  # default: the data's episode length

    @model_validator(mode="after")
    def _rlpd_needs_scene_demos(self) -> RLConfig:
        if self.algo == "rlpd" and not self.fixed_configuration:
            raise ValueError(
                "rl.algo: 'rlpd' needs rl.fixed_configuration: true (its demos are the scene's), "
                "found fixed_configuration: false"
            )
        return self


class Config(StrictModel):
    method: str = "rapl"
    task: str
    collect: CollectConfig | None = None  # default: CollectConfig(tasks=[task])
    dataset: str | None = None  # load this HDF5 instead of collecting (rendered if no images)
    save_data: bool = False  # write the rendered dataset to out_dir/dataset.h5
    render: RenderConfig = Field(default_factory=lambda: RenderConfig(frame_stride=5))
    num_demos: int = Field(5, ge=1)  # expert episodes used as anchors and reward demos
    test_fraction: float = Field(0.3, gt=0, lt=1)
    budgets: list[int] = Field(default_factory=lambda: [50, 150, 300])  # labelled triplets
    query_k: int = Field(3, ge=2)
    eval_queries: int = Field(300, ge=1)  # held-out oracle pairs
    teacher: str | dict = "oracle"
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    ot_eps: float = Field(0.05, gt=0)
    rlhf: RLHFConfig = Field(default_factory=RLHFConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    seed: Seed = 0
    device: Device = "auto"
    num_threads: int | None = None

    @model_validator(mode="after")
    def _one_task(self) -> Config:
        if self.rl.budget is not None and self.rl.budget not in self.budgets:
            raise ValueError(
                f"rl.budget: expected one of budgets {self.budgets}, found {self.rl.budget}"
            )
        if self.collect is not None and self.collect.tasks != [self.task]:
            raise ValueError(
                f"collect.tasks: expected [{self.task!r}] (the recipe's task), "
                f"found {self.collect.tasks}"
            )
        return self


def _dataset(config: Config) -> TrajectoryDataset:
    collect = config.collect or CollectConfig(tasks=[config.task])
    if config.dataset is not None:
        ds = load_dataset(config.dataset)
    else:
        ds = collect_dataset(collect, progress=False)
    if not all(isinstance(t.observations, dict) and "image" in t.observations for t in ds):
        # check_states=False: Meta-World's scripted policies of some tasks (door-open, ...) edit
        # the observation in place, which corrupts stored states of other_task episodes (reported
        # to the envs room); the replay itself is exact.
        ds = render_dataset(
            ds,
            config.render,
            collect.max_episode_steps,
            collect.goal_observable,
            check_states=False,
        )
    return ds


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _frame_gt(traj: Trajectory, stride: int) -> np.ndarray:
    """GT reward of each rendered frame: frame t shows the state reached by action t - 1."""
    idx = np.maximum(np.arange(0, len(traj), stride) - 1, 0)
    return traj.rewards[idx]


def _evaluate(frame_rewards: dict[int, np.ndarray], gt: dict[int, np.ndarray], eval_q) -> dict:
    """Spearman (per frame pooled, per episode return) and held-out top-1 accuracy."""
    ids = sorted(frame_rewards)
    returns = np.zeros(max(ids) + 1)
    for i in ids:
        returns[i] = frame_rewards[i].sum()
    return {
        "spearman_step": _spearman(
            np.concatenate([frame_rewards[i] for i in ids]), np.concatenate([gt[i] for i in ids])
        ),
        "spearman_episode": _spearman(
            [frame_rewards[i].sum() for i in ids], [gt[i].sum() for i in ids]
        ),
        "accuracy": top1_accuracy(returns[eval_q.traj_index], eval_q.labels),
    }


def _pixel_embed(frames: np.ndarray) -> np.ndarray:
    """Raw-pixel features: 8x8 average-pooled RGB frames, ``[..., 192]``."""
    f = np.asarray(frames, dtype=np.float32) / 255.0
    H, W = f.shape[-3:-1]
    f = f[..., : H // 8 * 8, : W // 8 * 8, :]
    f = f.reshape(*f.shape[:-3], 8, H // 8, 8, W // 8, 3).mean((-4, -2))
    return f.reshape(*f.shape[:-3], -1)


def _ot_frame_rewards(embed, videos, demos, test_ids, eps) -> dict[int, np.ndarray]:
    reward = OTReward(embed, [videos[d] for d in demos], eps=eps)
    return {int(i): reward.reward(videos[i]) for i in test_ids}


def _embedding_dataset(ds: TrajectoryDataset, encoder: VisualEncoder, stride: int):
    """The dataset with ``state`` replaced by frame embeddings ``[T, d]`` (held per stride)."""
    out = []
    for traj in ds:
        emb = encoder.embed(strided_video(traj))
        out.append(
            dataclasses.replace(traj, observations=np.repeat(emb, stride, axis=0)[: len(traj)])
        )
    return TrajectoryDataset(out)


def _rlhf(ds, train_q, test_ids, stride, cfg: Config, seed: int):
    """Fit an MLP reward on ``ds``'s ``state`` (states or frame embeddings) with BT on the labels;
    returns the held-out per-frame rewards and the model."""
    obs_dim = ds[0].state.shape[1]
    model = MLPReward(obs_dim, 0, hidden=cfg.rlhf.hidden)
    tc = cfg.rlhf.trainer.model_copy(update={"seed": seed, "device": cfg.device})
    trainer = RewardTrainer(model, tc)
    trainer.fit(ds, train_q)
    rewards = {
        int(i): model.predict(ds[int(i)].state[::stride]).astype(np.float64) for i in test_ids
    }
    return rewards, model


def _rl_scene(config: Config) -> int:
    """The reset seed of the RL scene: the data's scene when it was collected in one."""
    if config.collect is not None and config.collect.scene_seed is not None:
        return config.collect.scene_seed
    return config.rl.configuration_seed + config.seed


def _scene_demos(config: Config, horizon: int) -> tuple[list[np.ndarray], float, list]:
    """``num_demos`` scripted-expert videos ``[T', H, W, 3]`` of the RL scene (the first without
    action noise), the fraction of them that succeed, and their episodes (states, actions)."""
    scene = _rl_scene(config)
    env = make_env(config.task, seed=scene, max_episode_steps=horizon)
    policy = ScriptedPolicy(config.task)
    videos, successes, episodes = [], [], []
    with FrameRenderer(env, config.render) as renderer:
        for k in range(config.num_demos):
            noise = config.rl.demo_noise if k else 0.0
            ep = run_episode(
                env, policy, seed=scene, noise=noise, rng=np.random.default_rng([scene, k])
            )
            frames = replay_frames(env, renderer, scene, ep.actions)
            videos.append(frames[:: config.render.frame_stride])
            successes.append(bool(ep.successes.any()))
            episodes.append(ep)
    env.close()
    return videos, float(np.mean(successes)), episodes


def _rl_env(config: Config, wrap, horizon: int):
    """One training env: the RL scene (when ``rl.fixed_configuration``), reward by ``wrap``."""
    from robopref.envs.wrappers import FixedConfigurationWrapper

    scene = _rl_scene(config)
    env = make_env(config.task, seed=scene, max_episode_steps=horizon)
    if config.rl.fixed_configuration:
        env = FixedConfigurationWrapper(env, scene)
    return wrap(env) if wrap is not None else env


def _train_sac(
    config: Config, reward_name: str, wrap, horizon: int, log_dir: Path, demo_transitions=()
) -> dict:
    """SAC on state observations with the reward that ``wrap(env)`` installs (``None``: GT);
    TensorBoard logs (SB3's, including the Monitor's GT-free reward curves) go to ``log_dir``.
    ``demo_transitions`` (``(obs, next_obs, action, reward)`` tuples) are put in the replay buffer
    before training."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import CallbackList

    from robopref.envs.wrappers import OTRewardWrapper
    from robopref.policies.online.callbacks import GroundTruthLogger, OTRelabelCallback

    rl = config.rl
    scene = _rl_scene(config)
    env = _rl_env(config, wrap, horizon)
    gt_logger = GroundTruthLogger()
    callbacks = [gt_logger]
    if isinstance(env, OTRewardWrapper) and rl.mode == "episode":
        callbacks.insert(0, OTRelabelCallback())
    if rl.algo == "rlpd":
        from stable_baselines3.common.vec_env import DummyVecEnv

        from robopref.policies.online.rlpd import demo_buffer, make_rlpd_sac

        def make(k: int):
            if k == 0:
                return lambda: env
            return lambda: _rl_env(config, wrap, horizon)

        vec = DummyVecEnv([make(k) for k in range(rl.rlpd.num_envs)])
        demos = demo_buffer(demo_transitions, env.observation_space, env.action_space)
        agent = make_rlpd_sac(vec, demos, rl.rlpd, learning_starts=rl.learning_starts,
                              seed=config.seed, device=config.device,
                              tensorboard_log=str(log_dir))  # fmt: skip
    else:
        agent = SAC("MlpPolicy", env, learning_starts=rl.learning_starts, seed=config.seed,
                    device=config.device, verbose=0, tensorboard_log=str(log_dir))  # fmt: skip
        for obs, next_obs, action, reward in demo_transitions:
            # done=False: demo episodes end by the time limit, which SAC bootstraps through
            agent.replay_buffer.add(obs[None], next_obs[None], action[None], np.array([reward]),
                                    np.array([False]), [{}])  # fmt: skip
    started = time.time()
    agent.learn(rl.total_steps, callback=CallbackList(callbacks), tb_log_name=f"sac_{reward_name}")
    train_seconds = time.time() - started
    env.close()

    def policy(obs):
        return agent.predict(obs, deterministic=True)[0]

    if rl.fixed_configuration:
        res = evaluate_policy(policy, config.task, 1, seed=scene, max_episode_steps=horizon)
        # the deterministic policy in one scene gives one episode; the sampled policy's success
        # over eval_episodes episodes of the scene says how reliably it got there
        sampled = [
            evaluate_policy(lambda obs: agent.predict(obs, deterministic=False)[0], config.task,
                            1, seed=scene, max_episode_steps=horizon)["success_rate"]
            for _ in range(rl.eval_episodes)
        ]  # fmt: skip
        res["sampled_success_rate"] = float(np.mean(sampled))
        res["sampled_episodes"] = len(sampled)
    else:
        res = evaluate_policy(policy, config.task, rl.eval_episodes, seed=10_000 + config.seed,
                              max_episode_steps=horizon)  # fmt: skip
    last = slice(-20, None)  # the last 20 training episodes (stochastic policy), GT terms
    return {
        "reward": reward_name,
        "seconds": time.time() - started,
        "train_seconds": train_seconds,
        "algo": rl.algo,
        "env_steps": int(agent.num_timesteps),
        "gradient_steps": int(agent._n_updates),
        "buffer_transitions": int(agent.replay_buffer.size()),
        **res,
        "train_gt_return": float(np.mean(gt_logger.returns[last])) if gt_logger.returns else 0.0,
        "train_success": float(np.mean(gt_logger.successes[last])) if gt_logger.successes else 0.0,
    }


def _run_rl(config, ds, videos, train_ids, stride, T, encoders, base, rlhf_models, out_dir):
    """SAC on each of ``config.rl.rewards``; learned rewards mapped to ``rl.reward_range``."""
    from robopref.envs.wrappers import OTRewardWrapper, StateRewardWrapper, replay_rewards

    rl = config.rl
    budget = rl.budget or max(config.budgets)
    horizon = rl.max_episode_steps or T
    demo_success = float("nan")
    if rl.fixed_configuration:
        demos, demo_success, demo_episodes = _scene_demos(config, horizon)
    else:
        demos = [videos[d] for d in _expert_ids(ds)[: config.num_demos]]
        demo_episodes = []
    low, high = rl.reward_range
    rows = []

    def gt_demo_reward(ep, video, next_obs):
        return ep.rewards

    for name in rl.rewards:
        # wrap(env) installs the reward; demo_reward(episode, video, next_obs) -> [T] rewards the
        # scene demos' transitions with the same reward (for rl.demos_in_buffer)
        wrap, demo_reward = None, gt_demo_reward
        if name in ("rapl", "unaligned"):
            enc = encoders[budget] if name == "rapl" else base
            ot = OTReward(enc.embed, demos, eps=config.ot_eps)
            train_rewards = [ot.reward(videos[i]) for i in train_ids]
            ot.affine = affine_to_range(np.concatenate(train_rewards), low, high)

            def wrap(env, ot=ot):
                return OTRewardWrapper(env, ot, config.render, mode=rl.mode)

            def demo_reward(ep, video, next_obs, wrap=wrap):
                # the demo's actions replayed through the wrapper: frames rendered *after* each
                # action, as online (the demo video's frames come before each action, so rewarding
                # with them would pay demo transitions one frame stride late)
                env = _rl_env(config, wrap, horizon)
                try:
                    return replay_rewards(env, _rl_scene(config), ep.actions, ep.observations)
                finally:
                    env.close()

        elif name == "rlhf_state":
            model = rlhf_models[budget]
            states = np.concatenate([ds[int(i)].state for i in train_ids])
            a, b = affine_to_range(model.predict(states), low, high)

            def scaled(x, model=model, a=a, b=b):
                return a * model.predict(x).astype(np.float64) + b

            def wrap(env, scaled=scaled):
                return StateRewardWrapper(env, lambda obs: float(scaled(obs[None])[0]))

            def demo_reward(ep, video, next_obs, scaled=scaled):
                return scaled(next_obs)

        transitions = []
        if rl.demos_in_buffer or rl.algo == "rlpd":
            for ep, video in zip(demo_episodes, demos):
                nxt = _next_observations(ep)
                transitions += list(
                    zip(ep.observations, nxt, ep.actions, demo_reward(ep, video, nxt))
                )
        row = _train_sac(config, name, wrap, horizon, out_dir / "tensorboard", transitions)
        row.update(
            budget=budget if name in ("rapl", "rlhf_state") else 0, demo_success=demo_success
        )
        rows.append(row)
        log.info("rl: %s", row)
    return rows


def run_gt_rl(config: Config, log_dir: Path) -> dict:
    """The RL stage alone on Meta-World's GT reward, in the RL scene with its scripted demos (for
    ``rl.demos_in_buffer`` / ``rl.algo: rlpd``): no data, labels or learned rewards. A baseline
    for the learned rewards, and a check that the RL settings can solve the task at all."""
    collect = config.collect or CollectConfig(tasks=[config.task])
    horizon = config.rl.max_episode_steps or collect.max_episode_steps
    _, demo_success, episodes = _scene_demos(config, horizon)
    transitions = []
    for ep in episodes:
        nxt = _next_observations(ep)
        transitions += list(zip(ep.observations, nxt, ep.actions, ep.rewards))
    row = _train_sac(config, "gt", None, horizon, Path(log_dir), transitions)
    row.update(demo_success=demo_success, task=config.task, seed=config.seed)
    return row


def _next_observations(ep) -> np.ndarray:
    """``[T, 39]`` the observation after each action of an :class:`~robopref.envs.Episode`."""
    return np.concatenate([ep.observations[1:], ep.final_observation[None]])


def _expert_ids(ds: TrajectoryDataset) -> list[int]:
    return [i for i, t in enumerate(ds) if t.metadata.get("mode") == "expert"]


def run(config: Config, out_dir: Path) -> dict:
    """Run the recipe; write ``results.json`` and ``results.md`` to ``out_dir``; return results."""
    out_dir, rng = start_run(config, out_dir)
    t0 = time.time()
    ds = _dataset(config)
    if config.save_data:
        save_dataset(ds, out_dir / "dataset.h5")
    timings = {"data_s": time.time() - t0}
    log.info("data: %d trajectories in %.0f s", len(ds), timings["data_s"])
    stride = int(ds[0].metadata.get("image_stride", 1))
    videos = np.stack([strided_video(t) for t in ds])  # [N, T', H, W, 3]
    lengths = {len(t) for t in ds}
    if len(lengths) != 1:
        raise ValueError(
            f"dataset: expected episodes of one length, found lengths {sorted(lengths)}"
        )
    T = lengths.pop()

    experts = _expert_ids(ds)
    if len(experts) < config.num_demos:
        raise ValueError(
            f"num_demos: expected <= {len(experts)} (expert episodes in the data), found "
            f"{config.num_demos}"
        )
    demos = experts[: config.num_demos]
    rest = rng.permutation([i for i in range(len(ds)) if i not in demos])
    n_test = max(2, int(round(config.test_fraction * len(rest))))
    test_ids, train_ids = np.sort(rest[:n_test]), np.sort(rest[n_test:])
    teacher = make_teacher(config.teacher)
    train_q = label_queries(ds, teacher, max(config.budgets), k=config.query_k, segment_length=T,
                            seed=config.seed, trajectory_ids=train_ids)  # fmt: skip
    eval_q = label_queries(ds, make_teacher("oracle"), config.eval_queries, k=2, segment_length=T,
                           seed=config.seed + 1, trajectory_ids=test_ids)  # fmt: skip
    gt = {int(i): _frame_gt(ds[int(i)], stride) for i in test_ids}

    rows: list[dict] = []

    def add(name: str, budget: int, frame_rewards: dict, started: float, **extra) -> None:
        variant = f"{name}@{budget}" if budget else name
        row = {"variant": variant, "budget": budget, **_evaluate(frame_rewards, gt, eval_q)}
        row.update(seconds=time.time() - started, **extra)
        rows.append(row)
        log.info("%s: %s", variant, {k: v for k, v in row.items() if k != "align_val_accuracy"})

    started = time.time()
    add(
        "pixels",
        0,
        _ot_frame_rewards(_pixel_embed, videos, demos, test_ids, config.ot_eps),
        started,
    )

    torch.manual_seed(config.seed)
    base = VisualEncoder(**config.encoder.model_dump())
    started = time.time()
    add(
        "unaligned",
        0,
        _ot_frame_rewards(base.embed, videos, demos, test_ids, config.ot_eps),
        started,
    )
    (out_dir / "encoders").mkdir(exist_ok=True)
    base.save(out_dir / "encoders" / "unaligned.pt")
    embed_ds = _embedding_dataset(ds, base, stride) if "embedding" in config.rlhf.inputs else None

    encoders: dict[int, VisualEncoder] = {}
    rlhf_models: dict[int, MLPReward] = {}
    for b in sorted(config.budgets):
        q = train_q.subset(np.arange(min(b, train_q.num_queries)))
        started = time.time()
        enc = copy.deepcopy(base)
        align_cfg = config.align.model_copy(update={"seed": config.seed, "device": config.device})
        hist = align_encoder(enc, videos, q.traj_index, q.labels, demos, align_cfg,
                             eval_q.traj_index, eval_q.labels)  # fmt: skip
        enc.cpu()
        encoders[b] = enc
        enc.save(out_dir / "encoders" / f"rapl@{b}.pt")
        add("rapl", b, _ot_frame_rewards(enc.embed, videos, demos, test_ids, config.ot_eps),
            started, align_val_accuracy=[h.get("val_accuracy") for h in hist])  # fmt: skip
        for inputs in config.rlhf.inputs:
            started = time.time()
            data = ds if inputs == "state" else embed_ds
            frame_rewards, model = _rlhf(data, q, test_ids, stride, config, config.seed)
            if inputs == "state":
                rlhf_models[b] = model
            add(f"rlhf_{inputs}", b, frame_rewards, started)

    rl_rows = []
    if config.rl.enabled:
        if "rlhf_state" in config.rl.rewards and "state" not in config.rlhf.inputs:
            raise ValueError("rl.rewards: 'rlhf_state' needs 'state' in rlhf.inputs")
        rl_rows = _run_rl(
            config, ds, videos, train_ids, stride, T, encoders, base, rlhf_models, out_dir
        )
        # RL success goes on the reward rows too, so suite reports carry it
        for r in rl_rows:
            variant = f"{r['reward']}@{r['budget']}" if r["budget"] else r["reward"]
            match = [row for row in rows if row["variant"] == variant]
            if match:
                match[0].update(success_rate=r["success_rate"], rl_return=r["mean_return"])
            else:
                rows.append({"variant": variant, "budget": 0, "success_rate": r["success_rate"],
                             "rl_return": r["mean_return"]})  # fmt: skip

    results = {
        "task": config.task,
        "num_trajectories": len(ds),
        "episode_length": T,
        "frames_per_video": int(videos.shape[1]),
        "image_shape": list(videos.shape[2:]),
        "num_demos": len(demos),
        "num_train": len(train_ids),
        "num_test": len(test_ids),
        "rows": rows,
        "rl": rl_rows,
        "timings": {**timings, "total_s": time.time() - t0},
    }
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2, default=float))
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(results_table(results))
    return results


def results_table(results: dict) -> str:
    """Markdown table of the reward rows (and RL rows) of a results dict."""
    lines = [
        f"Task {results['task']}: {results['num_train']} train / {results['num_test']} held-out "
        f"videos of {results['frames_per_video']} frames {results['image_shape']}, "
        f"{results['num_demos']} demos",
        "",
        "| reward | triplets | Spearman (step) | Spearman (episode) | held-out accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if "spearman_step" not in r:
            continue
        lines.append(
            f"| {r['variant']} | {r['budget']} | {r['spearman_step']:.3f} | "
            f"{r['spearman_episode']:.3f} | {r['accuracy']:.3f} |"
        )
    if results.get("rl"):
        lines += [
            "",
            "| RL reward | triplets | success rate | mean GT return |",
            "|---|---|---|---|",
        ]
        for r in results["rl"]:
            lines.append(
                f"| {r['reward']} | {r['budget']} | {r['success_rate']:.2f} | {r['mean_return']:.1f} |"
            )
    return "\n".join(lines) + "\n"
