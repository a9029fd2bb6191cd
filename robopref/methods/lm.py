"""Recipe ``lm``: preference fine-tuning of a language policy (DPO / LiPO / ... from one loss core).

``robopref run lm/tiny`` trains a tiny GPT-2 from scratch on the synthetic counting preferences
shipped beside the config (``robopref/configs/lm/data/``) in seconds on a CPU. Point
``model.path`` at a local Hugging Face folder to fine-tune a real causal LM (nothing is ever
downloaded).

The run ends with the held-out metrics before and after training (rows with ``variant`` = the
loss and ``when`` = before/after; a before/after table), the per-epoch training history in its
summary and TensorBoard logs under ``<out_dir>/tb``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from robopref.config import Device, InputPath, Seed, StrictModel
from robopref.losses import get_loss
from robopref.methods.common import Column, ReportSpec, RunResult, Table, start_run
from robopref.policies.lm import (
    LMPreferenceTrainer,
    WordTokenizer,
    build_tiny_model,
    encode_examples,
    load_preference_jsonl,
    load_pretrained,
    loss_options_for,
)


class TinyModelConfig(StrictModel):
    """A randomly initialised GPT-2 (used when ``model.path`` is not set); its vocabulary is
    the whitespace words of the train and eval files."""

    n_layer: int = 2
    """Transformer layers."""
    n_embd: int = 64
    """Embedding width."""
    n_head: int = 2
    """Attention heads."""
    n_positions: int = 64
    """Context length (grows to fit the longest prompt + response of the data)."""


class ModelConfig(StrictModel):
    """The policy: a local Hugging Face causal LM, or the tiny model."""

    path: str | None = None
    """Local Hugging Face model folder; None: the tiny model below."""
    dtype: str = "auto"
    """torch dtype for from_pretrained ("auto", "float32", "bfloat16", ...)."""
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    """The tiny model (model.path: null)."""


class LossConfig(StrictModel):
    """A loss of :mod:`robopref.losses` by name, with its keyword options."""

    name: str = "bt"
    """bt (DPO), slic, ipo, listnet, plackett_luce, lipo_lambda, ..."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the loss."""

    @model_validator(mode="after")
    def _known(self) -> LossConfig:
        # ValueError naming the loss or the bad option (IPO's beta is the recipe's beta)
        get_loss(self.name, **loss_options_for(self.name, self.options, beta=1.0))
        return self


class LMLoraConfig(StrictModel):
    """LoRA adapters on the language policy through peft."""

    enabled: bool = False
    """Train LoRA adapters instead of every weight."""
    rank: int = 8
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA alpha."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] | None = None
    """Module names to adapt; None: peft's default for the architecture (GPT-2: c_attn)."""


class LMConfig(StrictModel):
    """Preference fine-tuning of a causal LM on K graded responses per prompt."""

    method: Literal["lm"] = "lm"
    train_path: InputPath
    """JSONL: {"prompt", "responses": [K], "scores": [K]} per line."""
    eval_path: InputPath
    """Held-out prompts, same format."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The policy (the reference is its frozen copy)."""
    loss: LossConfig = Field(default_factory=LossConfig)
    """The preference loss."""
    beta: float = Field(0.1, gt=0)
    """Scales the log-ratio into the implicit reward."""
    length_normalize: bool = False
    """True: per-token mean log-ratios (TRL's IPO); False: summed (DPO's sequence log-ratio)."""
    lora: LMLoraConfig = Field(default_factory=LMLoraConfig)
    """LoRA adapters (off by default)."""
    lr: float = Field(1e-4, gt=0)
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clipping (None: off)."""
    epochs: int = Field(1, ge=0)
    """Passes over the training prompts."""
    batch_size: int = Field(8, ge=1)
    """Prompts per batch."""
    max_length: int | None = None
    """Truncate prompt + response to this many tokens (None: no limit)."""
    seed: Seed = 0
    """Seed of the tiny model's weights and of the batch order."""
    device: Device = "auto"
    """torch device ("auto": CUDA when present)."""
    num_threads: int | None = None
    """torch CPU threads; 1 is fastest for tiny models."""
    tensorboard: bool = True
    """Write TensorBoard logs under <out_dir>/tb."""
    save_model: bool = False
    """save_pretrained the policy (adapters only under LoRA) to <out_dir>/model."""
    progress: bool = True
    """Show a progress bar."""


Config = LMConfig  # every recipe module exposes ``Config``

METRICS = ["reward_top1", "reward_pair", "logp_top1", "logp_pair", "top_logp", "logp_margin"]
METRICS += ["top_logp_per_token", "loss"]


def run(config: LMConfig, out_dir: str | Path) -> RunResult:
    """Train on ``config.train_path`` and evaluate on ``config.eval_path`` before and after."""
    out_dir, _ = start_run(config, out_dir)
    train = load_preference_jsonl(config.train_path)
    held_out = load_preference_jsonl(config.eval_path)
    model, tokenizer = _model(config, train + held_out)
    log_dir = out_dir / "tb" if config.tensorboard else None
    trainer = LMPreferenceTrainer(
        model,
        tokenizer,
        loss=config.loss.name,
        loss_options=config.loss.options,
        beta=config.beta,
        length_normalize=config.length_normalize,
        lora=_peft_lora(config.lora),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        batch_size=config.batch_size,
        max_length=config.max_length,
        device=config.device,
        seed=config.seed,
        log_dir=log_dir,
        progress=config.progress,
    )
    start = time.perf_counter()
    before = trainer.evaluate(held_out, prefix="eval_before")
    history = trainer.train(train, epochs=config.epochs)
    after = trainer.evaluate(held_out, prefix="eval_after")
    seconds = time.perf_counter() - start
    artefacts = {}
    if config.save_model:
        trainer.save(out_dir / "model")
        artefacts["model"] = str(out_dir / "model")
    trainer.close()

    rows = [
        {"variant": config.loss.name, "when": when, "seed": config.seed, **metrics}
        for when, metrics in (("before", before), ("after", after))
    ]
    return RunResult(
        method="lm",
        rows=rows,
        tables=[_before_after(config, before, after)],
        report=ReportSpec(
            metrics=[m for m in METRICS if m in after],
            group_by=["variant", "when"],
            order={"when": ["before", "after"]},
            chance={"reward_pair": 0.5, "logp_pair": 0.5},
        ),
        summary={
            "title": f"lm: {config.loss.name}, beta={config.beta}",
            "loss": config.loss.name,
            "beta": config.beta,
            "lora": config.lora.enabled,
            "device": str(trainer.device),
            "num_train_prompts": len(train),
            "num_eval_prompts": len(held_out),
            "trainable_params": trainer.trainable_parameters(),
            "total_params": sum(p.numel() for p in trainer.policy.parameters()),
            "seconds": seconds,
            "history": history,
        },
        artefacts=artefacts,
        tensorboard=str(log_dir) if log_dir else None,
    )


def _model(config: LMConfig, examples: list) -> tuple[Any, Any]:
    """The policy and its tokenizer: a local model, or the tiny GPT-2 sized to fit the data."""
    if config.model.path is not None:
        return load_pretrained(config.model.path, dtype=config.model.dtype)
    tokenizer = WordTokenizer.from_examples(examples)
    longest = max(
        len(e.prompt_ids) + max(len(r) for r in e.response_ids)
        for e in encode_examples(examples, tokenizer, config.max_length)
    )
    tiny = config.model.tiny
    model = build_tiny_model(
        len(tokenizer),
        n_layer=tiny.n_layer,
        n_embd=tiny.n_embd,
        n_head=tiny.n_head,
        n_positions=max(tiny.n_positions, longest),
        seed=config.seed,
    )
    return model, tokenizer


def _peft_lora(lora: LMLoraConfig):
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _before_after(config: LMConfig, before: dict, after: dict) -> Table:
    """The held-out metrics before and after training, one line per metric."""
    rows = [{"metric": k, "before": before[k], "after": after[k]} for k in before]
    columns = [Column("metric", "held-out metric"), Column("before", fmt=".4f")]
    columns.append(Column("after", fmt=".4f"))
    return Table(
        f"lm: {config.loss.name}, beta={config.beta}",
        columns,
        rows,
        note="reward_*: ranking accuracy of the implicit reward beta * log-ratio; logp_*: of the "
        "policy's own log-likelihood (top1 chance 1/K, pair chance 0.5).",
    )
