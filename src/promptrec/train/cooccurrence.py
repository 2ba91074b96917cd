"""Choosing how much item-item co-occurrence a trained model adds to its scores.

A sequential two-tower model and ItemKNN over the same log are wrong in different places: the
model generalises through text and order, co-occurrence remembers which items were bought by the
same people. :class:`~promptrec.train.trained.TrainedScorer` adds the co-occurrence scores
(each user's row scaled to [0, 1], the history weighted by recency) at
``cooccurrence_weight``. The trainer chooses the weight and the recency decay here, on the
validation targets, with the model that early stopping picked (trained without those targets),
before the refit; the grid's NDCG@10 and Coverage@10 are kept with the model (the trade-off
curve between accuracy and how much of the catalogue the lists show).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import UserHistory
from promptrec.data.split import Split
from promptrec.evaluation.metrics import coverage, ndcg_at
from promptrec.scorers.itemknn import ItemKNNScorer
from promptrec.train.grid import Setting, grid_ranks
from promptrec.train.trained import TrainedScorer

#: weights tried (0: the model alone)
COOCCURRENCE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75)
#: recency decays tried (1: every history item counts the same)
COOCCURRENCE_DECAYS = (1.0, 0.9, 0.7, 0.5)


def choose_cooccurrence(
    scorer: TrainedScorer,
    split: Split,
    weights: tuple[float, ...] = COOCCURRENCE_WEIGHTS,
    decays: tuple[float, ...] = COOCCURRENCE_DECAYS,
) -> dict[str, Any]:
    """The ``(weight, decay)`` of best NDCG@10 on ``split``'s targets (ties: the smaller
    weight, then the larger decay), with every pair's NDCG@10 and Coverage@10.

    ``scorer`` must be fitted on ``split.fit`` and must not have learned from its targets.
    """
    fitted = ItemKNNScorer().fit(split.fit)  # the similarities; each decay reads them
    knns = {d: fitted.with_decay(d) for d in decays}

    def settings(hist: Sequence[UserHistory]) -> Iterator[Setting]:
        for d, knn in knns.items():
            extra = sp.csr_matrix(knn.scaled_scores(hist), dtype=np.float32)
            for w in weights:
                if w == 0 and d != decays[0]:
                    continue  # the model alone: once
                yield (w, d), None, (extra * np.float32(w) if w else None)

    def settings_scores(hist: Sequence[UserHistory]) -> tuple[np.ndarray, Iterator[Setting]]:
        return scorer.terms(hist).scores(), settings(hist)  # the model's, shared by all

    results = grid_ranks(split, settings_scores)
    grid = [
        {
            "weight": w,
            "decay": d,
            "ndcg10": round(ndcg_at(ranks, 10), 6),
            "coverage10": round(coverage(tops, split.fit.n_items), 4),
        }
        for (w, d), (ranks, tops) in results.items()
    ]
    best = max(grid, key=lambda g: (g["ndcg10"], -g["weight"], g["decay"]))
    return {
        "weight": best["weight"],
        "decay": best["decay"],
        "ndcg10": best["ndcg10"],
        "grid": grid,
    }
