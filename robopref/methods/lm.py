"""Recipe ``lm``: preference fine-tuning of a language policy (DPO / LiPO / ... from one loss core).

``robopref run configs/lm/tiny.yaml`` trains a tiny GPT-2 from scratch on the synthetic counting
preferences under ``tests/data_files/lm/`` in seconds on a CPU. Point ``model.path`` at a local
Hugging Face folder to fine-tune a real causal LM (nothing is ever downloaded).

Writes ``config.yaml`` and ``results.json`` (held-out metrics before and after training, the
per-epoch training history) into the run directory, atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from robopref.config import Device, Seed, StrictModel
from robopref.losses import get_loss
from robopref.methods.common import start_run
from robopref.policies.lm import (
    LMPreferenceTrainer,
    WordTokenizer,
    build_tiny_model,
    encode_examples,
    load_preference_jsonl,
    load_pretrained,
    loss_options_for,
)
from robopref.utils import atomic_path


class TinyModelConfig(StrictModel):
    """A randomly initialised GPT-2 (used when ``model.path`` is not set); its vocabulary is
    the whitespace words of the train and eval files. ``n_positions`` grows to fit the data."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    n_positions: int = 64


class ModelConfig(StrictModel):
    path: str | None = None  # local Hugging Face model folder; None = the tiny model below
    dtype: str = "auto"  # torch dtype for from_pretrained ("auto", "float32", "bfloat16", ...)
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)


class LossConfig(StrictModel):
    """A loss of :mod:`robopref.losses` by name, with its keyword options."""

    name: str = "bt"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> LossConfig:
        # ValueError naming the loss or the bad option (IPO's beta is the recipe's beta)
        get_loss(self.name, **loss_options_for(self.name, self.options, beta=1.0))
        return self


class LoraSettings(StrictModel):
    """LoRA adapters through peft; ``target_modules=None`` lets peft pick per architecture."""

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None


class LMConfig(StrictModel):
    method: Literal["lm"] = "lm"
    train_path: str  # JSONL: {"prompt", "responses": [K], "scores": [K]} per line
    eval_path: str  # held-out prompts, same format
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    beta: float = Field(0.1, gt=0)
    # True: per-token mean log-ratios (TRL's IPO); False: summed (DPO's sequence log-ratio)
    length_normalize: bool = False
    lora: LoraSettings = Field(default_factory=LoraSettings)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    epochs: int = Field(1, ge=0)
    batch_size: int = Field(8, ge=1)
    max_length: int | None = None
    seed: Seed = 0
    device: Device = "auto"
    num_threads: int | None = None  # torch CPU threads; 1 is fastest for tiny models
    tensorboard: bool = False  # write TensorBoard logs under <out_dir>/tb
    save_model: bool = (
        False  # save_pretrained the policy (adapters only under LoRA) to <out_dir>/model
    )
    progress: bool = True


Config = LMConfig  # every recipe module exposes ``Config``


def _lora_config(lora: LoraSettings):
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


def _print_table(before: dict[str, float], after: dict[str, float], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("held-out metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key in before:
        table.add_row(key, f"{before[key]:.4f}", f"{after[key]:.4f}")
    Console().print(table)


def run(config: LMConfig, out_dir: Path) -> dict:
    """Train on ``config.train_path``, evaluate on ``config.eval_path`` before and after, write
    ``config.yaml`` and ``results.json`` into ``out_dir`` and return the results dict."""
    out_dir, _ = start_run(config, out_dir)
    train = load_preference_jsonl(config.train_path)
    held_out = load_preference_jsonl(config.eval_path)

    if config.model.path is None:
        tokenizer = WordTokenizer.from_examples(train + held_out)
        longest = max(
            len(e.prompt_ids) + max(len(r) for r in e.response_ids)
            for e in encode_examples(train + held_out, tokenizer, config.max_length)
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
    else:
        model, tokenizer = load_pretrained(config.model.path, dtype=config.model.dtype)

    trainer = LMPreferenceTrainer(
        model,
        tokenizer,
        loss=config.loss.name,
        loss_options=config.loss.options,
        beta=config.beta,
        length_normalize=config.length_normalize,
        lora=_lora_config(config.lora),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        batch_size=config.batch_size,
        max_length=config.max_length,
        device=config.device,
        seed=config.seed,
        log_dir=out_dir / "tb" if config.tensorboard else None,
        progress=config.progress,
    )
    start = time.perf_counter()
    before = trainer.evaluate(held_out, prefix="eval_before")
    history = trainer.train(train, epochs=config.epochs)
    after = trainer.evaluate(held_out, prefix="eval_after")
    seconds = time.perf_counter() - start
    if config.save_model:
        trainer.save(out_dir / "model")
    trainer.close()

    results = {
        "method": "lm",
        "loss": config.loss.name,
        "beta": config.beta,
        "lora": config.lora.enabled,
        "device": str(trainer.device),
        "num_train_prompts": len(train),
        "num_eval_prompts": len(held_out),
        "trainable_params": trainer.trainable_parameters(),
        "total_params": sum(p.numel() for p in trainer.policy.parameters()),
        "seconds": seconds,
        "before": before,
        "after": after,
        "history": history,
    }
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    _print_table(before, after, f"lm: {config.loss.name}, beta={config.beta}")
    return results
