"""Lexical search: BM25 of the user's live query against each item's text (``bm25s``).

The search baseline every query-aware recommender has to beat, and the lexical half of
promptrec's query-aware ranking (:mod:`promptrec.scorers.query`). Words are lower-cased runs of
letters and digits; Chinese text, which has no spaces, is read as its characters and character
pairs (so ``"洗发水"`` matches ``"去屑洗发水"``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.errors import ConfigError
from promptrec.scorers.base import Scorer
from promptrec.scorers.popularity import item_counts

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


class BM25Scorer(Scorer):
    """BM25 (Lucene's variant, ``bm25s``) of the live query over the items' texts, as the text
    space renders them (title, category, brand, description...). The history is not read; a
    user without a query (or whose words no item has) gets the most popular items.

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

    def fit(self, data: Dataset) -> BM25Scorer:
        try:
            import bm25s
        except ImportError as exc:  # pragma: no cover - a dependency
            raise ConfigError("the bm25 strategy needs bm25s: pip install bm25s") from exc
        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on import
        self.space.fit(data)
        self.index = bm25s.BM25(k1=self.k1, b=self.b)
        self.index.index([tokenize(t) for t in self.space.texts.values], show_progress=False)
        self.popularity = item_counts(data)
        self.data = data
        return self

    def query_scores(self, queries: Sequence[str | None]) -> np.ndarray:
        """``[len(queries), n_items]``: each query's BM25 score of every item (zeros for none)."""
        vocabulary = self.index.vocab_dict
        out = np.zeros((len(queries), len(self.popularity)), dtype=np.float32)
        for row, query in enumerate(queries):
            words = [w for w in tokenize(query or "") if w in vocabulary]
            if words:
                out[row] = self.index.get_scores(words)
        return out

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        scores = self.query_scores([h.query for h in histories])
        cold = ~scores.any(axis=1)
        scores[cold] = self.popularity / max(float(self.popularity.max()), 1.0)
        return scores

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "k1": self.k1, "b": self.b}
