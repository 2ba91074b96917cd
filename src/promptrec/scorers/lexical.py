"""Lexical search: BM25 of the user's live query against each item's text.

The search baseline every query-aware recommender has to beat, and the lexical half of
promptrec's query-aware ranking (:mod:`promptrec.scorers.query`). Words are lower-cased runs of
letters and digits; Chinese text, which has no spaces, is read as its characters and character
pairs (so ``"洗发水"`` matches ``"去屑洗发水"``).

The index (:class:`~promptrec.scorers.postings.LexicalIndex`) keeps postings and scores at
query time with Lucene's BM25 formula, the one ``bm25s`` (``method="lucene"``) computes, which
the tests check it against. It is kept this way, not as ``bm25s``'s precomputed scores, so that
a catalogue change adds one item's words at the cost of that item, and every score still equals
that of an index built afresh over the live items: the statistics (item count, document
frequencies, mean length) are taken over the items a catalogue state holds, so several states
share one index. A large catalogue's postings are built once, saved and memory-mapped
(:meth:`LexicalIndex.cached`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.rows import Column
from promptrec.scorers.base import Scorer
from promptrec.scorers.popularity import edited_counts, item_counts
from promptrec.scorers.postings import LexicalIndex, tokenize
from promptrec.scorers.terms import scaled_popularity

__all__ = ["BM25Scorer", "LexicalIndex", "tokenize"]

#: the items a query's lexical term names at most (:meth:`BM25Scorer.matches`). On
#: amazon-beauty's 12,101 items a category query holds a word of 517 items at the median, 3,228
#: at the 90th percentile; at a million items "gentle shampoo 50" holds one of 200,000, whose
#: full scoring took /recommend's p99 from 24 ms to 1.3 s.
MAX_MATCHES = 5_000


def _best(scores: np.ndarray, hit: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` items of ``hit`` (ascending) with the best ``scores``, ascending; ties at the
    cut go to the first items."""
    values = scores[hit]
    cut = np.partition(values, len(values) - n)[len(values) - n]  # the n-th best
    above = hit[values > cut]
    tied = hit[values == cut][: n - len(above)]
    return np.sort(np.concatenate([above, tied]))


class BM25Scorer(Scorer):
    """BM25 of the live query over the items' texts, as the text space renders them (title,
    category, brand, description...). The history is not read; a user without a query (or
    whose words no item has) gets the most popular items.

    Args:
        space: the text space whose item texts are indexed (built on demand).
        k1 / b: BM25's term-frequency saturation and length normalisation.
        max_matches: :meth:`matches` names at most this many items a query, the best by
            BM25 (ties: the first items).
    """

    name = "bm25"
    uses_text = True

    def __init__(
        self,
        space: Any = None,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        max_matches: int = MAX_MATCHES,
    ) -> None:
        super().__init__()
        from promptrec.scorers.text import TextSpace

        self.space = space or TextSpace()
        self.k1, self.b = k1, b
        self.max_matches = max_matches

    @property
    def popularity(self) -> np.ndarray:
        return self._popularity.values

    def fit(self, data: Dataset) -> BM25Scorer:
        self.space.fit(data)
        self.index = LexicalIndex.cached(list(self.space.texts.values), k1=self.k1, b=self.b)
        self._live: tuple[np.ndarray, tuple[int, float]] | None = None
        self._popularity = Column(item_counts(data))
        self.data = data
        return self

    def edited(self, data: Dataset, added: np.ndarray, space: Any = None) -> BM25Scorer:
        """A copy for ``data`` (see :meth:`Scorer.edited`), over ``space`` (the text space
        already edited for it; else this one's, edited): the appended rows' words are added to
        the index, which this scorer shares (each reads only its own catalogue's rows)."""
        assert self.data is not None, "fit first"
        clone = copy.copy(self)
        clone.space = space if space is not None else self.space.edited(data, added)
        texts = clone.space.texts.values
        if len(self.index) == self.data.n_items:
            self.index.add(texts[added])
        else:  # rows were added for a change never served: index this catalogue afresh
            clone.index = LexicalIndex(self.k1, self.b)
            clone.index.add(texts)
        clone._live = None
        clone._popularity = edited_counts(self._popularity, self.data, data, added)
        clone.data = data
        return clone

    def query_scores(self, queries: Sequence[str | None]) -> np.ndarray:
        """``[len(queries), n_items]``: each query's BM25 score of every live item (zeros for
        none, and for retired items)."""
        assert self.data is not None, "fit first"
        out = np.zeros((len(queries), self.data.n_items), dtype=np.float32)
        for row, query in enumerate(queries):
            if query:
                out[row] = self._scores(query)
        return out

    def _scores(self, query: str) -> np.ndarray:
        """One query's BM25 scores over this catalogue state's live items."""
        assert self.data is not None, "fit first"
        if self._live is None:  # once per catalogue state: its live rows and their statistics
            live = self.data.live_mask()
            live = np.ones(self.data.n_items, dtype=bool) if live is None else live
            self._live = (live, self.index.statistics(live))
        live, statistics = self._live
        return self.index.scores(query, live, statistics)

    def matches(self, queries: Sequence[str | None]) -> sp.csr_matrix:
        """``[len(queries), n_items]``, sparse: each query's BM25 score of the items that hold
        one of its words (the best ``max_matches`` of them), over the best item's (in
        ``(0, 1]``); no entry for the others, nor for a user without a query. What the
        query-aware ranking adds (:mod:`promptrec.scorers.query`): every item it names is
        scored in full, so a query whose words half a million items hold would cost as much."""
        assert self.data is not None, "fit first"
        indptr = [0]
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for query in queries:
            row = self._scores(query) if query else None
            hit = np.zeros(0, dtype=np.int64) if row is None else np.flatnonzero(row)
            if len(hit) > self.max_matches:
                hit = _best(row, hit, self.max_matches)  # type: ignore[arg-type]
            if len(hit):
                indices.append(hit)
                values.append(row[hit] / row[hit].max())  # type: ignore[index]
            indptr.append(indptr[-1] + len(hit))
        shape = (len(queries), self.data.n_items)
        if not indices:
            return sp.csr_matrix(shape, dtype=np.float32)
        return sp.csr_matrix(
            (np.concatenate(values).astype(np.float32), np.concatenate(indices), indptr),
            shape=shape,
        )

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        scores = self.query_scores([h.query for h in histories])
        unmatched = ~scores.any(axis=1)  # no query, or none of its words in any item
        scores[unmatched] = scaled_popularity(self.popularity)
        return scores

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "k1": self.k1, "b": self.b, "max_matches": self.max_matches}
