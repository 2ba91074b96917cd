"""Exact search: :class:`ExactIndex`, brute force with BLAS; the choice for small catalogues."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promptrec.data.rows import AppendOnlyRows
from promptrec.retrieval.base import VectorIndex, as_rows, write_index_json
from promptrec.retrieval.config import IndexConfig
from promptrec.retrieval.topk import top_k


class ExactIndex(VectorIndex):
    """Brute-force inner product (numpy BLAS): exact, linear in the number of items."""

    def __init__(self, vectors: np.ndarray | None = None, config: IndexConfig | None = None):
        vectors = np.zeros((0, 0), np.float32) if vectors is None else vectors
        super().__init__(np.asarray(vectors).shape[1], config)
        self._rows = AppendOnlyRows(np.zeros((0, self.dim), dtype=np.float32))
        self._vectors = self._rows.view(0)
        if len(vectors):
            self.add(vectors)

    def _add(self, vectors: np.ndarray) -> None:
        if not len(self._vectors):  # the first batch: copied once, with room for more
            self._rows = AppendOnlyRows(vectors, spare=AppendOnlyRows.spare_for(len(vectors)))
            self._vectors = self._rows.view(len(vectors))
        else:  # later ones are appended in place (searches running read their own prefix)
            self._rows, self._vectors = self._rows.extended(len(self._vectors), vectors)

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._vectors[keys]

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Inner products with every key (removed ones too), ``[n_queries, size]``."""
        return as_rows(queries, self.dim) @ self._vectors.T

    def candidates(
        self,
        queries: np.ndarray,
        n: int,
        banned: np.ndarray | None = None,
        only: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.scores(queries)
        return top_k(scores, n, allowed=self._alive)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
        exact: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.reading():  # the stored vectors are exact: ``exact`` adds nothing
            eligible = self._eligible(allowed)
            return top_k(self.scores(queries), k, exclude=exclude, allowed=eligible)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "vectors.npy", self._vectors)
        np.save(out / "alive.npy", self._alive)
        write_index_json(out, "exact", self.config)
        return out

    @classmethod
    def read(cls, path: Path, config: IndexConfig) -> ExactIndex:
        """The index :meth:`save` wrote to ``path`` (its ``config`` read by the caller)."""
        vectors = np.load(path / "vectors.npy")
        index = cls(vectors, config)
        index._alive = np.load(path / "alive.npy")
        return index
