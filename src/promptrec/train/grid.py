"""Scoring a grid of settings on validation targets, one batch of users at a time.

The trainer's choices after early stopping (:mod:`promptrec.train.cooccurrence`,
:mod:`promptrec.train.new_items`) each score the same validation users under every setting
of a grid; this runs the batches and keeps, per setting, each user's target rank and top 10.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np

from promptrec.data.dataset import UserHistory
from promptrec.data.split import Split
from promptrec.retrieval.topk import target_ranks, top_k

BATCH = 1000


def grid_ranks(
    split: Split,
    settings_scores: Callable[[Sequence[UserHistory]], Iterable[tuple[Hashable, np.ndarray]]],
    left_out: np.ndarray | None = None,
) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
    """Per setting, ``(ranks, top10)`` over ``split``'s users: the rank of each target and the
    ten best items, history items (and ``left_out``) excluded. ``settings_scores(histories)``
    yields ``(setting, scores [len(histories), n_items])`` for one batch of users."""
    ranks: dict[Hashable, list[np.ndarray]] = {}
    tops: dict[Hashable, list[np.ndarray]] = {}
    for start in range(0, len(split.histories), BATCH):
        hist = split.histories[start : start + BATCH]
        targets = split.targets[start : start + BATCH]
        seen = [h.items if left_out is None else np.concatenate([h.items, left_out]) for h in hist]
        for setting, scores in settings_scores(hist):
            ranks.setdefault(setting, []).append(target_ranks(scores, targets, seen))
            tops.setdefault(setting, []).append(top_k(scores, 10, exclude=seen)[0])
    return {s: (np.concatenate(ranks[s]), np.concatenate(tops[s])) for s in ranks}
