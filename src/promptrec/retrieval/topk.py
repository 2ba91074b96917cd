"""Top-K selection over score matrices, with seen-item exclusion and an allow mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(
    scores: np.ndarray,
    k: int,
    *,
    exclude: Sequence[np.ndarray] | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per row, best first; equal scores in item order (the lower index
    first), so a list never depends on how a sort happened to place ties.

    Args:
        scores: ``[n_users, n_items]``; modified in place (excluded entries set to -inf).
        k: list length; fewer come back when fewer items are eligible (padding index -1,
            score -inf).
        exclude: per row, item indices never to return (the user's history).
        allowed: ``[n_items]`` bool mask of eligible items (filters).

    Returns:
        ``(indices, scores)``, both ``[n_users, k]``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    n_users, n_items = scores.shape
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    k_eff = min(k, n_items)
    if k_eff <= 0:
        return np.full((n_users, k), -1, dtype=np.int64), np.full((n_users, k), -np.inf)
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    _ties_in_item_order(scores, part, part_scores)
    order = np.lexsort((part, -part_scores), axis=1)  # by score, then by item
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isfinite(best), idx, -1)
    if k_eff < k:
        pad = k - k_eff
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx.astype(np.int64), best


def _ties_in_item_order(scores: np.ndarray, part: np.ndarray, part_scores: np.ndarray) -> None:
    """Where the ``k``-th best score of a row is shared with items the partition left out,
    put the lowest-indexed of the tied items in ``part`` (in place): which of them make the
    list is then fixed, not the partition's choice."""
    cut = part_scores.min(axis=1)
    tied = (scores == cut[:, None]).sum(axis=1)
    tied_in = (part_scores == cut[:, None]).sum(axis=1)
    for row in np.flatnonzero(tied > tied_in):
        keep = part_scores[row] > cut[row]
        wanted = len(part[row]) - int(keep.sum())
        lowest = np.flatnonzero(scores[row] == cut[row])[:wanted]
        part[row] = np.concatenate([part[row][keep], lowest])
        part_scores[row] = scores[row, part[row]]


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """1-based rank of each row's target among all items (ties count against the target).

    Excluded items (the history) are removed before ranking; a target that is itself excluded
    gets rank ``n_items + 1`` (never found).
    """
    scores = np.asarray(scores, dtype=np.float32).copy()
    rows = np.arange(len(targets))
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    target_scores = scores[rows, targets]
    ranks = (scores >= target_scores[:, None]).sum(axis=1)  # includes the target itself
    never = ~np.isfinite(target_scores)
    ranks[never] = scores.shape[1] + 1
    return ranks.astype(np.int64)
