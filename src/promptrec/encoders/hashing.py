"""A model-free encoder: each word a fixed pseudo-random vector, a text the normalised sum.

Texts that share words get near vectors, as with a lexical retriever; nothing is learned, so it
is far weaker than a language model. It needs no weights and encodes about 100,000 short texts
a second on one core, which makes it the stand-in for load tests of the service at a million
items (``benchmarks/scale.py``), where what is measured is the index and the service, not the
model. Deterministic: a word's vector depends only on the word and the dimension.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence

import numpy as np

from promptrec.encoders.base import Encoder, TextKind, normalise

_WORD = re.compile(r"\w+", re.UNICODE)
_CHUNK = 8192  # texts encoded at a time


class HashingEncoder(Encoder):
    """Bag of words with a fixed random vector per word (see the module docstring).

    Args:
        dim: the vector size.
    """

    def __init__(self, dim: int = 384) -> None:
        self.dim = int(dim)
        self.name = f"hashing-{self.dim}"
        self.max_tokens = 1 << 20
        self._rows: dict[str, int] = {}
        self._table = np.zeros((0, self.dim), dtype=np.float32)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _rows_of(self, words: list[str]) -> np.ndarray:
        """Row indices into the word table for ``words`` (new words get their vectors)."""
        with self._lock:
            new = [w for w in dict.fromkeys(words) if w not in self._rows]
            if new:
                fresh = np.stack([self._word_vector(w) for w in new])
                self._rows.update({w: len(self._rows) + i for i, w in enumerate(new)})
                self._table = np.concatenate([self._table, fresh])
            return np.fromiter((self._rows[w] for w in words), np.int64, len(words))

    def _word_vector(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: TextKind = "document",
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # a chunk of texts at a time: their word vectors are gathered before they are summed
        # (all of a million items' words at once would take 23 GB)
        for start in range(0, len(texts), _CHUNK):
            words = [_WORD.findall(t.lower()) or [""] for t in texts[start : start + _CHUNK]]
            rows = self._rows_of([w for ws in words for w in ws])
            starts = np.cumsum([0] + [len(ws) for ws in words[:-1]])
            summed = np.add.reduceat(self._table[rows], starts, axis=0)
            out[start : start + len(words)] = normalise(summed)
        return out

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text)) + 2
