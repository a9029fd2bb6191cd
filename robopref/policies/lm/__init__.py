"""Preference fine-tuning of language policies with the shared pairwise/listwise loss core.

A prompt x comes with K ranked responses y_1..y_K and graded labels psi_k (higher = preferred).
The policy pi scores each response by its implicit reward (DPO family, see docs/rooms/lm.md)

    s_k = beta * sum_t [log pi(y_k,t | x, y_k,<t) - log pi_ref(y_k,t | x, y_k,<t)]

summed over the response tokens only, and any loss of :mod:`robopref.losses` turns
(scores [B, K], labels [B, K], mask [B, K]) into a scalar: ``"bt"`` is DPO, ``"lipo_lambda"`` is
LiPO-lambda, ``"plackett_luce"`` is DPO-PL, ... The reference pi_ref is the frozen initial policy
(a deep copy, or the base model with the LoRA adapters switched off).

Data format (JSONL, one line per prompt; K may vary from line to line)::

    {"prompt": "repeat b 3 :", "responses": ["b b b", "b b", ...], "scores": [3.0, 2.0, ...]}

Everything runs offline: a real model is read with ``from_pretrained(local_path,
local_files_only=True)``; tests use :func:`build_tiny_model` and :class:`WordTokenizer`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robopref.losses import get_loss, log_ratio_scores
from robopref.utils import resolve_device, seed_everything

__all__ = [
    "LMDataError",
    "PreferenceExample",
    "load_preference_jsonl",
    "WordTokenizer",
    "build_tiny_model",
    "load_pretrained",
    "EncodedExample",
    "LMBatch",
    "encode_examples",
    "collate",
    "token_logps",
    "sequence_logps",
    "ranking_metrics",
    "loss_options_for",
    "LMPreferenceTrainer",
]


# ----------------------------------------------------------------------------------------------
# Data: JSONL loader with errors that name the file, the line and the field
# ----------------------------------------------------------------------------------------------


class LMDataError(ValueError):
    """A preference JSONL file that does not follow the documented format."""


@dataclass(frozen=True)
class PreferenceExample:
    """One prompt with K >= 2 responses and their graded labels (higher = preferred)."""

    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.responses) != len(self.scores):
            raise LMDataError(
                f"PreferenceExample: expected one score per response, found "
                f"{len(self.responses)} responses and {len(self.scores)} scores"
            )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_preference_line(obj: Any, where: str) -> PreferenceExample:
    """Validate one decoded JSON line; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(obj, dict):
        raise LMDataError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    for key in ("prompt", "responses", "scores"):
        if key not in obj:
            raise LMDataError(
                f"{where}: field '{key}' is missing (expected keys 'prompt', 'responses', "
                f"'scores'; found {sorted(obj)})"
            )
    prompt, responses, scores = obj["prompt"], obj["responses"], obj["scores"]
    if not isinstance(prompt, str):
        raise LMDataError(
            f"{where}: field 'prompt': expected a string, found {type(prompt).__name__}"
        )
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise LMDataError(f"{where}: field 'responses': expected a list of strings")
    if len(responses) < 2:
        raise LMDataError(
            f"{where}: field 'responses': expected at least 2 responses, found {len(responses)}"
        )
    if not isinstance(scores, list) or not all(_is_number(s) for s in scores):
        raise LMDataError(f"{where}: field 'scores': expected a list of finite numbers")
    if len(scores) != len(responses):
        raise LMDataError(
            f"{where}: field 'scores': expected {len(responses)} scores (one per response), "
            f"found {len(scores)}"
        )
    return PreferenceExample(prompt, tuple(responses), tuple(float(s) for s in scores))


def load_preference_jsonl(path: str | Path) -> list[PreferenceExample]:
    """Read a preference JSONL file: one ``{"prompt", "responses", "scores"}`` object per line.

    Blank lines are skipped; extra keys (``"id"``, metadata) are ignored. Raises
    :class:`LMDataError` naming the file, the 1-based line number and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise LMDataError(f"{path}: preference file does not exist")
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LMDataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
            examples.append(parse_preference_line(obj, where))
    if not examples:
        raise LMDataError(f"{path}: no preference lines found (expected JSONL, one per prompt)")
    return examples


# ----------------------------------------------------------------------------------------------
# Tokeniser and models (tiny offline ones for tests; local pretrained ones for real runs)
# ----------------------------------------------------------------------------------------------


class Tokenizer(Protocol):
    """What the trainer needs from a tokenizer (a Hugging Face tokenizer satisfies it)."""

    eos_token_id: int | None
    pad_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...


class WordTokenizer:
    """A whitespace word-level tokenizer built offline from texts (for tiny models and tests).

    Ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; ``encode(text,
    add_special_tokens=True)`` prepends ``<bos>``. Words not in the vocabulary map to ``<unk>``.
    """

    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, vocab: Sequence[str]):
        words = list(self.specials) + [w for w in vocab if w not in self.specials]
        self.vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
        self.inverse = {i: w for w, i in self.vocab.items()}
        self.pad_token_id, self.bos_token_id, self.eos_token_id, self.unk_token_id = range(4)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """Vocabulary = every whitespace-separated word of ``texts``, in order of appearance."""
        words: dict[str, None] = {}
        for text in texts:
            words.update(dict.fromkeys(text.split()))
        return cls(list(words))

    @classmethod
    def from_examples(cls, examples: Iterable[PreferenceExample]) -> WordTokenizer:
        return cls.from_texts(t for ex in examples for t in (ex.prompt, *ex.responses))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.vocab.get(w, self.unk_token_id) for w in text.split()]
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.inverse[int(i)] for i in ids)


def build_tiny_model(
    vocab_size: int,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 64,
    seed: int = 0,
) -> nn.Module:
    """A randomly initialised GPT-2 causal LM (dropout off), built from a config, no download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def load_pretrained(path: str | Path, dtype: str = "auto") -> tuple[nn.Module, Tokenizer]:
    """Load a causal LM and its tokenizer from a LOCAL directory (never downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model path '{path}' is not a directory (expected a local Hugging Face model folder)"
        )
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


# ----------------------------------------------------------------------------------------------
# Encoding: prompt + response token ids with the response-token mask
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one prompt (with BOS if the tokenizer adds one) and of its K responses
    (each ending with EOS), plus the K graded labels."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[tuple[int, ...], ...]
    scores: tuple[float, ...]


def encode_examples(
    examples: Sequence[PreferenceExample], tokenizer: Tokenizer, max_length: int | None = None
) -> list[EncodedExample]:
    """Tokenise prompt and responses separately (response + EOS) so the boundary is exact.

    With ``max_length``, the prompt is cut from the left and then the response from the right so
    that prompt + response fits; at least one prompt token is kept (the first token of a
    sequence has no log-probability).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id: expected one to end every response")
    out = []
    for ex in examples:
        prompt = list(tokenizer.encode(ex.prompt, add_special_tokens=True))
        if not prompt:
            prompt = [eos]  # an empty prompt without BOS: condition the response on EOS
        responses = []
        for r in ex.responses:
            resp = list(tokenizer.encode(r, add_special_tokens=False)) + [eos]
            if max_length is not None:
                resp = resp[: max_length - 1]
            responses.append(tuple(resp))
        if max_length is not None:
            keep = max(1, max_length - max(len(r) for r in responses))
            prompt = prompt[-keep:]
        out.append(EncodedExample(tuple(prompt), tuple(responses), ex.scores))
    return out


@dataclass
class LMBatch:
    """B prompts with up to K responses each, flattened to the N valid (prompt, response) rows.

    input_ids, attention_mask, response_mask: [N, T] (right-padded; response_mask is 1 on the
    response tokens incl. EOS). index: [N] position of each row in the flattened [B * K] grid.
    labels: [B, K] float; mask: [B, K] bool (False for padding slots when K varies).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device) -> LMBatch:
        return LMBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def collate(examples: Sequence[EncodedExample], pad_token_id: int = 0) -> LMBatch:
    """Pad a list of encoded examples into an :class:`LMBatch`."""
    b, k = len(examples), max(len(ex.response_ids) for ex in examples)
    rows, index = [], []
    labels = torch.zeros(b, k)
    mask = torch.zeros(b, k, dtype=torch.bool)
    for i, ex in enumerate(examples):
        for j, resp in enumerate(ex.response_ids):
            rows.append((ex.prompt_ids, resp))
            index.append(i * k + j)
            labels[i, j] = ex.scores[j]
            mask[i, j] = True
    t = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), t), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), t, dtype=torch.long)
    response_mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for n, (p, r) in enumerate(rows):
        input_ids[n, : len(p) + len(r)] = torch.tensor(p + r)
        attention_mask[n, : len(p) + len(r)] = 1
        response_mask[n, len(p) : len(p) + len(r)] = True
    return LMBatch(input_ids, attention_mask, response_mask, torch.tensor(index), labels, mask)


# ----------------------------------------------------------------------------------------------
# Log-probabilities
# ----------------------------------------------------------------------------------------------


def token_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log pi(x_t | x_<t) of the response tokens.

    Args: input_ids, attention_mask, response_mask: [N, T] (response_mask True/1 on the tokens
    to score). Returns (logps [N, T - 1] in nats, zero where not scored; mask [N, T - 1] bool),
    aligned with the targets input_ids[:, 1:].
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != response_mask.shape:
        raise ValueError(
            f"token_logps: expected input_ids, attention_mask, response_mask of one shape [N, T], "
            f"found {tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, "
            f"{tuple(response_mask.shape)}"
        )
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    return logp.masked_fill(~mask, 0.0), mask


def sequence_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """log pi(response | prompt) = sum of the response tokens' log-probabilities: [N] nats."""
    logp, _ = token_logps(model, input_ids, attention_mask, response_mask)
    return logp.sum(-1)


def _to_grid(rows: torch.Tensor, index: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """Scatter per-row values [N, ...] into a zero-filled [B, K, ...] grid."""
    grid = rows.new_zeros((b * k, *rows.shape[1:]))
    grid = grid.index_copy(0, index, rows)
    return grid.view(b, k, *rows.shape[1:])


# ----------------------------------------------------------------------------------------------
# Ranking metrics
# ----------------------------------------------------------------------------------------------


def ranking_metrics(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, tol: float = 1e-6
) -> dict[str, float]:
    """Agreement of model scores [B, K] with graded labels [B, K] (mask [B, K] bool).

    - ``top1``: per prompt, the probability that the item the model ranks first (ties broken
      uniformly at random) carries the highest label; mean over prompts. Chance = (number of
      top-labelled items) / K, i.e. 1/K without label ties.
    - ``pair``: over all pairs with label_i > label_j, the fraction with s_i > s_j; a model tie
      (|s_i - s_j| <= tol) counts 1/2. Chance = 0.5.
    """
    scores, labels, mask = scores.detach().float(), labels.float(), mask.bool()
    s = scores.masked_fill(~mask, -math.inf)
    top_model = mask & (s >= s.max(-1, keepdim=True).values - tol)
    top_label = mask & (labels == labels.masked_fill(~mask, -math.inf).max(-1, keepdim=True).values)
    top1 = (top_model & top_label).sum(-1).float() / top_model.sum(-1).float()
    pairs = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    diff = scores[:, :, None] - scores[:, None, :]
    credit = (diff > tol).float() + 0.5 * (diff.abs() <= tol).float()
    pair = (credit * pairs).sum() / pairs.sum().clamp(min=1)
    return {"top1": top1.mean().item(), "pair": pair.item()}


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


def loss_options_for(loss: str, options: dict[str, Any] | None, beta: float) -> dict[str, Any]:
    """Options for ``get_loss``. IPO takes the trainer's beta: the scores handed to the loss are
    ``beta * log-ratio``, so IPO gets ``beta`` and ``scores_include_beta=True`` and computes
    TRL's ``(h_w - h_l - 1 / (2 beta))^2`` on the unscaled log-ratio h."""
    options = dict(options or {})
    if str(loss).lower() == "ipo":
        clash = sorted({"beta", "scores_include_beta"} & set(options))
        if clash:
            raise ValueError(
                f"loss_options: {clash} are set by the trainer for IPO (its beta is the "
                f"trainer's beta={beta}); remove them from loss_options"
            )
        options.update(beta=beta, scores_include_beta=True)
    return options


class LMPreferenceTrainer:
    """Preference fine-tuning of a causal LM with any loss of :mod:`robopref.losses`.

    Args:
        policy: a causal LM (``model(input_ids, attention_mask).logits`` [N, T, V]).
        tokenizer: anything with ``encode(text, add_special_tokens)`` and ``eos_token_id``.
        loss: registry name (``"bt"``/``"dpo"``, ``"slic"``, ``"ipo"``, ``"listnet"``,
            ``"plackett_luce"``, ``"lipo_lambda"``); ``loss_options`` go to ``get_loss``
            (e.g. ``{"margin": 1.0}`` for SLiC). For IPO the trainer's ``beta`` is IPO's beta.
        beta: scale of the implicit reward s = beta * (log pi - log pi_ref) (KL strength).
        length_normalize: divide each response's log-ratio by its token count (nats per token),
            as TRL's IPO does; ``False`` (default) sums over tokens, DPO's sequence log-ratio.
        lora: a ``peft.LoraConfig``; when given only the adapters train and the reference is the
            base model with the adapters disabled; otherwise the reference is a frozen copy.
        lr, weight_decay, max_grad_norm: AdamW and gradient clipping.
        batch_size: prompts per step (each brings its K responses).
        device: ``"auto"`` = CUDA when present. seed: data order (and torch RNG).
        log_dir: TensorBoard directory (optional). progress: show a tqdm bar.
    """

    def __init__(
        self,
        policy: nn.Module,
        tokenizer: Tokenizer,
        loss: str = "bt",
        loss_options: dict[str, Any] | None = None,
        beta: float = 0.1,
        length_normalize: bool = False,
        lora: Any | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 1.0,
        batch_size: int = 8,
        max_length: int | None = None,
        device: str = "auto",
        seed: int = 0,
        log_dir: str | Path | None = None,
        progress: bool = True,
    ):
        if beta <= 0:
            raise ValueError(f"beta: expected a positive number, found {beta}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        self.device = resolve_device(device)
        self.seed = seed
        seed_everything(seed)
        self.tokenizer = tokenizer
        self.loss_name = loss
        self.loss_fn = get_loss(loss, **loss_options_for(loss, loss_options, beta))
        self.beta = beta
        self.length_normalize = length_normalize
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_grad_norm = max_grad_norm
        self.progress = progress
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id

        policy = policy.to(self.device)
        if lora is not None:
            from peft import get_peft_model

            self.reference = None  # the base model with adapters disabled
            self.policy = get_peft_model(policy, lora)
        else:
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
            self.policy = policy
        # Dropout off for policy and reference alike (as TRL's DPO does by default), so that
        # s = 0 exactly at the start and the log-ratio measures learning, not noise.
        self.policy.eval()
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))
        self.step = 0

    # -- scoring ----------------------------------------------------------------------------

    def encode(self, examples: Sequence[PreferenceExample]) -> list[EncodedExample]:
        return encode_examples(examples, self.tokenizer, self.max_length)

    def _reference_logps(self, batch: LMBatch) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is None:
                with self.policy.disable_adapter():
                    ref, _ = token_logps(
                        self.policy, batch.input_ids, batch.attention_mask, batch.response_mask
                    )
            else:
                ref, _ = token_logps(
                    self.reference, batch.input_ids, batch.attention_mask, batch.response_mask
                )
        return ref

    def forward(self, batch: LMBatch) -> dict[str, torch.Tensor]:
        """Scores of a batch: ``scores`` [B, K] = beta * sum_t (log pi - log pi_ref) and the
        policy's sequence log-likelihoods ``logp`` [B, K] (nats; padding slots are 0)."""
        b, k = batch.labels.shape
        logp, tmask = token_logps(
            self.policy, batch.input_ids, batch.attention_mask, batch.response_mask
        )
        ref = self._reference_logps(batch)
        logp_g = _to_grid(logp, batch.index, b, k)
        ref_g = _to_grid(ref, batch.index, b, k)
        tmask_g = _to_grid(tmask, batch.index, b, k)
        scores = log_ratio_scores(logp_g, ref_g, tmask_g, self.beta, average=self.length_normalize)
        return {"scores": scores, "logp": logp_g.sum(-1), "ntokens": tmask_g.sum(-1)}

    # -- training -----------------------------------------------------------------------------

    def _batches(self, encoded: Sequence[EncodedExample], shuffle: bool) -> Iterable[LMBatch]:
        order = (
            torch.randperm(len(encoded), generator=self.generator).tolist()
            if shuffle
            else list(range(len(encoded)))
        )
        for start in range(0, len(order), self.batch_size):
            chunk = [encoded[i] for i in order[start : start + self.batch_size]]
            yield collate(chunk, self.pad_token_id).to(self.device)

    def train(
        self, examples: Sequence[PreferenceExample], epochs: int = 1
    ) -> list[dict[str, float]]:
        """Run ``epochs`` passes over ``examples``; returns the per-epoch mean loss and
        training ranking accuracy of the implicit reward."""
        from robopref.progress import bar as progress_bar

        encoded = self.encode(examples)
        steps_per_epoch = math.ceil(len(encoded) / self.batch_size)
        history = []
        bar = progress_bar(
            epochs * steps_per_epoch, f"lm[{self.loss_name}]", unit="step", enabled=self.progress
        )
        self.policy.eval()  # dropout stays off (see __init__); gradients flow regardless
        for epoch in range(epochs):
            total, top1, n = 0.0, 0.0, 0
            for batch in self._batches(encoded, shuffle=True):
                out = self.forward(batch)
                loss = self.loss_fn(out["scores"], batch.labels, batch.mask)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]],
                        self.max_grad_norm,
                    )
                self.optimizer.step()
                bsz = batch.labels.shape[0]
                acc = ranking_metrics(out["scores"], batch.labels, batch.mask)["top1"]
                total, top1, n = total + loss.item() * bsz, top1 + acc * bsz, n + bsz
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", loss.item(), self.step)
                    self.writer.add_scalar("train/reward_top1", acc, self.step)
                self.step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            history.append({"epoch": epoch, "loss": total / n, "reward_top1": top1 / n})
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        return history

    @torch.no_grad()
    def evaluate(self, examples: Sequence[PreferenceExample], prefix: str = "") -> dict[str, float]:
        """Held-out metrics (see :func:`ranking_metrics` and docs/rooms/lm.md):

        - ``reward_top1`` / ``reward_pair``: ranking accuracy of the implicit reward
          s = beta * (log pi - log pi_ref) (0.25 / 0.5 at the start, where s = 0 for all);
        - ``logp_top1`` / ``logp_pair``: the same for the policy's own log pi(y | x), i.e. would
          the policy itself pick the best response;
        - ``top_logp``: mean log pi(y_best | x) in nats (first top-labelled response);
          ``top_logp_per_token`` the same divided by its token count;
        - ``logp_margin``: mean over prompts of log pi(y_best) - mean log pi(other responses);
        - ``loss``: the training loss on these prompts.
        """
        encoded = self.encode(examples)
        scores, logp, ntok, labels, mask, losses = [], [], [], [], [], []
        for batch in self._batches(encoded, shuffle=False):
            out = self.forward(batch)
            losses.append(
                self.loss_fn(out["scores"], batch.labels, batch.mask).item() * len(batch.labels)
            )
            k = batch.labels.shape[1]
            pad = (0, max(len(ex.response_ids) for ex in encoded) - k)
            scores.append(nn.functional.pad(out["scores"], pad).cpu())
            logp.append(nn.functional.pad(out["logp"], pad).cpu())
            ntok.append(nn.functional.pad(out["ntokens"], pad).cpu())
            labels.append(nn.functional.pad(batch.labels, pad).cpu())
            mask.append(nn.functional.pad(batch.mask, pad).cpu())
        scores, logp, ntok = torch.cat(scores), torch.cat(logp), torch.cat(ntok)
        labels, mask = torch.cat(labels), torch.cat(mask)
        reward = ranking_metrics(scores, labels, mask)
        lik = ranking_metrics(logp, labels, mask)
        best = labels.masked_fill(~mask, -math.inf).argmax(-1, keepdim=True)
        top_logp = logp.gather(1, best).squeeze(1)
        top_ntok = ntok.gather(1, best).squeeze(1).float()
        others = mask.clone().scatter_(1, best, False)
        other_mean = (logp * others).sum(-1) / others.sum(-1).clamp(min=1)
        metrics = {
            "reward_top1": reward["top1"],
            "reward_pair": reward["pair"],
            "logp_top1": lik["top1"],
            "logp_pair": lik["pair"],
            "top_logp": top_logp.mean().item(),
            "top_logp_per_token": (top_logp / top_ntok).mean().item(),
            "logp_margin": (top_logp - other_mean).mean().item(),
            "loss": sum(losses) / len(encoded),
        }
        if self.writer is not None and prefix:
            for key, value in metrics.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, self.step)
        return metrics

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.policy.parameters() if p.requires_grad)

    def save(self, path: str | Path) -> None:
        """``save_pretrained`` of the policy (only the adapters under LoRA)."""
        self.policy.save_pretrained(str(path))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
