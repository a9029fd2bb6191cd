"""A VLA on a local Hugging Face image-text-to-text model (SmolVLM / Idefics3, LLaVA).

The camera frame goes through the model's own processor and vision tower, the instruction
through its chat template (a user turn: the image, then the prompt text; then the assistant's
turn starts), and the actions are OpenVLA-style tokens appended after the prompt::

    [<pad> ... chat(user: <image> what action should the robot take to {instruction} ?)] [a_1 .. a_D]

Action tokens are the LAST ``n_bins`` ids of the tokenizer's base vocabulary
(``tokenizer.vocab_size``: the ids before any added special token), as OpenVLA does with Llama 2;
the model's own added tokens (``<image>``, ``<end_of_utterance>``, ...) sit after them and are
never overwritten. A vocabulary whose last ``n_bins`` ids hold special tokens, or that the
instruction prompts use, cannot spare them: loading or prompting fails with a one-line error.

``log pi(a | o, q)`` and decoding use the softmax of the model's logits restricted to the action
ids (:class:`~robopref.policies.vla.base.ActionTokenPolicy`), so SFT, TPO, step-level DPO and
rejection sampling run unchanged. LoRA adapters go on the language model only (attention
projections by default); the reference policy is the same module with the adapters disabled.
Adapters are saved in peft's own format (``PeftModel.from_pretrained(base, folder)`` loads them)
with ``robopref_vla.json`` beside them (action tokenizer, prompt, base model, adapters stacked
underneath).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.tokenizer import ActionTokenizer

FAMILIES: dict[str, dict[str, Any]] = {
    "idefics3": {"processor": "Idefics3Processor", "kwargs": {"do_image_splitting": False}},
    "llava": {"processor": "LlavaProcessor", "kwargs": {}},
}
"""Supported ``config.model_type`` -> the processor class that goes with it and the keyword
options of each processor call (Idefics3 / SmolVLM: one global image, no tiling: a robot camera
frame is small and tiles would multiply the image tokens)."""

LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""Default LoRA targets: the attention projections of the language model's layers."""

SETTINGS_FILE = "robopref_vla.json"
SETTINGS_FORMAT = "robopref-vla-adapters-v1"
VLM_TEMPLATE = "what action should the robot take to {instruction}?"
"""Prompt text after the image in the user turn (OpenVLA's question)."""


def _fail(path: Any, what: str) -> None:
    raise ValueError(f"{path}: {what}")


# ---- loading ----------------------------------------------------------------------------------


def _check_folder(path: Path) -> str:
    """The model_type of a local image-text-to-text model folder, or a one-line error."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    expected = "a local Hugging Face image-text-to-text model folder"
    if not path.is_dir():
        _fail(path, f"not a folder (expected {expected})")
    if not (path / "config.json").is_file():
        _fail(path, f"no config.json (expected {expected})")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        _fail(path, f"config.json unreadable ({str(e).splitlines()[0]}); expected {expected}")
    kind = config.model_type
    if kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        _fail(
            path,
            f"a {kind!r} model is not an image-text-to-text model (expected one of "
            f"{sorted(FAMILIES)}; a text-only causal LM goes with obs_mode 'state')",
        )
    if kind not in FAMILIES:
        _fail(
            path, f"model_type {kind!r} is not supported yet (expected one of {sorted(FAMILIES)})"
        )
    return kind


def _load_processor(path: Path, kind: str, config: Any) -> Any:
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        _fail(path, f"no usable processor ({str(e).splitlines()[0][:120]})")
    expected = FAMILIES[kind]["processor"]
    found = type(processor).__name__
    if found != expected:
        _fail(path, f"processor {found} does not match the {kind} model (expected {expected})")
    image_id = getattr(config, "image_token_id", None)
    if image_id is None:
        image_id = getattr(config, "image_token_index", None)
    if image_id is not None and getattr(processor, "image_token_id", image_id) != image_id:
        _fail(
            path,
            f"processor does not match the model: its image token id is "
            f"{processor.image_token_id}, the model's {image_id}",
        )
    return processor


def _dtype(dtype: str) -> Any:
    if dtype == "auto":
        return "auto"
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"model.dtype: expected 'auto', 'float32' or 'bfloat16', found {dtype!r}")
    return value


def load_vlm(
    path: str | Path,
    adapters: str | Path | None = None,
    act_dim: int = 4,
    n_bins: int = 256,
    prompt_template: str = VLM_TEMPLATE,
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    trainable: bool = False,
    device: str | torch.device = "cpu",
) -> VLMPolicy:
    """A :class:`VLMPolicy` on the model and processor of the LOCAL folder ``path`` (nothing is
    downloaded), with the adapters of the folder ``adapters`` when given (their settings file
    sets ``act_dim``, ``n_bins`` and the prompt; adapters stacked underneath are merged first).

    Args:
        dtype: ``"auto"`` (the checkpoint's), ``"float32"`` or ``"bfloat16"``.
        gradient_checkpointing: recompute activations in the backward pass (less memory).
        trainable: the loaded adapters keep training (default: frozen, for inference).

    Raises:
        ValueError: one line naming the folder and what was expected.
    """
    from transformers import AutoModelForImageTextToText

    path = Path(path)
    meta = read_settings(adapters) if adapters is not None else None
    if meta is not None:
        act_dim, n_bins, prompt_template = meta["act_dim"], meta["n_bins"], meta["prompt_template"]
    kind = _check_folder(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "image processor requires torchvision" notices
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=_dtype(dtype)
        )
        processor = _load_processor(path, kind, model.config)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    spec = {"path": str(path), "dtype": dtype, "gradient_checkpointing": gradient_checkpointing}
    policy = VLMPolicy(model, processor, path, act_dim, n_bins, prompt_template, spec)
    if meta is not None:
        _check_base(meta, policy, adapters, path)
        policy._load_peft(Path(adapters), meta, trainable)
    return policy.to(device)


def read_settings(adapters: str | Path) -> dict[str, Any]:
    """The ``robopref_vla.json`` of an adapter folder (one-line errors when it is not one)."""
    folder = Path(adapters)
    expected = f"an adapter folder (adapter_config.json and {SETTINGS_FILE})"
    if not folder.is_dir():
        _fail(folder, f"not a folder (expected {expected})")
    for name in ("adapter_config.json", SETTINGS_FILE):
        if not (folder / name).is_file():
            _fail(folder, f"no {name} (expected {expected})")
    try:
        meta = json.loads((folder / SETTINGS_FILE).read_text())
    except ValueError as e:
        _fail(folder / SETTINGS_FILE, f"not JSON ({e})")
    if not isinstance(meta, dict) or meta.get("format") != SETTINGS_FORMAT:
        _fail(folder / SETTINGS_FILE, f"expected format {SETTINGS_FORMAT!r}")
    return meta


def _base_facts(policy: VLMPolicy) -> dict[str, Any]:
    model = policy.base_model
    return {
        "model_type": model.config.model_type,
        "hidden_size": int(model.config.get_text_config().hidden_size),
        "vocab_size": int(policy.tokenizer.vocab_size),
        "embedding_rows": int(model.get_input_embeddings().num_embeddings),
    }


def _check_base(meta: dict, policy: VLMPolicy, adapters: Any, path: Path) -> None:
    trained, here = meta["base"], _base_facts(policy)
    diff = [f"{k} {trained.get(k)} vs {here[k]}" for k in here if trained.get(k) != here[k]]
    if diff:
        _fail(
            adapters,
            f"adapters for another base (trained on {trained.get('path')!r}, a "
            f"{trained.get('model_type')}; '{path}' differs: {', '.join(diff)})",
        )


# ---- the policy -------------------------------------------------------------------------------


class VLMPolicy(ActionTokenPolicy):
    """A camera frame + instruction -> ``act_dim`` action tokens, on an image-text-to-text model.

    Args:
        model: an ``AutoModelForImageTextToText`` model (or a peft model around one).
        processor: its ``AutoProcessor`` (image processor + tokenizer + chat template).
        path: the folder both came from (recorded with saved adapters).
        act_dim, n_bins: action dimensions and bins per dimension.
        prompt_template: the text after the image (``{instruction}`` is replaced).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        path: str | Path,
        act_dim: int = 4,
        n_bins: int = 256,
        prompt_template: str = VLM_TEMPLATE,
        spec: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.path = str(path)
        self.family = model.config.model_type
        self.act_dim = int(act_dim)
        self.prompt_template = prompt_template
        self.spec = spec or {}
        self.processor_kwargs = dict(FAMILIES.get(self.family, {}).get("kwargs", {}))
        self.lora_settings = None
        self.stacked_on: list[str] = []
        self._prompts: dict[str, str] = {}
        self.action_tokenizer = self._action_ids(int(n_bins))

    def _action_ids(self, n_bins: int) -> ActionTokenizer:
        tok, path = self.tokenizer, self.path
        vocab = int(tok.vocab_size)
        rows = self.model.get_input_embeddings().num_embeddings
        if len(tok) > rows:
            _fail(path, f"tokenizer has {len(tok)} tokens but the model's embedding {rows} rows")
        if vocab < n_bins:
            _fail(
                path,
                f"vocabulary too small for {n_bins} action tokens: {vocab} base ids "
                f"(expected >= {n_bins} ids to spare at its end)",
            )
        at = ActionTokenizer(vocab, n_bins)
        special = {int(i): t for t, i in zip(tok.all_special_tokens, tok.all_special_ids)}
        image_id = getattr(self.processor, "image_token_id", None)
        if image_id is not None:
            special[int(image_id)] = "<image>"
        clash = sorted(t for i, t in special.items() if at.start <= i < vocab)
        if clash:
            _fail(
                path,
                f"the vocabulary cannot spare its last {n_bins} ids [{at.start}, {vocab}) as "
                f"action tokens: they hold special tokens {clash[:5]}",
            )
        return at

    @property
    def base_model(self) -> torch.nn.Module:
        """The image-text-to-text model under any peft wrapper."""
        return self.model.get_base_model() if self.lora_settings else self.model

    @property
    def obs_mode(self) -> str:
        return "image"

    # ---- inputs -------------------------------------------------------------------------------
    def prompt(self, instruction: str) -> str:
        """The chat-formatted prompt of ``instruction`` (image placeholder included)."""
        text = self._prompts.get(instruction)
        if text is None:
            question = self.prompt_template.format(instruction=instruction)
            if getattr(self.processor, "chat_template", None):
                turn = [{"type": "image"}, {"type": "text", "text": question}]
                text = self.processor.apply_chat_template(
                    [{"role": "user", "content": turn}], add_generation_prompt=True
                )
            else:
                text = f"{self.processor.image_token}{question}"
            ids = np.asarray(self.tokenizer(text)["input_ids"])
            at = self.action_tokenizer
            inside = ids[(ids >= at.start) & (ids < at.vocab_size)]
            if inside.size:
                _fail(
                    self.path,
                    f"instruction {instruction!r}: its prompt uses ids {inside[:3].tolist()} of "
                    f"the action tokens [{at.start}, {at.vocab_size}) (a vocabulary too small to "
                    "spare them)",
                )
            self._prompts[instruction] = text
        return text

    def to_obs(self, obs: Any, n: int | None = None) -> dict[str, torch.Tensor]:
        """``[N, H, W, 3]`` uint8 frames (or a mapping with ``"image"``) -> ``{"image": ...}``
        (kept on the CPU: the processor reads them)."""
        image = obs["image"] if isinstance(obs, Mapping) else obs
        if isinstance(obs, Mapping) and "image" not in obs:
            raise ValueError(f"obs: a VLM policy needs key 'image', found keys {sorted(obs)}")
        x = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"obs/image: expected shape [N, H, W, 3], found {list(x.shape)}")
        if n is not None and x.shape[0] != n:
            raise ValueError(f"obs/image: expected {n} rows, found {x.shape[0]}")
        return {"image": x.cpu()}

    def _inputs(
        self, images: torch.Tensor, instructions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        texts = [self.prompt(q) for q in instructions]
        frames = [[f] for f in images.to(torch.uint8).numpy()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = self.processor(
                text=texts, images=frames, return_tensors="pt", padding=True,
                **self.processor_kwargs,
            )  # fmt: skip
        dev = self.device
        dtype = self.model.get_input_embeddings().weight.dtype
        extra = {}
        for key, value in batch.items():
            if key in ("input_ids", "attention_mask"):
                continue
            value = value.to(dev)
            extra[key] = value.to(dtype) if value.is_floating_point() else value
        return batch["input_ids"].to(dev), batch["attention_mask"].to(dev), extra

    # ---- the action distribution --------------------------------------------------------------
    def action_logits(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: Sequence[str],
        prev_tokens: torch.Tensor,
    ) -> torch.Tensor:
        ids, mask, extra = self._inputs(obs["image"], instructions)
        k = prev_tokens.shape[1]
        if k:
            ids = torch.cat([ids, prev_tokens.to(ids.device)], 1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], k))], 1)
        # positions from the mask: a left-padded row scores as if it stood alone
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, **extra,
            logits_to_keep=k + 1, use_cache=False,
        )  # fmt: skip
        at = self.action_tokenizer
        return out.logits[:, -(k + 1) :, at.start : at.vocab_size].float()

    @torch.no_grad()
    def predict_tokens(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: Sequence[str],
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decoding with the key-value cache: the frame and prompt go through the model once,
        then one token per action dimension."""
        ids, mask, extra = self._inputs(obs["image"], instructions)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        at = self.action_tokenizer
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, **extra,
            logits_to_keep=1, use_cache=True,
        )  # fmt: skip
        tokens = []
        for d in range(self.act_dim):
            logits = out.logits[:, -1, at.start : at.vocab_size].float()
            token = self._pick(logits, greedy, temperature, generator) + at.start
            tokens.append(token)
            if d == self.act_dim - 1:
                break
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
            position_ids = position_ids[:, -1:] + 1
            out = self.model(
                input_ids=token[:, None], attention_mask=mask, position_ids=position_ids,
                cache=out.cache, use_cache=True,
            )  # fmt: skip
        return torch.stack(tokens, 1)

    def _reference_context(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter() if self.lora_settings else contextlib.nullcontext()

    # ---- LoRA and adapters ----------------------------------------------------------------------
    def lora_targets(self, target_modules: Sequence[str] | str | None = None) -> str:
        """A peft ``target_modules`` regex: the named projections inside the language model
        (default :data:`LORA_PROJECTIONS`); a string is used as the regex itself."""
        if isinstance(target_modules, str):
            return target_modules
        decoder = self.base_model.get_decoder()
        prefix = next(n for n, m in self.base_model.named_modules() if m is decoder)
        names = list(target_modules or LORA_PROJECTIONS)
        pattern = rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, names))})"
        if not any(re.fullmatch(pattern, n) for n, _ in self.base_model.named_modules()):
            raise ValueError(
                f"lora.target_modules: no module of the language model ({prefix}) is named {names}"
            )
        return pattern

    def add_lora(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: Sequence[str] | str | None = None,
        train_obs_encoder: bool = False,
        train_action_head: bool = False,
    ) -> VLMPolicy:
        """LoRA adapters on the language model (peft), in place; everything else frozen.
        ``train_action_head`` also trains the output head (peft ``modules_to_save``)."""
        from peft import LoraConfig, get_peft_model

        if self.lora_settings:
            raise ValueError("apply_lora: the policy already has LoRA adapters")
        if train_obs_encoder:
            raise ValueError(
                "lora.train_obs_encoder: a vision-language model keeps its vision tower frozen"
            )
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=self.lora_targets(target_modules),
            modules_to_save=["lm_head"] if train_action_head else None,
        )
        self.requires_grad_(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = get_peft_model(self.model, config)
        self.lora_settings = dict(
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=target_modules,
            train_obs_encoder=False,
            train_action_head=train_action_head,
        )
        return self

    def merge_adapters(self, saved: str | Path) -> VLMPolicy:
        """Fold the current adapters (saved in the folder ``saved``) into the weights, e.g. the
        SFT adapters before TPO, whose reference is then the SFT policy. Adapters saved after
        this record ``saved`` as stacked underneath them."""
        if not self.lora_settings:
            raise ValueError("merge_adapters: the policy has no LoRA adapters")
        self.model = self.model.merge_and_unload()
        self.lora_settings = None
        self.stacked_on.append(str(Path(saved).resolve()))
        return self

    def settings(self, folder: Path) -> dict[str, Any]:
        """What ``robopref_vla.json`` records beside the adapters in ``folder``."""
        bounds = self.action_bounds
        return {
            "format": SETTINGS_FORMAT,
            "act_dim": self.act_dim,
            "n_bins": self.action_tokenizer.n_bins,
            "action_token_ids": [self.action_tokenizer.start, self.action_tokenizer.vocab_size],
            "action_range": [self.action_tokenizer.low, self.action_tokenizer.high],
            "action_bounds": None if bounds is None else [np.asarray(b).tolist() for b in bounds],
            "prompt_template": self.prompt_template,
            "lora": self.lora_settings,
            "stacked_on": [os.path.relpath(p, folder.resolve()) for p in self.stacked_on],
            "base": {**_base_facts(self), "path": self.path},
        }

    def save_adapters(self, folder: str | Path) -> None:
        """Write the adapters in peft's format plus ``robopref_vla.json``, atomically (a
        folder written beside and renamed into place)."""
        if not self.lora_settings:
            raise ValueError("save_adapters: the policy has no LoRA adapters (add them first)")
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        meta = self.settings(folder)
        (tmp / SETTINGS_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    def load_adapters(self, folder: str | Path) -> VLMPolicy:
        """Load saved adapters into this policy (adding LoRA with their settings if it has
        none; the adapters stacked underneath must already be merged)."""
        meta = read_settings(folder)
        _check_base(meta, self, folder, Path(self.path))
        if not self.lora_settings:
            self._load_peft(Path(folder), meta, trainable=True, stacked=False)
            return self
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(self.model, load_peft_weights(str(folder)))
        return self

    def _load_peft(self, folder: Path, meta: dict, trainable: bool, stacked: bool = True) -> None:
        from peft import PeftModel

        if stacked:
            for rel in meta.get("stacked_on", []):
                below = (folder / rel).resolve()
                inner = read_settings(below)
                _check_base(inner, self, below, Path(self.path))
                model = PeftModel.from_pretrained(self.model, below)
                self.model = model.merge_and_unload()
                self.stacked_on.append(str(below))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = PeftModel.from_pretrained(self.model, folder, is_trainable=trainable)
        except (RuntimeError, ValueError) as e:
            _fail(folder, f"adapters do not fit '{self.path}' ({str(e).splitlines()[0][:160]})")
        self.lora_settings = meta["lora"]
        bounds = meta.get("action_bounds")
        if bounds is not None:
            self.action_bounds = (np.asarray(bounds[0]), np.asarray(bounds[1]))
