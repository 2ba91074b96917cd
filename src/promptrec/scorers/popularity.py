"""Most-popular items: the floor every recommender must clear."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.rows import Column
from promptrec.scorers.base import Scorer


def item_counts(data: Dataset) -> np.ndarray:
    """Interactions per item in ``data``'s log, ``[n_items]``."""
    idx = data.events["item_id"].map(data.item_index.as_dict()).dropna().to_numpy(dtype=np.int64)
    return np.bincount(idx, minlength=data.n_items).astype(np.float32)


def edited_counts(counts: Column, old: Dataset, data: Dataset, added: np.ndarray) -> Column:
    """:func:`item_counts` for ``data``, ``old`` edited (:meth:`Dataset.edited`): a replaced
    item keeps its count at its new row, a new one starts at zero (the cost of the new rows)."""
    before = old.item_index
    carried = np.array(
        [counts[before[i]] if i in before else 0.0 for i in data.item_ids[added]],
        dtype=counts.values.dtype,
    )
    return counts.extended(carried)


class PopularityScorer(Scorer):
    """Scores every user alike by the item's interaction count in the fitted log."""

    name = "popularity"

    _counts: Column

    @property
    def counts(self) -> np.ndarray:
        return self._counts.values

    def fit(self, data: Dataset) -> PopularityScorer:
        self.data = data
        self._counts = Column(item_counts(data))
        return self

    def edited(self, data: Dataset, added: np.ndarray) -> PopularityScorer:
        """A copy for ``data`` (see :meth:`Scorer.edited`): the new rows' counts alone."""
        self._check_fitted()
        clone = self.detached()
        clone._counts = edited_counts(self._counts, self.data, data, added)  # type: ignore[arg-type]
        clone.data = data
        return clone  # type: ignore[return-value]

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()
