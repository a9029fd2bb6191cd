"""Randomly initialised image-text-to-text model folders, built offline (nothing downloaded).

For tests, cost measurements and trying the VLM path without a checkpoint: a word-level tokenizer
(``tokenizers``) over the given words plus filler words up to ``vocab_size``, the family's special
tokens added after them (as in the published checkpoints), the family's image processor and a
chat template, and a model from a config, all written with ``save_pretrained``.

>>> save_random_vlm("tiny-llava", "llava", words=["reach", "the", "goal"])
>>> policy = load_vlm("tiny-llava")
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robopref.policies.vla.tokenizer import split_words

SPECIALS = {
    "idefics3": ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"],
    "llava": ["<image>"],
}
CHAT = {
    "idefics3": (
        "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %} {{ c['text'] }}"
        "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
    "llava": (
        "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
}

SMOLVLM_256M: dict[str, Any] = {
    "family": "idefics3",
    "vocab_size": 49152,
    "text": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192,
    ),
    "vision": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        image_size=512, patch_size=16,
    ),
    "scale_factor": 4,
    "image_size": 512,
}  # fmt: skip
"""The published sizes of SmolVLM-256M (SmolLM2-135M text model, a 93M SigLIP vision tower,
pixel shuffle 4: 64 image tokens per 512x512 frame), for cost measurements."""


def _tokenizer(words: Sequence[str], vocab_size: int, specials: Sequence[str]) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "?", ":", "."]
    vocab: dict[str, int] = {}
    for w in [*base, *(t for text in words for t in split_words(text))]:
        vocab.setdefault(w, len(vocab))
    for extra in ("user", "assistant", "what", "action", "should", "the", "robot", "take", "to"):
        vocab.setdefault(extra, len(vocab))
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size: expected >= {len(vocab)} (the words), found {vocab_size}")
    i = 0
    while len(vocab) < vocab_size:
        vocab.setdefault(f"w{i}", len(vocab))
        i += 1
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.normalizer = normalizers.Lowercase()
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>",
    )  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def save_random_vlm(
    folder: str | Path,
    family: str = "idefics3",
    words: Sequence[str] = (),
    vocab_size: int = 600,
    text: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
    image_size: int = 32,
    scale_factor: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random ``family`` model ("idefics3" = SmolVLM's architecture, or "llava") with a
    Llama text model, its processor and tokenizer to ``folder``; returns ``folder``.

    Args:
        words: texts whose words the tokenizer knows (the instructions).
        vocab_size: base vocabulary (before the family's added special tokens).
        text, vision: config fields of the text model (Llama) and the vision tower; defaults
            are tiny (hidden 32, 2 layers).
        image_size: the vision tower's (and processor's) square input size (pixels).
        scale_factor: Idefics3's pixel shuffle (image tokens = (image_size / patch)^2 / s^2).
    """
    from transformers import CLIPImageProcessor, Idefics3ImageProcessor

    if family not in SPECIALS:
        raise ValueError(f"family: expected one of {sorted(SPECIALS)}, found {family!r}")
    folder = Path(folder)
    tok = _tokenizer(words, vocab_size, SPECIALS[family])
    image_id = tok.convert_tokens_to_ids("<image>")
    t = dict(
        model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, pad_token_id=0,
        bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )  # fmt: skip
    t.update(text or {})
    v = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    v.update(dict(image_size=image_size, patch_size=max(image_size // 4, 1)))
    v.update(vision or {})
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        if family == "idefics3":
            from transformers import (
                Idefics3Config,
                Idefics3ForConditionalGeneration,
                Idefics3Processor,
            )

            patches = (v["image_size"] // v["patch_size"]) ** 2
            edge = {"longest_edge": v["image_size"]}
            ip = Idefics3ImageProcessor(do_image_splitting=False, size=edge, max_image_size=edge)
            processor = Idefics3Processor(
                ip, tok, image_seq_len=patches // scale_factor**2, chat_template=CHAT[family]
            )
            config = Idefics3Config(
                vision_config=v, text_config=t, scale_factor=scale_factor,
                image_token_id=image_id, pad_token_id=0,
                tie_word_embeddings=t["tie_word_embeddings"],
            )  # fmt: skip
            model = Idefics3ForConditionalGeneration(config)
        else:
            from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

            size = v["image_size"]
            ip = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
            processor = LlavaProcessor(
                ip, tok, patch_size=v["patch_size"], vision_feature_select_strategy="default",
                chat_template=CHAT[family], num_additional_image_tokens=1,
            )  # fmt: skip
            config = LlavaConfig(
                vision_config={"model_type": "clip_vision_model", "projection_dim": 32, **v},
                text_config=t, image_token_id=image_id, vision_feature_layer=-1,
                vision_feature_select_strategy="default",
                tie_word_embeddings=t["tie_word_embeddings"],
            )  # fmt: skip
            model = LlavaForConditionalGeneration(config)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder
