"""ItemKNN: item-item cosine similarity on co-occurrence (Sarwar et al., WWW 2001).

Same formulation as RecBole's ItemKNN (the peer baseline in ``shared/BASELINES.md``): binary
user-item matrix, cosine similarity with an optional shrink term, the ``k`` nearest neighbours
kept per item, and a user's score for an item the sum of its similarities to the history.

``decay`` below 1 weights the history by recency (the newest item 1, the one before it
``decay``, then ``decay**2``...), as session-based neighbourhood methods do; a trained model
adds this term to its own scores (:attr:`promptrec.train.config.ScoringConfig.cooccurrence_weight`).
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.errors import ConfigError, ModelError
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
        decay: recency weighting of the history (1: every item counts the same; an item seen
            more than once counts once, at its newest position).
    """

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0, decay: float = 1.0) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"itemknn k must be at least 1, got {k}")
        self.k = k
        self.shrink = shrink
        self.decay = _checked_decay(decay)

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

    @classmethod
    def from_table(
        cls, table: sp.csr_matrix, rows: np.ndarray, data: Dataset, decay: float = 1.0
    ) -> ItemKNNScorer:
        """A scorer of ``data`` from a similarity table fitted before, over another item order
        (:attr:`similarity` of a fitted scorer): ``rows[i]`` is catalogue item ``i``'s row in
        the table (-1: an item the table does not know, which co-occurs with nothing). When
        the orders are the same the table is used as it is (a memory-mapped one stays shared
        with the other processes that map it); otherwise its entries are moved to their
        catalogue rows. Nothing is counted from ``data``'s log.
        """
        scorer = cls(decay=decay)
        n, known = data.n_items, table.shape[0]
        if (
            n >= known
            and np.array_equal(rows[:known], np.arange(known))
            and (rows[known:] < 0).all()
        ):  # the training catalogue, perhaps with items appended: the table shared, padded
            scorer.similarity = _padded(table, n)
        else:
            where = np.full(table.shape[0], -1, dtype=np.int64)
            known = rows >= 0
            where[rows[known]] = np.flatnonzero(known)
            scorer.similarity = _moved(table, where, n)
        scorer.data = data
        return scorer

    def with_decay(self, decay: float) -> ItemKNNScorer:
        """This fitted scorer with another recency ``decay``: the similarities, which the
        decay does not touch, are shared (self when the decay is the same)."""
        self._check_fitted()
        if decay == self.decay:
            return self
        clone = copy.copy(self)
        clone.decay = _checked_decay(decay)
        return clone

    def history_matrix(self, histories: Sequence[UserHistory]) -> sp.csr_matrix:
        """``[len(histories), n_items]``: each history's items, weighted by recency."""
        rows, cols, vals = [], [], []
        for row, h in enumerate(histories):
            newest_first = np.asarray(h.items)[::-1]
            items, age = np.unique(newest_first, return_index=True)  # newest position of each
            rows.append(np.full(len(items), row))
            cols.append(items)
            vals.append(self.decay ** age.astype(np.float64))
        n_items = self.data.n_items  # type: ignore[union-attr]
        if not rows:
            return sp.csr_matrix((len(histories), n_items), dtype=np.float32)
        return sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(histories), n_items),
        )

    def sparse_scores(self, histories: Sequence[UserHistory]) -> sp.csr_matrix:
        """The scores as a sparse ``[len(histories), n_items]`` matrix (items that co-occur
        with none of the history: no entry)."""
        self._check_fitted()
        return (self.history_matrix(histories) @ self.similarity).tocsr()

    def scaled_scores(self, histories: Sequence[UserHistory]) -> sp.csr_matrix:
        """:meth:`sparse_scores` with each row divided by its largest score: in [0, 1] for
        every history, whatever its length (how a trained model adds the term)."""
        scores = self.sparse_scores(histories)
        top = np.asarray(scores.max(axis=1).todense()).ravel()
        scores.data /= np.repeat(np.maximum(top, 1e-12), np.diff(scores.indptr)).astype(
            scores.dtype
        )
        return scores

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        return np.asarray(self.sparse_scores(histories).todense(), dtype=np.float32)

    def edited(self, data: Dataset, added: np.ndarray) -> ItemKNNScorer:
        """A copy for ``data``, this catalogue edited (:meth:`Dataset.edited`): the log is the
        same, so a new item co-occurs with nothing, a replaced item's similarities move to its
        new row, and a removed item's are dropped (the neighbours past the ``k`` kept are not
        promoted in its place until the next fit)."""
        self._check_fitted()
        old = self.data
        assert old is not None
        old_index = old.item_index
        moved = {
            old_index[iid]: int(row)
            for iid, row in zip(data.item_ids[added], added, strict=True)
            if iid in old_index
        }
        was_live = np.ones(old.n_items, dtype=bool) if old.alive is None else old.alive
        now_live = data.live_mask()
        gone = (
            np.zeros(old.n_items, dtype=bool)
            if now_live is None
            else was_live & ~now_live[: old.n_items]
        )
        sim = self.similarity
        if moved or gone.any():
            where = np.arange(old.n_items)
            where[gone] = -1
            where[list(moved)] = list(moved.values())
            sim = _moved(sim, where, data.n_items)
        else:  # rows appended alone: the table shared, padded with empty rows
            sim = _padded(sim, data.n_items)
        clone = copy.copy(self)
        clone.similarity = sim
        clone.data = data
        return clone

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "shrink": self.shrink, "decay": self.decay}


TABLE_FILES = ("indptr", "indices", "data")


def save_table(table: sp.csr_matrix, folder: str | Path) -> None:
    """Write a similarity table (CSR) as three ``.npy`` files in ``folder``, which
    :func:`load_table` maps into memory. The folder is written beside and then renamed into
    place: a process that has the old files mapped keeps reading them, whole."""
    out = Path(folder)
    m = table.tocsr().copy()
    m.sort_indices()
    arrays = {
        "indptr": m.indptr.astype(np.int64),
        "indices": m.indices.astype(np.int32),
        "data": m.data.astype(np.float32),
    }
    fresh = out.with_name(f".{out.name}.{os.getpid()}.new")
    stale = out.with_name(f".{out.name}.{os.getpid()}.old")
    fresh.mkdir(parents=True, exist_ok=True)
    for name in TABLE_FILES:
        np.save(fresh / f"{name}.npy", arrays[name])
    if out.exists():
        os.replace(out, stale)
    os.replace(fresh, out)
    shutil.rmtree(stale, ignore_errors=True)


def load_table(folder: str | Path) -> sp.csr_matrix:
    """A table written by :func:`save_table`, memory-mapped read-only: the processes that map
    the same files share one copy of it in memory.

    Raises:
        ModelError: the three files do not make one table.
    """
    path = Path(folder)
    try:
        indptr, indices, data = (np.load(path / f"{n}.npy", mmap_mode="r") for n in TABLE_FILES)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a co-occurrence table: {exc}") from exc
    n = len(indptr) - 1
    if n < 0 or len(indices) != len(data) or indptr[-1] != len(data):
        raise ModelError(f"{path}: its files do not make one table (written partly?)")
    table = sp.csr_matrix((data, indices, indptr), shape=(n, n), copy=False)
    table.has_sorted_indices = True  # written sorted: nothing sorts (writes) the mapped arrays
    return table


def _moved(m: sp.csr_matrix, where: np.ndarray, n: int) -> sp.csr_matrix:
    """``m``'s entries moved to rows and columns ``where[i]`` of an ``n x n`` matrix (-1: the
    row and column dropped)."""
    coo = m.tocoo()
    rows, cols = where[coo.row], where[coo.col]
    keep = (rows >= 0) & (cols >= 0)
    return sp.csr_matrix((coo.data[keep], (rows[keep], cols[keep])), shape=(n, n))


def _padded(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """``m`` as an ``n x n`` matrix, the rows and columns past its own empty; its data and
    indices are shared, not copied (a memory-mapped table stays mapped)."""
    rows = m.shape[0]
    if n == rows:
        return m
    indptr = np.concatenate([m.indptr, np.full(n - rows, m.indptr[-1], dtype=m.indptr.dtype)])
    out = sp.csr_matrix((m.data, m.indices, indptr), shape=(n, n), copy=False)
    out.has_sorted_indices = m.has_sorted_indices
    return out


def _checked_decay(decay: float) -> float:
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"itemknn decay must be in (0, 1], got {decay}")
    return decay


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
