"""The one ranking function: a scorer's terms in, each user's best items out.

Evaluation (:func:`promptrec.evaluation.evaluate`), the Python API and batch export
(:meth:`promptrec.recommender.Recommender.recommend`, ``promptrec recommend --all-users``) and
the service (``GET /recommend``) all rank through :func:`rank`, so an offline number and a
served list come from the same code.

Every item is scored (:meth:`Terms.scores <promptrec.scorers.terms.Terms.scores>`) unless an
approximate index is given for a vector scorer's terms: then the index finds the best items by
inner product, and those, together with every item a sparse term names for the user, are
rescored with all the terms. That is exact (as exact as the index): a sparse term is never
negative, so an item outside both sets scores its inner product alone, below every one the
index returned. Users with nothing to go on (the popular items) are scored in full.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptrec.retrieval.index import VectorIndex
from promptrec.retrieval.topk import top_k
from promptrec.scorers.terms import Terms


def rank(
    terms: Terms,
    n: int,
    *,
    exclude: Sequence[np.ndarray] | None = None,
    allowed: np.ndarray | None = None,
    index: VectorIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best items of each user, best first: ``(indices, scores)``, both
    ``[n_users, n]`` (padded with ``-1`` and ``-inf`` where fewer items are eligible). Equal
    scores are in item order.

    Args:
        terms: a scorer's terms for the users.
        n: the list length.
        exclude: per user, items never to return (their history).
        allowed: ``[n_items]`` bool of the items a list may hold (filters, live items).
        index: an approximate index over the terms' item vectors (None: every item scored).
    """
    if index is None or not terms.by_vectors:
        return top_k(terms.scores(), n, exclude=exclude, allowed=allowed)
    if allowed is None and index.size != terms.n_items:
        # the index is shared with later catalogues: keys past this one are not its items
        allowed = np.ones(terms.n_items, dtype=bool)
    idx = np.full((len(terms), n), -1, dtype=np.int64)
    best = np.full((len(terms), n), -np.inf, dtype=np.float32)
    cold = terms.cold
    for rows, searched in ((np.flatnonzero(~cold), True), (np.flatnonzero(cold), False)):
        if not len(rows):
            continue
        part = terms.rows(rows)
        part_exclude = None if exclude is None else [exclude[r] for r in rows]
        if not searched:
            idx[rows], best[rows] = top_k(part.scores(), n, exclude=part_exclude, allowed=allowed)
            continue
        found, _ = index.search(
            part.users, n, exclude=part_exclude, allowed=allowed, exact=part.items
        )
        idx[rows], best[rows] = _rescored(part, found, n, part_exclude, allowed)
    return idx, best


def _rescored(
    terms: Terms,
    found: np.ndarray,
    n: int,
    exclude: Sequence[np.ndarray] | None,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``n`` of each user's candidates (``found`` and the items the sparse terms
    name), each scored with all the terms (:meth:`Terms.scores_of`)."""
    idx = np.full((len(terms), n), -1, dtype=np.int64)
    best = np.full((len(terms), n), -np.inf, dtype=np.float32)
    for row in range(len(terms)):
        cand = np.union1d(found[row][found[row] >= 0], terms.named(row))
        if allowed is not None:
            cand = cand[allowed[cand]]
        if exclude is not None and len(exclude[row]):
            cand = cand[~np.isin(cand, exclude[row])]
        scores = terms.scores_of(row, cand)
        order = np.lexsort((cand, -scores))[:n]  # by score, then by item
        idx[row, : len(order)] = cand[order]
        best[row, : len(order)] = scores[order]
    return idx, best
