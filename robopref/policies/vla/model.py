"""A vision-language-action policy on a Hugging Face causal LM: observation + instruction -> action tokens.

Sequence layout (left-padded batch; ``P`` observation embeddings, ``L`` prompt tokens, ``D =
act_dim`` action tokens)::

    [<pad> ... <bos> w_1 .. w_L] [e_1 .. e_P] [a_1 .. a_D]
     prompt (instruction words)   observation  action tokens (the last 256 ids of the vocabulary)

The observation embeddings come from :class:`ObsEncoder` (a small CNN over the image and/or an MLP
over the 39-d proprio/state vector) and are fed to the LM through ``inputs_embeds``; the LM's own
output head scores the next token and the distribution over an action dimension is the softmax of
the head's logits restricted to the ``n_bins`` action tokens (constrained decoding: other tokens
can never be emitted, and log-probabilities are those of the constrained distribution, the one
rollouts sample from). ``log pi(a_t | o_t, q) = sum_d log p(a_{t,d} | o_t, q, a_{t,<d})``.

The LM is either built from a config at random (:func:`build_tiny_vla`: Llama or GPT-2 with a small
hidden size, a word-level tokenizer built offline) or loaded from a LOCAL Hugging Face folder
(:func:`load_pretrained_vla`; nothing is downloaded). The observation encoder is always new.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.tokenizer import ActionTokenizer, WordActionTokenizer
from robopref.policies.vla.vlm import VLMPolicy, load_vlm
from robopref.utils import atomic_path

OBS_MODES = ("state", "image", "image+state")
DEFAULT_TEMPLATE = "what action should the robot take to {instruction} ?"
"""Prompt around the instruction (OpenVLA's "In: What action should the robot take to {...}?")."""


def _check_mode(obs_mode: str) -> str:
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode: expected one of {OBS_MODES}, found {obs_mode!r}")
    return obs_mode


class ObsEncoder(nn.Module):
    """Observation -> ``n_tokens`` prefix embeddings ``[N, P, hidden_size]`` for the LM.

    Modes: ``"state"`` (an MLP over the standardised ``state_dim`` vector -> ``n_state_tokens``
    embeddings), ``"image"`` (a 3-layer CNN over ``[N, image_size, image_size, 3]`` uint8 images,
    average-pooled to an ``image_grid x image_grid`` grid of embeddings, plus learned positions)
    and ``"image+state"`` (both, image embeddings first).
    """

    def __init__(
        self,
        obs_mode: str,
        hidden_size: int,
        state_dim: int = 39,
        n_state_tokens: int = 2,
        image_size: int = 32,
        image_grid: int = 2,
        channels: int = 32,
    ):
        super().__init__()
        self.obs_mode = _check_mode(obs_mode)
        self.hidden_size = hidden_size
        self.state_dim, self.n_state_tokens = state_dim, n_state_tokens
        self.image_size, self.image_grid = image_size, image_grid
        self.uses_state = "state" in obs_mode
        self.uses_image = "image" in obs_mode
        if self.uses_state:
            self.register_buffer("state_mean", torch.zeros(state_dim))
            self.register_buffer("state_std", torch.ones(state_dim))
            self.state_mlp = nn.Sequential(
                nn.Linear(state_dim, 256),
                nn.GELU(),
                nn.Linear(256, 256),
                nn.GELU(),
                nn.Linear(256, n_state_tokens * hidden_size),
            )
        if self.uses_image:
            c = channels
            self.cnn = nn.Sequential(
                nn.Conv2d(3, c, 5, stride=2, padding=2),
                nn.GELU(),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(2 * c, 2 * c, 3, stride=1, padding=1),
                nn.GELU(),
                nn.AdaptiveAvgPool2d(image_grid),
            )
            self.image_proj = nn.Linear(2 * c, hidden_size)
            self.image_pos = nn.Parameter(torch.zeros(image_grid * image_grid, hidden_size))

    @property
    def n_tokens(self) -> int:
        return self.n_state_tokens * self.uses_state + self.image_grid**2 * self.uses_image

    def set_state_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise states as ``(s - mean) / std`` (std floored at 1e-3)."""
        if not self.uses_state:
            return
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).clamp(min=1e-3)
        self.state_mean.copy_(mean.to(self.state_mean.device))
        self.state_std.copy_(std.to(self.state_std.device))

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``obs["state"]`` ``[N, state_dim]`` float and/or ``obs["image"]`` ``[N, S, S, 3]`` uint8
        -> ``[N, n_tokens, hidden_size]``."""
        parts = []
        if self.uses_image:
            img = obs["image"]
            n = img.shape[0]
            x = img.permute(0, 3, 1, 2).float() / 255.0
            feat = self.cnn(x).flatten(2).transpose(1, 2)  # [N, g*g, 2c]
            parts.append(self.image_proj(feat) + self.image_pos)
        if self.uses_state:
            s = (obs["state"].float() - self.state_mean) / self.state_std
            n = s.shape[0]
            parts.append(self.state_mlp(s).view(n, self.n_state_tokens, self.hidden_size))
        return torch.cat(parts, 1)


class VLAPolicy(ActionTokenPolicy):
    """Observation + language instruction -> ``act_dim`` action tokens (see the module docstring).

    Args:
        lm: a Hugging Face causal LM (``inputs_embeds``, ``position_ids`` and ``logits_to_keep``).
        tokenizer: its text tokenizer (``encode(text)`` / ``__call__``, ``vocab_size``); the
            action tokens are ids ``[vocab_size - n_bins, vocab_size)``.
        obs_encoder: an :class:`ObsEncoder` with ``hidden_size`` equal to the LM's.
        act_dim: action dimensions (4 for Meta-World: xyz displacement and gripper).
        n_bins: bins per action dimension.
        prompt_template: text around the instruction (``{instruction}`` is replaced).
        spec: how to rebuild this policy from scratch (kept for :func:`save_policy`).
    """

    @classmethod
    def from_pretrained(cls, base: Any, adapters: Any = None, **options: Any) -> VLMPolicy:
        """A :class:`~robopref.policies.vla.VLMPolicy` on the local image-text-to-text model
        folder ``base``, with the adapters saved in the folder ``adapters`` (peft format plus the
        action-tokenizer settings beside them; see :func:`~robopref.policies.vla.load_vlm`)."""
        return load_vlm(base, adapters=adapters, **options)

    def __init__(
        self,
        lm: nn.Module,
        tokenizer: Any,
        obs_encoder: ObsEncoder,
        act_dim: int = 4,
        n_bins: int = 256,
        prompt_template: str = DEFAULT_TEMPLATE,
        spec: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.obs_encoder = obs_encoder
        self.act_dim = int(act_dim)
        self.prompt_template = prompt_template
        self.spec = spec or {}
        vocab_size = int(tokenizer.vocab_size)
        rows = lm.get_input_embeddings().num_embeddings
        if rows < vocab_size:
            raise ValueError(
                f"lm: the embedding table has {rows} rows, expected >= tokenizer.vocab_size = "
                f"{vocab_size}"
            )
        hidden = lm.get_input_embeddings().embedding_dim
        if obs_encoder.hidden_size != hidden:
            raise ValueError(
                f"obs_encoder: expected hidden_size {hidden} (the LM's), found "
                f"{obs_encoder.hidden_size}"
            )
        self.action_tokenizer = ActionTokenizer(vocab_size, n_bins)
        self._prompt_cache: dict[str, list[int]] = {}
        self._ref_obs_encoder: ObsEncoder | None = None  # frozen copy when LoRA trains the encoder
        self.lora_settings: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.obs_encoder.parameters()).device

    @property
    def obs_mode(self) -> str:
        return self.obs_encoder.obs_mode

    def _prompt(self, instruction: str) -> list[int]:
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            text = self.prompt_template.format(instruction=instruction)
            ids = list(self.tokenizer.encode(text))
            self._prompt_cache[instruction] = ids
        return ids

    def prompt_ids(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids ``[N, L]`` and their attention mask ``[N, L]`` (1 = token)."""
        prompts = [self._prompt(q) for q in instructions]
        width = max(len(p) for p in prompts)
        pad = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            if p:
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def to_obs(self, obs: Any, n: int | None = None) -> dict[str, torch.Tensor]:
        """Observations of ``n`` steps -> dict of tensors on the policy's device.

        Accepts a ``[N, state_dim]`` array (state mode) or a mapping with ``"state"`` ``[N,
        state_dim]`` and/or ``"image"`` ``[N, S, S, 3]`` uint8 (numpy or torch).
        """
        if not isinstance(obs, Mapping):
            obs = {"state": obs}
        enc = self.obs_encoder
        out = {}
        needed = [k for k, used in (("state", enc.uses_state), ("image", enc.uses_image)) if used]
        for key in needed:
            if key not in obs:
                raise ValueError(
                    f"obs: obs_mode {enc.obs_mode!r} needs key '{key}', found keys {sorted(obs)}"
                )
            x = torch.as_tensor(np.asarray(obs[key]) if not torch.is_tensor(obs[key]) else obs[key])
            if key == "state":
                expected = (enc.state_dim,)
            else:
                expected = (enc.image_size, enc.image_size, 3)
            if x.dim() != 1 + len(expected) or tuple(x.shape[1:]) != expected:
                raise ValueError(
                    f"obs/{key}: expected shape [N, {', '.join(map(str, expected))}], "
                    f"found {list(x.shape)}"
                )
            if n is not None and x.shape[0] != n:
                raise ValueError(f"obs/{key}: expected {n} rows, found {x.shape[0]}")
            out[key] = x.to(self.device)
        return out

    # ------------------------------------------------------------------------------------------
    def action_logits(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: Sequence[str],
        prev_tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Logits over the ``n_bins`` action tokens ``[N, k + 1, n_bins]`` for action dimensions
        ``0..k``, given the first ``k`` action tokens ``prev_tokens`` ``[N, k]`` (ids)."""
        ids, mask = self.prompt_ids(instructions)
        embed = self.lm.get_input_embeddings()
        prefix = self.obs_encoder(obs)
        parts = [embed(ids), prefix.to(embed.weight.dtype)]
        k = prev_tokens.shape[1]
        if k:
            parts.append(embed(prev_tokens.to(self.device)))
        x = torch.cat(parts, 1)
        n = x.shape[0]
        full_mask = torch.cat(
            [mask, torch.ones((n, prefix.shape[1] + k), dtype=mask.dtype, device=mask.device)], 1
        )
        position_ids = (full_mask.cumsum(1) - 1).clamp(min=0)
        out = self.lm(
            inputs_embeds=x,
            attention_mask=full_mask,
            position_ids=position_ids,
            logits_to_keep=k + 1,
            use_cache=False,
        )
        at = self.action_tokenizer
        return out.logits[:, -(k + 1) :, at.start : at.vocab_size].float()

    def _reference_context(self) -> contextlib.AbstractContextManager:
        """Adapters disabled and, when LoRA trains the encoder, the frozen pre-LoRA encoder."""
        return self._reference_parts()

    @contextlib.contextmanager
    def _reference_parts(self) -> Iterator[None]:
        swap = self._ref_obs_encoder is not None
        if swap:
            live, self.obs_encoder = self.obs_encoder, self._ref_obs_encoder
        ctx = self.lm.disable_adapter() if self.lora_settings else contextlib.nullcontext()
        try:
            with ctx:
                yield
        finally:
            if swap:
                self.obs_encoder = live

    def fit_state_normalization(self, obs: Mapping[str, np.ndarray]) -> None:
        """Standardise the state input with the mean and std of ``obs["state"]``."""
        if "state" in obs and self.obs_encoder.uses_state:
            self.obs_encoder.set_state_normalization(obs["state"].mean(0), obs["state"].std(0))


# ----------------------------------------------------------------------------------------------
# Trajectory log-probabilities
# ----------------------------------------------------------------------------------------------


def trajectory_observations(trajectory: Any) -> dict[str, np.ndarray]:
    """A trajectory's observations as a dict (an array becomes ``{"state": array}``)."""
    obs = trajectory.observations
    return dict(obs) if isinstance(obs, Mapping) else {"state": obs}


def batch_token_logprobs(
    policy: VLAPolicy, trajectories: Sequence[Any], chunk_size: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the actions of several trajectories, padded.

    Args:
        trajectories: N :class:`~robopref.data.Trajectory` with actions ``[T_i, act_dim]`` in
            [-1, 1] (tokenised with the policy's action tokenizer) and an ``instruction``.
        chunk_size: steps per forward pass.

    Returns:
        ``logp`` ``[N, T_max * act_dim]`` (nats; step-major, 0 on padding; differentiable) and
        ``mask`` ``[N, T_max * act_dim]`` bool.
    """
    if not trajectories:
        raise ValueError("trajectories: expected at least one trajectory, found none")
    D = policy.act_dim
    obs_parts: dict[str, list[np.ndarray]] = {}
    tokens, instructions, lengths = [], [], []
    for i, traj in enumerate(trajectories):
        actions = np.asarray(traj.actions)
        if actions.ndim != 2 or actions.shape[1] != D:
            raise ValueError(
                f"trajectories[{i}].actions: expected shape [T, {D}], found {list(actions.shape)}"
            )
        if not traj.instruction:
            raise ValueError(f"trajectories[{i}].instruction: expected a non-empty string")
        for key, arr in trajectory_observations(traj).items():
            obs_parts.setdefault(key, []).append(np.asarray(arr))
        tokens.append(policy.action_tokenizer.encode(actions))
        instructions += [traj.instruction] * len(actions)
        lengths.append(len(actions))
    all_obs = {k: np.concatenate(v) for k, v in obs_parts.items()}
    all_tokens = torch.as_tensor(np.concatenate(tokens))
    total = len(all_tokens)
    chunks = []
    for s in range(0, total, chunk_size):
        sl = slice(s, min(s + chunk_size, total))
        obs = policy.to_obs({k: v[sl] for k, v in all_obs.items()}, sl.stop - sl.start)
        chunks.append(policy.action_token_logprobs(obs, instructions[sl], all_tokens[sl]))
    flat = torch.cat(chunks).reshape(-1)  # [sum T_i * D]
    width = max(lengths) * D
    logp = flat.new_zeros((len(trajectories), width))
    mask = torch.zeros((len(trajectories), width), dtype=torch.bool, device=flat.device)
    start = 0
    for i, T in enumerate(lengths):
        logp[i, : T * D] = flat[start : start + T * D]
        mask[i, : T * D] = True
        start += T * D
    return logp, mask


def trajectory_logprob(policy: VLAPolicy, trajectory: Any) -> torch.Tensor:
    """``log pi(zeta) = sum_t sum_d log p(a_{t,d} | o_t, q, a_{t,<d})``: a scalar tensor (nats)."""
    logp, _ = batch_token_logprobs(policy, [trajectory])
    return logp.sum()


# ----------------------------------------------------------------------------------------------
# Building, saving and loading
# ----------------------------------------------------------------------------------------------


def _make_lm(
    arch: str,
    vocab_size: int,
    hidden_size: int,
    n_layers: int,
    n_heads: int,
    intermediate_size: int,
    max_positions: int,
) -> nn.Module:
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads,
            max_position_embeddings=max_positions,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        return LlamaForCausalLM(config)
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=hidden_size,
            n_layer=n_layers,
            n_head=n_heads,
            n_inner=intermediate_size,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        return GPT2LMHeadModel(config)
    raise ValueError(f"arch: expected 'llama' or 'gpt2', found {arch!r}")


def build_tiny_vla(
    instructions: Sequence[str],
    obs_mode: str = "state",
    arch: str = "llama",
    hidden_size: int = 64,
    n_layers: int = 2,
    n_heads: int = 2,
    intermediate_size: int | None = None,
    act_dim: int = 4,
    n_bins: int = 256,
    state_dim: int = 39,
    n_state_tokens: int = 2,
    image_size: int = 32,
    image_grid: int = 2,
    prompt_template: str = DEFAULT_TEMPLATE,
    max_positions: int = 128,
    seed: int = 0,
) -> VLAPolicy:
    """A randomly initialised VLA (nothing downloaded): a word tokenizer over ``instructions`` and
    the prompt template, plus ``n_bins`` action tokens at the end of the vocabulary; a Llama
    (``arch="llama"``) or GPT-2 causal LM of ``hidden_size``; a new :class:`ObsEncoder`."""
    _check_mode(obs_mode)
    spec = {k: v for k, v in locals().items() if k != "instructions"}
    spec["instructions"] = list(instructions)
    spec["kind"] = "tiny"
    texts = [prompt_template.format(instruction=q) for q in instructions]
    tokenizer = WordActionTokenizer.from_texts(texts, n_action_tokens=n_bins)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = _make_lm(
            arch,
            len(tokenizer),
            hidden_size,
            n_layers,
            n_heads,
            intermediate_size or 4 * hidden_size,
            max_positions,
        )
        encoder = ObsEncoder(
            obs_mode, hidden_size, state_dim, n_state_tokens, image_size, image_grid
        )
    return VLAPolicy(lm, tokenizer, encoder, act_dim, n_bins, prompt_template, spec)


def load_pretrained_vla(
    path: str | Path,
    obs_mode: str = "state",
    act_dim: int = 4,
    n_bins: int = 256,
    state_dim: int = 39,
    n_state_tokens: int = 2,
    image_size: int = 32,
    image_grid: int = 2,
    prompt_template: str = DEFAULT_TEMPLATE,
    dtype: str = "auto",
    seed: int = 0,
) -> VLAPolicy:
    """A VLA on a causal LM and tokenizer from a LOCAL Hugging Face folder (never downloads);
    the action tokens are the last ``n_bins`` ids of ``tokenizer.vocab_size`` (as in OpenVLA).
    The observation encoder is new (random, seeded)."""
    spec = dict(locals(), kind="pretrained", path=str(path))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.path: '{path}' is not a directory (expected a local Hugging Face model folder)"
        )
    lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    hidden = lm.get_input_embeddings().embedding_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ObsEncoder(obs_mode, hidden, state_dim, n_state_tokens, image_size, image_grid)
    return VLAPolicy(lm, tokenizer, encoder, act_dim, n_bins, prompt_template, spec)


def check_tokenizer(policy: VLAPolicy, instructions: Sequence[str], source: str) -> None:
    """Raise a one-line ``ValueError`` naming ``source`` (a checkpoint file) when the policy's
    tokenizer cannot write one of ``instructions`` (a word maps to its unknown token): the
    checkpoint was trained for other instructions."""
    unk = getattr(policy.tokenizer, "unk_token_id", None)
    if unk is None:
        return
    for q in instructions:
        ids = policy.tokenizer.encode(policy.prompt_template.format(instruction=q))
        if unk in ids:
            words = [w for w in q.split() if unk in policy.tokenizer.encode(w)]
            raise ValueError(
                f"{source}: the checkpoint's tokenizer does not match: instruction {q!r} has "
                f"words {words} outside its vocabulary (a checkpoint of other tasks?)"
            )


def save_policy(policy: VLAPolicy, path: str | Path) -> None:
    """Write the whole policy (its rebuild spec and full state dict, before any LoRA) atomically."""
    if policy.lora_settings:
        raise ValueError("save_policy: the policy has LoRA adapters; use save_adapters instead")
    state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": "robopref-vla-v1", "spec": policy.spec, "state_dict": state}, tmp)


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> VLAPolicy:
    """Rebuild a policy written by :func:`save_policy` and load its weights."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != "robopref-vla-v1":
        raise ValueError(f"{path}: expected a robopref VLA policy file (format robopref-vla-v1)")
    spec = dict(blob["spec"])
    kind = spec.pop("kind")
    if kind == "tiny":
        policy = build_tiny_vla(**spec)
    else:
        spec.pop("path", None)
        policy = load_pretrained_vla(blob["spec"]["path"], **spec)
    policy.load_state_dict(blob["state_dict"])
    return policy.to(device)


# ----------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------

ATTENTION_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["c_attn"],
}
"""LM attention projections LoRA targets by default, per ``config.model_type``."""


def apply_lora(
    policy: VLAPolicy,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    train_obs_encoder: bool = False,
    train_action_head: bool = False,
) -> VLAPolicy:
    """Wrap the policy's LM with peft LoRA adapters, in place; freeze everything else.

    Args:
        rank, alpha, dropout: LoRA's r, lora_alpha and lora_dropout.
        target_modules: module names; default: the LM's attention projections
            (:data:`ATTENTION_TARGETS`).
        train_obs_encoder: also train the observation encoder (a frozen copy is kept as the
            reference's encoder); default frozen.
        train_action_head: also train the LM output head (peft ``modules_to_save``; the head holds
            the action-token rows; needs an untied head, e.g. the tiny Llama); default frozen.

    Returns:
        ``policy``; only the adapters (and the parts asked for) have ``requires_grad``.
    """
    from peft import LoraConfig, get_peft_model

    if hasattr(policy, "add_lora"):  # a vision-language model adds its own (its LM's modules)
        return policy.add_lora(
            rank, alpha, dropout, target_modules, train_obs_encoder, train_action_head
        )
    if policy.lora_settings:
        raise ValueError("apply_lora: the policy already has LoRA adapters")
    model_type = getattr(policy.lm.config, "model_type", "")
    targets = list(target_modules) if target_modules else ATTENTION_TARGETS.get(model_type)
    if targets is None:
        raise ValueError(
            f"lora.target_modules: no default for model_type {model_type!r}; name the attention "
            "projections explicitly"
        )
    settings = dict(
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        target_modules=targets,
        train_obs_encoder=train_obs_encoder,
        train_action_head=train_action_head,
    )
    policy.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=["lm_head"] if train_action_head else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecation inside peft
        policy.lm = get_peft_model(policy.lm, config)
    if train_obs_encoder:
        policy._ref_obs_encoder = copy.deepcopy(policy.obs_encoder).requires_grad_(False)
        policy.obs_encoder.requires_grad_(True)
    policy.lora_settings = settings
    return policy


def trainable_parameters(policy: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter for the parameters with ``requires_grad``."""
    return {n: p for n, p in policy.named_parameters() if p.requires_grad}


def save_adapters(policy: VLAPolicy, path: str | Path) -> None:
    """Write the LoRA adapters alone (plus the encoder if LoRA trains it) atomically."""
    from peft import get_peft_model_state_dict

    if hasattr(policy, "save_adapters"):  # a vision-language model: a peft adapter folder
        return policy.save_adapters(path)
    if not policy.lora_settings:
        raise ValueError("save_adapters: the policy has no LoRA adapters (call apply_lora first)")
    blob = {
        "format": "robopref-vla-lora-v1",
        "lora_settings": policy.lora_settings,
        "adapter": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(policy.lm).items()},
        "obs_encoder": (
            {k: v.detach().cpu() for k, v in policy.obs_encoder.state_dict().items()}
            if policy.lora_settings["train_obs_encoder"]
            else None
        ),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_adapters(policy: VLAPolicy, path: str | Path) -> VLAPolicy:
    """Load adapters written by :func:`save_adapters` into ``policy`` (applying LoRA with the saved
    settings first if the policy has none)."""
    from peft import set_peft_model_state_dict

    if hasattr(policy, "load_adapters"):  # a vision-language model: a peft adapter folder
        return policy.load_adapters(path)
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != "robopref-vla-lora-v1":
        raise ValueError(
            f"{path}: expected a robopref LoRA adapter file (format robopref-vla-lora-v1)"
        )
    if not policy.lora_settings:
        apply_lora(policy, **blob["lora_settings"])
    elif policy.lora_settings != blob["lora_settings"]:
        raise ValueError(
            f"{path}: lora settings {blob['lora_settings']} differ from the policy's "
            f"{policy.lora_settings}"
        )
    result = set_peft_model_state_dict(policy.lm, blob["adapter"])
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: adapter keys not found in the model: {unexpected[:5]}")
    if blob["obs_encoder"] is not None:
        policy.obs_encoder.load_state_dict(blob["obs_encoder"])
    return policy
