"""ItemKNN: item-item cosine similarity on co-occurrence (Sarwar et al., WWW 2001).

Same formulation as RecBole's ItemKNN (the peer baseline in ``shared/BASELINES.md``): binary
user-item matrix, cosine similarity with an optional shrink term, the ``k`` nearest neighbours
kept per item, and a user's score for an item the sum of its similarities to the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.errors import ConfigError
from promptrec.scorers.base import Scorer


def interaction_matrix(data: Dataset) -> sp.csr_matrix:
    """Binary users x items matrix of ``data``'s log (users in order of first appearance)."""
    ev = data.events
    items = ev["item_id"].map(data.item_index.as_dict())
    keep = items.notna().to_numpy()
    users, _ = ev["user_id"][keep].factorize()
    cols = items[keep].to_numpy(dtype=np.int64)
    m = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (users, cols)),
        shape=(int(users.max()) + 1 if len(users) else 0, data.n_items),
    )
    m.data[:] = 1.0  # duplicates summed by the constructor count once
    return m


class ItemKNNScorer(Scorer):
    """Item-based collaborative filtering.

    Args:
        k: neighbours kept per item (RecBole default 100).
        shrink: added to the cosine denominator to damp rare co-occurrences.
    """

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"itemknn k must be at least 1, got {k}")
        self.k = k
        self.shrink = shrink

    def fit(self, data: Dataset) -> ItemKNNScorer:
        x = interaction_matrix(data)
        co = (x.T @ x).tocsr().astype(np.float32)  # [items, items] co-occurrence counts
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
        co = co.tocoo()
        denom = norms[co.row] * norms[co.col] + self.shrink + 1e-12
        sim = sp.csr_matrix((co.data / denom, (co.row, co.col)), shape=co.shape)
        # keep each target item's k nearest neighbours (row i), then transpose so that
        # history @ similarity sums sim[i, j] over history items j for every target i
        self.similarity = _keep_top_k_per_row(sim, self.k).T.tocsr()
        self.data = data
        return self

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate([h.items for h in histories]) if len(rows) else np.zeros(0, int)
        h = sp.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (rows, cols)),
            shape=(len(histories), self.data.n_items),  # type: ignore[union-attr]
        )
        h.data[:] = 1.0
        return np.asarray((h @ self.similarity).todense(), dtype=np.float32)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "shrink": self.shrink}


def _keep_top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    m = m.tocsr()
    m.sort_indices()
    indptr, indices, data = m.indptr, m.indices, m.data
    keep = np.zeros(len(data), dtype=bool)
    for row in range(m.shape[0]):
        s, e = indptr[row], indptr[row + 1]
        if e - s <= k:
            keep[s:e] = True
        else:
            top = np.argpartition(-data[s:e], k - 1)[:k]
            keep[s + top] = True
    rows = np.repeat(np.arange(m.shape[0]), np.diff(indptr))
    return sp.csr_matrix((data[keep], (rows[keep], indices[keep])), shape=m.shape)
