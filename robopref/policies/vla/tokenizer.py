"""Action and instruction tokenisers of the VLA policies.

Actions: each of the ``act_dim`` dimensions is discretised into ``n_bins = 256`` uniform bins over
``[-1, 1]`` (the OpenVLA scheme, Kim et al. 2024) and bin ``k`` is written as token id
``vocab_size - n_bins + k``: the LAST ``n_bins`` ids of the language model's vocabulary (OpenVLA
overwrites the least-used tokens of Llama-2's vocabulary the same way; it counts the bins down from
the last id, here they count up, which only permutes the bins). Decoding returns the bin centres,
so ``decode(encode(a))`` is within half a bin width (``1 / n_bins``) of ``clip(a, -1, 1)`` and
``encode(decode(ids)) == ids`` exactly.

Instructions: a tiny word-level tokenizer built offline from the instructions (no download), for
randomly initialised language models; a pretrained model brings its own Hugging Face tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")


class ActionTokenizer:
    """Continuous actions ``[..., act_dim]`` in ``[low, high]`` <-> token ids ``[..., act_dim]``.

    Args:
        vocab_size: size of the language model's vocabulary (the text tokenizer's, *including*
            the action tokens); the action tokens are ids ``[vocab_size - n_bins, vocab_size)``.
        n_bins: bins per action dimension (256 as in OpenVLA and GRAPE).
        low, high: the action range; values outside are clipped before discretisation.
    """

    def __init__(self, vocab_size: int, n_bins: int = 256, low: float = -1.0, high: float = 1.0):
        if n_bins < 2:
            raise ValueError(f"n_bins: expected >= 2, found {n_bins}")
        if vocab_size < n_bins:
            raise ValueError(
                f"vocab_size: expected >= n_bins = {n_bins} (the action tokens are the last "
                f"n_bins ids of the vocabulary), found {vocab_size}"
            )
        if not high > low:
            raise ValueError(f"action range: expected low < high, found low={low}, high={high}")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.low, self.high = float(low), float(high)
        self.start = self.vocab_size - self.n_bins  # id of bin 0
        self.edges = np.linspace(self.low, self.high, self.n_bins + 1)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / self.n_bins

    def to_bins(self, actions: np.ndarray) -> np.ndarray:
        """Bin indices ``[..., act_dim]`` int64 in ``[0, n_bins)`` of ``actions`` (clipped)."""
        a = np.clip(np.asarray(actions, dtype=np.float64), self.low, self.high)
        bins = np.floor((a - self.low) / self.bin_width).astype(np.int64)
        return np.clip(bins, 0, self.n_bins - 1)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Token ids ``[..., act_dim]`` int64 (the last ``n_bins`` ids of the vocabulary)."""
        return self.to_bins(actions) + self.start

    def bins_of(self, token_ids: np.ndarray) -> np.ndarray:
        """Bin indices of action token ids; raises if an id is not an action token."""
        ids = np.asarray(token_ids, dtype=np.int64)
        bad = (ids < self.start) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(
                f"token_ids: expected action token ids in [{self.start}, {self.vocab_size}), "
                f"found {ids[bad].ravel()[:5].tolist()}"
            )
        return ids - self.start

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Actions ``[..., act_dim]`` float32: the centres of the bins of ``token_ids``."""
        return self.centres[self.bins_of(token_ids)].astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"ActionTokenizer(vocab_size={self.vocab_size}, n_bins={self.n_bins}, "
            f"range=[{self.low}, {self.high}])"
        )


def split_words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``."""
    return _WORD.findall(text.lower())


class WordActionTokenizer:
    """A word-level text tokenizer built offline, followed by ``n_action_tokens`` action tokens.

    Ids: ``0..3`` are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``, then the words, then the action
    tokens ``<act_0> .. <act_{n-1}>`` at the END of the vocabulary, so that
    ``ActionTokenizer(len(tokenizer))`` maps bins onto them. ``vocab_size == len(tokenizer)``
    (as for a Hugging Face tokenizer without added tokens).
    """

    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, words: Sequence[str], n_action_tokens: int = 256):
        words = [w for w in dict.fromkeys(words) if w not in self.specials]
        self.words = list(words)
        self.n_action_tokens = int(n_action_tokens)
        tokens = [*self.specials, *self.words, *(f"<act_{k}>" for k in range(n_action_tokens))]
        self.vocab = {w: i for i, w in enumerate(tokens)}
        self.inverse = tokens
        self.pad_token_id, self.bos_token_id, self.eos_token_id, self.unk_token_id = range(4)

    @classmethod
    def from_texts(cls, texts: Iterable[str], n_action_tokens: int = 256) -> WordActionTokenizer:
        """Vocabulary = the words of ``texts`` (see :func:`split_words`), in order of appearance."""
        words: dict[str, None] = {}
        for text in texts:
            words.update(dict.fromkeys(split_words(text)))
        return cls(list(words), n_action_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.inverse)

    def __len__(self) -> int:
        return len(self.inverse)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (``<bos>`` first when ``add_special_tokens``); unknown words are
        ``<unk>``."""
        ids = [self.vocab.get(w, self.unk_token_id) for w in split_words(text)]
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.inverse[int(i)] for i in ids)
