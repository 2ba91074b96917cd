"""The encoder contract: texts in, L2-normalised float32 vectors out.

Users (prompts) are *queries*, items are *documents*; asymmetric models (E5) use the
distinction, symmetric ones (MiniLM) ignore it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import numpy as np

TextKind = Literal["query", "document"]


class Encoder(ABC):
    """Base class of every text encoder.

    Attributes:
        name: a stable id of the model and its settings (part of cache keys).
        dim: the vector size.
        max_tokens: the longest input the model reads, in its own tokens.
    """

    name: str
    dim: int
    max_tokens: int

    @abstractmethod
    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: TextKind = "document",
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Vectors of shape ``[len(texts), dim]``, float32, each of unit length."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """The length of ``text`` in the model's tokens (special tokens included)."""


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
