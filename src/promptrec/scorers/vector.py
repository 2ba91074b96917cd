"""Vector scorers: an item's score is the inner product of a user vector and its item vector.

The text strategies and the trained models are vector scorers: their
:class:`~promptrec.scorers.terms.Terms` are user and item vectors (plus sparse terms), so that
:func:`promptrec.ranking.rank` can search an approximate
:class:`~promptrec.retrieval.index.VectorIndex` for them instead of scoring every item.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import UserHistory
from promptrec.data.rows import Column
from promptrec.scorers.base import Scorer
from promptrec.scorers.terms import Terms, scaled_popularity


class VectorScorer(Scorer):
    """A scorer whose scores are ``user_vectors(histories) @ item_vectors.T`` (plus its
    :meth:`sparse_scores`); a user whose vector is all zeros (no history, no query) gets the
    most popular items instead.

    Attributes:
        ranks_by_vectors: False for a subclass whose scores are not that inner product (it
            keeps the vectors for other uses, and gives its own scores of every item).
        popularity: interactions per item in the fitted log (for cold users).
    """

    ranks_by_vectors: ClassVar[bool] = True
    _popularity: Column

    @property
    def popularity(self) -> np.ndarray:
        return self._popularity.values

    @popularity.setter
    def popularity(self, counts: np.ndarray) -> None:
        # a column: a catalogue change appends the new items' counts (edited_counts)
        self._popularity = Column(np.asarray(counts))

    @property
    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """``[n_items, dim]`` float32, in catalogue order."""

    @property
    def item_vectors_key(self) -> str | None:
        """What identifies :attr:`item_vectors`' content without reading them (an index kept
        on disk is found by it: :func:`~promptrec.retrieval.index.cached_index`), or None
        (the default: the vectors are hashed)."""
        return None

    @abstractmethod
    def user_vectors(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """``[len(histories), dim]`` float32; a zero row for a user with nothing to go on."""

    def sparse_scores(self, histories: Sequence[UserHistory]) -> sp.csr_matrix | None:
        """A sparse, non-negative term added to the vectors' inner products
        (``[len(histories), n_items]``), or None (the default: none).

        An index ranks the vectors alone; :func:`promptrec.ranking.rank` then rescores the
        index's top items together with the items this term names, which is exact: an item
        outside both has only its inner product, below those of the index's top.
        """
        return None

    def terms(self, histories: Sequence[UserHistory]) -> Terms:
        self._check_fitted()
        return Terms(
            len(self.item_vectors),
            users=self.user_vectors(histories),
            items=self.item_vectors,
            popularity=scaled_popularity(self.popularity),
            sparse=self.sparse_scores(histories),
        )
