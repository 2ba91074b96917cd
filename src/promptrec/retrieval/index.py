"""The retrieval contract: a vector index answering top-K inner-product queries.

:class:`ExactIndex` is brute force on normalised vectors (exact, fine to ~1M items on a CPU in
batches). Approximate indexes (faiss, hnswlib) and vector databases implement the same two
methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from promptrec.retrieval.topk import top_k


class VectorIndex(ABC):
    """Top-K by inner product over item vectors."""

    @abstractmethod
    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Inner products, ``[n_queries, n_items]``."""

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the ``k`` best items per query, best first."""
        return top_k(self.scores(queries), k, exclude=exclude, allowed=allowed)


class ExactIndex(VectorIndex):
    """Brute-force inner product (numpy BLAS)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return np.asarray(queries, dtype=np.float32) @ self.vectors.T
