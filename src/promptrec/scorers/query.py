"""Lists that follow the live query, ordered by the user's taste.

A shopper who types "red nail polish" wants nail polish first, and among nail polishes the
ones their history says they like. A vector scorer alone mixes the query into the user's
vector (``query_weight``): a long hair-care history can outvote two words. The
:class:`QueryAwareScorer` adds what a search engine knows: each item's BM25 match with the
query's words (:class:`~promptrec.scorers.lexical.BM25Scorer`), scaled to ``[0, 1]`` by the best
item's, times ``lexical_weight``: a sparse term (it names only the items that hold a word of
the query), so an approximate index still ranks the vectors and the match is added exactly.
Both weights are chosen on validation targets
(:func:`promptrec.evaluation.queries.choose_query_weights`); users without a query get the inner
scorer's lists unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.scorers.base import Scorer
from promptrec.scorers.lexical import BM25Scorer
from promptrec.scorers.terms import Terms
from promptrec.scorers.vector import VectorScorer


class QueryAwareScorer(Scorer):
    """A vector scorer's scores (its user vector: the history, plus the query's vector at
    ``query_weight``) plus ``lexical_weight`` times the query's BM25 score of each item over
    the best item's.

    Args:
        inner: a text or trained vector scorer (fitted or not); it must have a ``space`` (its
            item texts are what BM25 searches) and a ``query_weight``.
        query_weight: the weight of the query's vector in the user's (None: the inner's).
        lexical_weight: the weight of the scaled BM25 score (0: the inner scorer alone).
    """

    uses_text = True

    def __init__(
        self,
        inner: VectorScorer,
        *,
        query_weight: float | None = None,
        lexical_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.name = f"{inner.name}+query"  # type: ignore[misc]
        if query_weight is not None:
            inner.query_weight = query_weight  # type: ignore[attr-defined]
        self.lexical_weight = lexical_weight
        self.lexical = BM25Scorer(inner.space)  # type: ignore[attr-defined]
        self.batch_size = inner.batch_size

    @property
    def query_weight(self) -> float:
        return float(self.inner.query_weight)  # type: ignore[attr-defined]

    @query_weight.setter
    def query_weight(self, weight: float) -> None:
        self.inner.query_weight = weight  # type: ignore[attr-defined]

    def fit(self, data: Dataset) -> QueryAwareScorer:
        if self.inner.data is not data:
            self.inner.fit(data)
        self.lexical.fit(data)
        self.data = data
        return self

    def edited(self, data: Dataset, added: np.ndarray) -> QueryAwareScorer:
        """A copy for ``data`` (see :meth:`Scorer.edited`): the inner scorer edited, and the
        appended rows' words added to the lexical index (over the inner's edited text space)."""
        clone = copy.copy(self)
        clone.inner = self.inner.edited(data, added)  # type: ignore[assignment]
        clone.lexical = self.lexical.edited(data, added, space=clone.inner.space)  # type: ignore[attr-defined]
        clone.data = data
        return clone

    def terms(self, histories: Sequence[UserHistory]) -> Terms:
        terms = self.inner.terms(histories)
        if not self.lexical_weight or not any(h.query for h in histories):
            return terms
        matches = self.lexical.matches([h.query for h in histories])
        return terms.plus(matches * np.float32(self.lexical_weight))

    def config(self) -> dict[str, Any]:
        return {
            **self.inner.config(),
            "query_weight": self.query_weight,
            "lexical_weight": self.lexical_weight,
        }


class QueryMix(BaseModel):
    """How a live query enters the lists of a vector scorer that a
    :class:`~promptrec.recommender.Recommender` serves (the service, ``recommend``).

    Attributes:
        query_weight / lexical_weight: as :class:`QueryAwareScorer`'s. Chosen on amazon-beauty's
            validation targets with their category queries (``promptrec evaluate --queries
            category``): 0.125 and 0.4 scored NDCG@10 0.1354, the vector sum alone at weight 1
            0.0864.
        learned_query_weight: the query weight of a model trained on queries (its query tower
            learned how much a query counts: 1 is as trained). On amazon-beauty's validation
            targets with their category queries, such a model scored NDCG@10 0.2784 at 1 (with
            the lexical term at 0.4) against 0.2535 at 0.125.
        vector_only_weight: the query weight when ``lexical_weight`` is 0 (the query enters
            through its vector alone): the best weight without the lexical term on that
            validation split.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_weight: float = Field(0.125, ge=0)
    lexical_weight: float = Field(0.4, ge=0)
    learned_query_weight: float = Field(1.0, ge=0)
    vector_only_weight: float = Field(1.0, ge=0)
