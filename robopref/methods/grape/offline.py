"""Recipe ``grape_offline``: trajectory preference alignment from a labelled dataset, no simulator.

1. Data: an imported dataset (robopref's HDF5 file, or a LeRobot / robomimic folder imported into
   the run folder) and its preference queries: the ones stored with it (``robopref label`` or
   ``robopref label-ui``) or a simulated teacher's, labelled here. Each query's items are
   segments of episodes; a fraction of the queries is held out. Actions are scaled to [-1, 1]
   per dimension by the data's 1st-99th percentiles (as OpenVLA does) before tokenisation.
2. SFT: behaviour cloning on every episode's action tokens (a tiny random LM, or LoRA on a local
   image-text-to-text model).
3. Alignment on the training queries against the frozen SFT policy: TPO (the trajectory-level
   DPO loss over segments), step-level DPO, or rejection-sampling fine-tuning on the preferred
   segments.
4. Metrics, before (SFT) and after: the implicit reward ``beta * [log pi - log pi_sft]`` of each
   segment and its preference accuracy on the training and held-out queries (ties count half;
   SFT's is 0.5 by construction), and the action NLL per token of the preferred segments.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from robopref.config import ConfigError
from robopref.methods.common import Column, ReportSpec, RunResult, Stage, Table, start_run
from robopref.methods.grape.offline_config import GrapeOfflineConfig
from robopref.progress import is_quiet

Config = GrapeOfflineConfig


def run(config: GrapeOfflineConfig, out_dir: str | Path) -> RunResult:
    """Data and preferences, SFT, the alignment step, then accuracy and NLL before and after."""
    import torch

    from robopref.utils import resolve_device

    out_dir, _ = start_run(config, out_dir)
    device = resolve_device(config.device)
    dataset, queries = load_data(config, out_dir)
    bounds = action_bounds(dataset)
    episodes = [_as_policy_input(config, t, bounds) for t in dataset]
    segments, groups = segment_items(config, dataset, queries, bounds)
    train, held = split_queries(len(groups), config.labels.held_out, config.seed)
    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))
    ckpt = out_dir / "checkpoints"
    vlm = config.model.path is not None
    sft = Stage("sft", ckpt / ("sft" if vlm else "sft.pt"), key=_sft_key(config),
                reads=[config.dataset], resume=config.resume)  # fmt: skip
    sft.run(
        make=partial(train_sft, config, episodes, bounds, device, writer),
        save=_save,
        load=lambda path: None,
    )
    learn = Stage(config.learner.name, ckpt / (config.learner.name + ("" if vlm else ".pt")),
                  key={"learner": config.learner, "lora": config.lora, "labels": config.labels},
                  after=[sft], resume=config.resume)  # fmt: skip
    learn.run(
        make=lambda: align(config, sft.path, segments, [groups[i] for i in train], device, writer),
        save=_save,
        load=lambda path: None,
    )
    policy = _load_aligned(config, sft.path, learn.path, device)
    with torch.no_grad():
        rows = evaluate_items(config, policy, segments, groups, {"train": train, "held-out": held})
    if writer is not None:
        writer.close()
    return _result(config, rows, len(dataset), len(groups), str(device), out_dir, ckpt)


# ---- data -------------------------------------------------------------------------------------


def load_data(config: GrapeOfflineConfig, out_dir: Path) -> tuple[Any, Any]:
    """The dataset (a folder is imported into the run folder once) and its labelled queries:
    the stored ones, or the teacher's (labelled here: cheap, and seeded)."""
    from robopref.data import load_dataset, load_queries
    from robopref.data.importers import import_to_file

    src = Path(config.dataset)
    if not src.exists():
        raise ConfigError(f"dataset: {src} does not exist (an HDF5 file or a LeRobot folder)")
    file = src
    if src.is_dir():
        file = out_dir / "data.h5"
        stage = Stage("import", file, key={"dataset": str(src)}, reads=[src], resume=config.resume)
        if not stage.is_current():
            stage.forget()
            import_to_file(src, file)
            stage.done()
    dataset = load_dataset(file)
    labels = config.labels
    if labels.source == "teacher":
        from robopref.teachers import label_queries, make_teacher

        teacher = make_teacher(labels.teacher, seed=config.seed)
        queries = label_queries(dataset, teacher, labels.num_queries,
                                segment_length=labels.segment_length, seed=config.seed)  # fmt: skip
    else:
        queries = load_queries(file)
        if queries is None or queries.label_kind == "none":
            raise ConfigError(
                f"dataset: {src} carries no preferences (label it with 'robopref label' or "
                "'robopref label-ui', or set labels.source=teacher)"
            )
    return dataset, queries


def action_bounds(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension 1st and 99th percentiles of the actions (widened where they coincide)."""
    actions = np.concatenate([np.asarray(t.actions, dtype=np.float64) for t in dataset])
    low, high = np.percentile(actions, 1, axis=0), np.percentile(actions, 99, axis=0)
    flat = high - low < 1e-6
    return np.where(flat, low - 1, low), np.where(flat, high + 1, high)


def _as_policy_input(config: GrapeOfflineConfig, traj: Any, bounds: tuple) -> Any:
    """A trajectory with ``{"image", "state"}`` observations and actions scaled to [-1, 1]."""
    from robopref.data import Trajectory

    m, obs = config.model, traj.observations
    obs = obs if isinstance(obs, dict) else {"state": obs}
    keys = {"image": m.image_key, "state": m.state_key}
    needed = ["image"] * ("image" in m.obs_mode) + ["state"] * ("state" in m.obs_mode)
    mapped = {}
    for name in needed:
        if keys[name] not in obs:
            raise ConfigError(
                f"model.{name}_key: {keys[name]!r} is not an observation key of {config.dataset} "
                f"(found {sorted(obs)})"
            )
        mapped[name] = np.asarray(obs[keys[name]])
    low, high = bounds
    actions = np.clip(2 * (np.asarray(traj.actions) - low) / (high - low) - 1, -1, 1)
    instruction = traj.instruction or traj.task or "do the task"
    return Trajectory(mapped, actions.astype(np.float32), traj.rewards, instruction=instruction)


def segment_items(config: GrapeOfflineConfig, dataset: Any, queries: Any, bounds: tuple):
    """The distinct segments of the queries (policy inputs) and one ``(items, labels)`` group per
    query (indices into the segments; graded labels, a soft pair's ``[y, 1 - y]``)."""
    where: dict[tuple[int, int, int], int] = {}
    segments, groups = [], []
    for q in range(len(queries)):
        items, labels = [], []
        for k in np.flatnonzero(queries.mask[q]):
            key = (
                int(queries.traj_index[q, k]),
                int(queries.start[q, k]),
                int(queries.length[q, k]),
            )
            if key not in where:
                where[key] = len(segments)
                seg = dataset[key[0]].slice(key[1], key[2])
                segments.append(_as_policy_input(config, seg, bounds))
            items.append(where[key])
            labels.append(float(queries.labels[q, k]))
        if len(items) >= 2 and np.all(np.isfinite(labels)) and np.ptp(labels) > 0:
            groups.append((items, labels))
    if len(groups) < 4:
        raise ConfigError(
            f"dataset: {config.dataset}: {len(groups)} queries without ties, expected >= 4"
        )
    return segments, groups


def split_queries(n: int, held_out: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng([seed, 7]).permutation(n)
    cut = max(1, min(n - 1, round(n * held_out)))
    return sorted(order[cut:].tolist()), sorted(order[:cut].tolist())


# ---- training -----------------------------------------------------------------------------------


def build(config: GrapeOfflineConfig, episodes: list, device: Any) -> Any:
    from robopref.policies.vla import build_tiny_vla, load_vlm

    m, act_dim = config.model, episodes[0].actions.shape[1]
    if m.path is not None:
        try:
            policy = load_vlm(m.path, act_dim=act_dim, dtype=m.dtype,
                              gradient_checkpointing=m.gradient_checkpointing)  # fmt: skip
        except ValueError as e:
            raise ConfigError(f"model.path: {e}") from None
        return policy.to(device)
    obs = episodes[0].observations
    size = obs["image"].shape[1] if "image" in obs else 32
    state_dim = obs["state"].shape[1] if "state" in obs else 39
    instructions = sorted({t.instruction for t in episodes})
    return build_tiny_vla(instructions, obs_mode=m.obs_mode, hidden_size=m.hidden_size,
                          n_layers=m.n_layers, act_dim=act_dim, image_size=size,
                          state_dim=state_dim, seed=config.seed).to(device)  # fmt: skip


def train_sft(config: GrapeOfflineConfig, episodes: list, bounds: tuple, device: Any, writer):
    from robopref.policies.vla import apply_lora, sft_train

    policy = build(config, episodes, device)
    policy.action_bounds = bounds
    if config.model.path is not None:
        apply_lora(policy, **config.lora.model_dump())
    s = config.sft
    sft_train(policy, episodes, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
              seed=config.seed, writer=writer, progress=_shown(config), label="sft")  # fmt: skip
    return policy


def _sft_key(config: GrapeOfflineConfig) -> dict:
    return {"model": config.model, "sft": config.sft, "seed": config.seed,
            "lora": config.lora if config.model.path else None}  # fmt: skip


def _save(policy: Any, path: Path) -> None:
    from robopref.policies.vla import save_adapters, save_policy

    (save_adapters if policy.lora_settings else save_policy)(policy, path)


def _load_sft(config: GrapeOfflineConfig, sft_path: Path, device: Any) -> Any:
    """The SFT policy ready for new adapters (a local model: its SFT adapters merged)."""
    from robopref.policies.vla import load_policy, load_vlm

    if config.model.path is None:
        return load_policy(sft_path, device)
    m = config.model
    policy = load_vlm(m.path, adapters=sft_path, dtype=m.dtype, device=device,
                      gradient_checkpointing=m.gradient_checkpointing)  # fmt: skip
    return policy.merge_adapters(sft_path)


def align(config: GrapeOfflineConfig, sft_path: Path, segments: list, groups: list, device, writer):
    """The alignment step on the training groups, on new LoRA adapters over the SFT policy."""
    from robopref.policies.vla import apply_lora, sft_train, step_dpo_train, tpo_train

    policy = apply_lora(_load_sft(config, sft_path, device), **config.lora.model_dump())
    lr, opts = config.learner, dict(progress=_shown(config), label=f"align[{config.learner.name}]")
    common = dict(
        beta=lr.beta, epochs=lr.epochs, batch_size=lr.batch_size, lr=lr.lr, seed=config.seed
    )
    if lr.name == "tpo":
        tpo_train(policy, segments, groups, loss=lr.loss, normalize=lr.normalize,
                  sft_weight=lr.sft_weight, writer=writer, **common, **opts)  # fmt: skip
    elif lr.name == "step_dpo":
        pairs = [_best_worst(g) for g in groups]
        step_dpo_train(policy, segments, pairs, **common, **opts)
    else:
        best = sorted({_best_worst(g)[0] for g in groups})
        sft_train(policy, [segments[i] for i in best], epochs=lr.epochs, batch_size=64, lr=lr.lr,
                  seed=config.seed, fit_normalization=False, **opts)  # fmt: skip
    return policy


def _best_worst(group: tuple) -> tuple[int, int]:
    items, labels = group
    return items[int(np.argmax(labels))], items[int(np.argmin(labels))]


def _load_aligned(config: GrapeOfflineConfig, sft_path: Path, path: Path, device: Any) -> Any:
    from robopref.policies.vla import apply_lora, load_adapters, load_vlm

    if config.model.path is not None:
        m = config.model
        return load_vlm(m.path, adapters=path, dtype=m.dtype, device=device)
    policy = apply_lora(_load_sft(config, sft_path, device), **config.lora.model_dump())
    return load_adapters(policy, path)


# ---- metrics ------------------------------------------------------------------------------------


def evaluate_items(config, policy, segments: list, groups: list, splits: dict) -> list[dict]:
    """Rows per (policy, split): implicit-reward accuracy and the preferred segments' NLL."""
    from robopref.policies.vla import batch_token_logprobs

    def per_segment() -> tuple[np.ndarray, np.ndarray]:
        total, count = [], []
        for s in range(0, len(segments), 32):
            lp, mask = batch_token_logprobs(policy, segments[s : s + 32])
            total += lp.sum(1).cpu().tolist()
            count += mask.sum(1).cpu().tolist()
        return np.asarray(total), np.asarray(count)

    with policy.reference():
        ref, tokens = per_segment()
    after, _ = per_segment()
    beta, rows = config.learner.beta, []
    for name, logp in (("sft", ref), (config.learner.name, after)):
        reward = beta * (logp - ref)
        for split, idx in splits.items():
            acc, nll = [], []
            for items, labels in (groups[i] for i in idx):
                best = items[int(np.argmax(labels))]
                r = np.array([reward[j] for j in items])
                top = np.flatnonzero(np.isclose(r, r.max(), rtol=0, atol=1e-9))
                acc.append(float(best in {items[t] for t in top}) / len(top))
                nll.append(-logp[best] / tokens[best])
            rows.append({"policy": name, "split": split, "queries": len(idx),
                         "accuracy": float(np.mean(acc)),
                         "accuracy_se": float(np.std(acc) / np.sqrt(len(acc))),
                         "nll": float(np.mean(nll)), "seed": config.seed})  # fmt: skip
    return rows


COLUMNS = [Column("policy"), Column("split"), Column("queries"),
           Column("accuracy", "accuracy", ".3f", se="accuracy_se"),
           Column("nll", "NLL/token", ".3f")]  # fmt: skip


def _result(config, rows, episodes, queries, device, out_dir: Path, ckpt: Path) -> RunResult:
    note = ("Accuracy: the preferred segment has the higher beta * (log pi - log pi_sft), ties "
            "count half (SFT: 0.5); NLL per action token of the preferred segments.")  # fmt: skip
    return RunResult(
        method="grape_offline",
        rows=rows,
        tables=[Table("Preference alignment from a labelled dataset", COLUMNS, rows, note=note)],
        report=ReportSpec(
            metrics=["accuracy", "nll"],
            group_by=["policy", "split"],
            order={"policy": ["sft", config.learner.name]},
            chance={"accuracy": 0.5},
        ),  # fmt: skip
        summary={
            "title": "GRAPE offline alignment",
            "dataset": config.dataset,
            "episodes": episodes,
            "queries": queries,
            "device": device,
            "model": config.model.path or "tiny",
        },  # fmt: skip
        artefacts={"checkpoints": str(ckpt)},
        tensorboard=str(out_dir / "tb") if config.tensorboard else None,
    )


def _shown(config: GrapeOfflineConfig) -> bool:
    return config.progress and not is_quiet()


def _say(config: GrapeOfflineConfig, text: str) -> None:
    if _shown(config):
        print(text, file=sys.stderr, flush=True)
