"""What a scorer says about a batch of users: the terms of every item's final score.

A scorer gives :class:`Terms` (:meth:`Scorer.terms <promptrec.scorers.base.Scorer.terms>`);
:meth:`Terms.scores` is the one place where they are added up, and
:func:`promptrec.ranking.rank` the one function that turns them into ranked lists, scoring every
item or searching an index. The terms:

* ``users`` and ``items``: a vector scorer's user vectors (the history, with a live query's
  vector mixed in) and item vectors; an item's score is their inner product;
* ``popularity``: what a user whose vector is all zeros (no history, no query) gets instead:
  each item's interactions in the fitted log, scaled to ``[0, 1]``;
* ``sparse``: non-negative terms that name few items per user, added to the scores: item
  co-occurrence with the history, the live query's lexical (BM25) match;
* ``dense``: a scorer that scores every item itself (ItemKNN, popularity, several interest
  vectors per user) gives its scores here instead of vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Terms:
    """The terms of ``[n_users, n_items]`` scores (see the module docstring)."""

    n_items: int
    users: np.ndarray | None = None
    items: np.ndarray | None = None
    popularity: np.ndarray | None = None
    sparse: sp.csr_matrix | None = None
    dense: np.ndarray | None = None
    _base: list = field(default_factory=list, repr=False, compare=False)  # the cached base

    def __post_init__(self) -> None:
        if (self.dense is None) == (self.users is None):
            raise ValueError("give a scorer's own scores (dense) or its vectors (users, items)")
        if self.users is not None and self.items is None:
            raise ValueError("user vectors need the item vectors they are scored against")

    @classmethod
    def of_scores(cls, scores: np.ndarray) -> Terms:
        """Terms of a scorer that scores every item itself."""
        scores = np.asarray(scores, dtype=np.float32)
        return cls(scores.shape[1], dense=scores)

    def __len__(self) -> int:
        return len(self.users if self.users is not None else self.dense)

    @property
    def by_vectors(self) -> bool:
        """Whether the scores are inner products of vectors (an index can rank them)."""
        return self.users is not None

    @property
    def cold(self) -> np.ndarray:
        """``[n_users]`` bool: users with nothing to go on (an all-zero vector), who get the
        popular items."""
        if self.users is None:
            return np.zeros(len(self), dtype=bool)
        return ~self.users.any(axis=1)

    def plus(self, extra: sp.csr_matrix | None) -> Terms:
        """These terms with one more non-negative sparse term added (the scores computed so
        far are kept)."""
        if extra is None:
            return self
        extra = sp.csr_matrix(extra, dtype=np.float32)
        total = extra if self.sparse is None else (self.sparse + extra).tocsr()
        return replace(self, sparse=total, _base=self._base)

    def rows(self, rows: np.ndarray) -> Terms:
        """The terms of the users at ``rows``."""
        return Terms(
            self.n_items,
            users=None if self.users is None else self.users[rows],
            items=self.items,
            popularity=self.popularity,
            sparse=None if self.sparse is None else self.sparse[rows],
            dense=None if self.dense is None else self.dense[rows],
        )

    def _vector_part(self) -> np.ndarray:
        """The scores before the sparse terms (computed once; never handed out)."""
        if not self._base:
            if self.dense is not None:
                base = self.dense
            else:
                base = self.users @ self.items.T  # type: ignore[union-attr]
                cold = self.cold
                if cold.any() and self.popularity is not None:
                    base[cold] = self.popularity
            self._base.append(np.asarray(base, dtype=np.float32))
        return self._base[0]

    def scores(self) -> np.ndarray:
        """``[n_users, n_items]`` float32: every item's final score for each user (a new
        array, the caller's to change)."""
        out = self._vector_part().copy()
        if self.sparse is not None and self.sparse.nnz:
            coo = self.sparse.tocoo()
            out[coo.row, coo.col] += coo.data  # a csr has no duplicate entries
        return out

    def scores_of(self, row: int, candidates: np.ndarray) -> np.ndarray:
        """The final scores of ``candidates`` (item positions) for the user at ``row``, the
        terms added as :meth:`scores` adds them, at the cost of the candidates."""
        if self.dense is not None:
            base = self.dense[row, candidates]
        elif self.cold[row] and self.popularity is not None:
            base = self.popularity[candidates]
        else:
            base = self.items[candidates] @ self.users[row]  # type: ignore[index]
        base = np.asarray(base, dtype=np.float32)
        if self.sparse is not None:
            base = base + self.sparse[row, candidates].toarray().ravel()
        return base

    def named(self, row: int) -> np.ndarray:
        """The items the sparse terms name for the user at ``row`` (sorted)."""
        if self.sparse is None:
            return np.zeros(0, dtype=np.int64)
        s = self.sparse
        return np.sort(s.indices[s.indptr[row] : s.indptr[row + 1]]).astype(np.int64)


def scaled_popularity(counts: np.ndarray) -> np.ndarray:
    """Interactions per item over the most popular item's: the cold users' scores."""
    counts = np.asarray(counts, dtype=np.float32)
    return counts / max(float(counts.max()) if len(counts) else 0.0, 1.0)
