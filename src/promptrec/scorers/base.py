"""The one contract every recommender component implements: fit on a log, score histories.

A scorer sees a :class:`~promptrec.data.dataset.Dataset` in :meth:`Scorer.fit` (the catalogue
and the log it may learn from) and gives, for the histories given to :meth:`Scorer.terms`, the
terms of every catalogue item's score (:class:`~promptrec.scorers.terms.Terms`: user and item
vectors, sparse terms, the cold users' popular items, or its own scores of every item). Ranking
(:func:`promptrec.ranking.rank`: top-K, exclusions, filters, an index), explanations and
evaluation are written once on top of this contract.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
from tqdm.auto import tqdm

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.errors import PromptrecError
from promptrec.scorers.terms import Terms


class NotFittedError(PromptrecError):
    """A scorer was used before :meth:`Scorer.fit`."""


class Scorer(ABC):
    """Base class of all scorers (baselines, text strategies, trained models).

    Attributes:
        name: the registry name, used in reports.
        uses_text: True when scores come from item text vectors (then ``item_vectors`` exists).
    """

    name: ClassVar[str]
    uses_text: ClassVar[bool] = False
    batch_size: int = 256

    def __init__(self) -> None:
        self.data: Dataset | None = None

    @abstractmethod
    def fit(self, data: Dataset) -> Scorer:
        """Learn from ``data`` (catalogue + log); returns self."""

    def terms(self, histories: Sequence[UserHistory]) -> Terms:
        """The terms of every item's score for each history (one batch). This default is a
        scorer's own scores of every item (:meth:`_score`); vector scorers give vectors."""
        self._check_fitted()
        return Terms.of_scores(self._score(histories))

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """Scores ``[len(histories), n_items]`` for one batch (a scorer that does not give
        :meth:`terms` of its own gives these)."""
        raise NotImplementedError(f"{type(self).__name__} gives neither terms nor scores")

    def score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """Every catalogue item's final score for each history, ``[len(histories), n_items]``
        (:meth:`Terms.scores <promptrec.scorers.terms.Terms.scores>` of :meth:`terms`)."""
        self._check_fitted()
        if not histories:
            return np.zeros((0, self.data.n_items), dtype=np.float32)  # type: ignore[union-attr]
        return self.terms(histories).scores()

    def terms_batches(
        self, histories: Sequence[UserHistory], *, progress: bool = False, desc: str | None = None
    ) -> Iterator[tuple[int, Terms]]:
        """``(start, terms)`` per batch of ``batch_size`` histories, with a progress bar."""
        self._check_fitted()
        bar = tqdm(total=len(histories), disable=not progress, desc=desc or self.name, unit="user")
        with bar:
            for start in range(0, len(histories), self.batch_size):
                batch = histories[start : start + self.batch_size]
                yield start, self.terms(batch)
                bar.update(len(batch))

    def detached(self) -> Scorer:
        """A copy that can be fitted to other data while this one keeps serving its own.

        :meth:`fit` replaces a scorer's fitted state (it never changes arrays in place), so a
        shallow copy, with its own copy of the text space when it has one, is independent of
        this scorer; model weights and the encoder are shared, read-only.
        """
        clone = copy.copy(self)
        space = getattr(self, "space", None)
        if space is not None:
            clone.space = copy.copy(space)  # type: ignore[attr-defined]
        return clone

    def edited(self, data: Dataset, added: np.ndarray) -> Scorer:
        """A copy bound to ``data``, which is this scorer's catalogue edited by
        :meth:`Dataset.edited <promptrec.data.dataset.Dataset.edited>` (rows appended at
        ``added``, some retired); this scorer keeps serving its own.

        Nothing is learned from the change. This default refits the copy (linear in the
        catalogue and the log); scorers that can bind just the appended rows override it.
        """
        return self.detached().fit(data)

    def _check_fitted(self) -> None:
        if self.data is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(data) first")

    def config(self) -> dict[str, Any]:
        """The settings that define this scorer (for reports and saved models)."""
        return {"name": self.name}
