"""Lexical search: BM25 of the user's live query against each item's text.

The search baseline every query-aware recommender has to beat, and the lexical half of
promptrec's query-aware ranking (:mod:`promptrec.scorers.query`). Words are lower-cased runs of
letters and digits; Chinese text, which has no spaces, is read as its characters and character
pairs (so ``"洗发水"`` matches ``"去屑洗发水"``).

The index (:class:`LexicalIndex`) keeps postings and scores at query time with Lucene's BM25
formula, the one ``bm25s`` (``method="lucene"``) computes, which the tests check it against. It
is kept this way, not as ``bm25s``'s precomputed scores, so that a catalogue change adds one
item's words at the cost of that item, and every score still equals that of an index built
afresh over the live items: the statistics (item count, document frequencies, mean length) are
taken over the items a catalogue state holds, so several states share one index.
"""

from __future__ import annotations

import copy
import math
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.rows import Column
from promptrec.scorers.base import Scorer
from promptrec.scorers.popularity import edited_counts, item_counts
from promptrec.scorers.terms import scaled_popularity

_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\W_]+", re.UNICODE)
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; a run of Chinese characters as its characters and their pairs."""
    out: list[str] = []
    for run in _WORD.findall(text.lower()):
        if _HAN.match(run):
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif len(run) > 1 or run.isdigit():
            out.append(run)
    return out


class LexicalIndex:
    """BM25 postings over texts, appended row by row (rows are catalogue positions).

    Args:
        k1 / b: BM25's term-frequency saturation and length normalisation.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._rows: dict[str, list[int]] = {}  # word -> rows holding it
        self._counts: dict[str, list[int]] = {}  # word -> its count in each of those rows
        self._lengths: list[int] = []
        self._lock = threading.Lock()  # one writer; readers take a consistent prefix

    def __len__(self) -> int:
        return len(self._lengths)

    def __getstate__(self) -> dict:  # a copy (pickled to a Ray worker) gets a lock of its own
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add(self, texts: Sequence[str]) -> None:
        """Append rows ``len(self)``, ``len(self) + 1``... for ``texts``."""
        with self._lock:
            for text in texts:
                words = tokenize(text)
                row = len(self._lengths)
                counts: dict[str, int] = {}
                for word in words:
                    counts[word] = counts.get(word, 0) + 1
                for word, count in counts.items():
                    self._rows.setdefault(word, []).append(row)
                    self._counts.setdefault(word, []).append(count)
                self._lengths.append(len(words))

    def scores(self, query: str, live: np.ndarray) -> np.ndarray:
        """``[len(live)]`` float32: the query's BM25 score of each row that ``live`` keeps
        (0 elsewhere), with the statistics of those rows alone."""
        out = np.zeros(len(live), dtype=np.float32)
        words = [w for w in tokenize(query or "") if w in self._rows]
        if not words or not live.any():
            return out
        lengths = np.asarray(self._lengths[: len(live)], dtype=np.float32)
        n = int(live.sum())
        mean_length = float(lengths[live].mean()) or 1.0
        norm = self.k1 * (1 - self.b + self.b * lengths / mean_length)
        for word in words:
            # counts are appended after rows: the rows of the counts read are all there
            counts = np.asarray(self._counts[word], dtype=np.float32)
            rows = np.asarray(self._rows[word][: len(counts)])
            inside = rows < len(live)
            rows, counts = rows[inside], counts[inside]
            kept = live[rows]
            rows, counts = rows[kept], counts[kept]
            if not len(rows):
                continue
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            out[rows] += idf * counts / (counts + norm[rows])
        return out


class BM25Scorer(Scorer):
    """BM25 of the live query over the items' texts, as the text space renders them (title,
    category, brand, description...). The history is not read; a user without a query (or
    whose words no item has) gets the most popular items.

    Args:
        space: the text space whose item texts are indexed (built on demand).
        k1 / b: BM25's term-frequency saturation and length normalisation.
    """

    name = "bm25"
    uses_text = True

    def __init__(self, space: Any = None, *, k1: float = 1.5, b: float = 0.75) -> None:
        super().__init__()
        from promptrec.scorers.text import TextSpace

        self.space = space or TextSpace()
        self.k1, self.b = k1, b

    @property
    def popularity(self) -> np.ndarray:
        return self._popularity.values

    def fit(self, data: Dataset) -> BM25Scorer:
        self.space.fit(data)
        self.index = LexicalIndex(self.k1, self.b)
        self.index.add(self.space.texts.values)
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
        clone._popularity = edited_counts(self._popularity, self.data, data, added)
        clone.data = data
        return clone

    def query_scores(self, queries: Sequence[str | None]) -> np.ndarray:
        """``[len(queries), n_items]``: each query's BM25 score of every live item (zeros for
        none, and for retired items)."""
        assert self.data is not None, "fit first"
        live = self.data.live_mask()
        if live is None:
            live = np.ones(self.data.n_items, dtype=bool)
        out = np.zeros((len(queries), self.data.n_items), dtype=np.float32)
        for row, query in enumerate(queries):
            if query:
                out[row] = self.index.scores(query, live)
        return out

    def matches(self, queries: Sequence[str | None]) -> sp.csr_matrix:
        """``[len(queries), n_items]``, sparse: each query's BM25 score of the items that hold
        one of its words, over the best item's (in ``(0, 1]``); no entry for the others, nor
        for a user without a query. What the query-aware ranking adds
        (:mod:`promptrec.scorers.query`)."""
        assert self.data is not None, "fit first"
        live = self.data.live_mask()
        if live is None:
            live = np.ones(self.data.n_items, dtype=bool)
        indptr = [0]
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for query in queries:
            row = self.index.scores(query, live) if query else None
            hit = np.zeros(0, dtype=np.int64) if row is None else np.flatnonzero(row)
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
        return {"name": self.name, "k1": self.k1, "b": self.b}
