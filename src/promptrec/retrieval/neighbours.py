"""The nearest rows of one set of vectors for each of many others, in one batch.

What a trained model's new items borrow their ids from (the ``k`` trained items nearest their
text: :class:`~promptrec.train.trained.TrainedScorer`) is such a search: every item without an
id embedding against every item with one. Exact, it costs ``queries x rows x dim``: nothing on
a shop of ten thousand items, but at a million items (half a million of each) about 190 TFLOP,
an hour and a half on two cores at every bind. Above :data:`EXACT_UP_TO` pairs the search goes
through an inverted-file index (faiss ``IndexIVFFlat``: the rows grouped around
:func:`lists` centroids learnt on a sample, each query compared with the rows of its
:data:`PROBED` nearest groups), a few minutes at that size.
"""

from __future__ import annotations

import math

import numpy as np

from promptrec.retrieval.topk import top_k

#: query x row pairs up to which the search is exact (an amazon-beauty of 12,000 items is
#: 150 million; a million-item shop 250 billion)
EXACT_UP_TO = 5_000_000_000
#: groups of rows each query is compared with, in the inverted-file search
PROBED = 16
#: rows the groups' centroids are learnt on, at most
TRAINING_ROWS = 64 * 1024
_CHUNK = 1024  # queries scored at once, exactly


def lists(n_rows: int) -> int:
    """The number of groups for ``n_rows`` rows: about ``2 sqrt(n)`` (faiss' rule of thumb is
    4-16 sqrt(n) for one query at a time; a batch this large gains from fewer, larger groups),
    and at most one per 39 of the rows the centroids are learnt on (faiss' minimum)."""
    learnt_on = min(n_rows, TRAINING_ROWS)
    return max(1, min(learnt_on // 39, round(2 * math.sqrt(n_rows))))


def nearest_rows(queries: np.ndarray, rows: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """``[len(queries), k]`` indices of the ``k`` rows of highest inner product with each query,
    best first (-1 where fewer than ``k`` were found: only in the inverted-file search, when
    the probed groups hold fewer than ``k`` rows). Exact up to :data:`EXACT_UP_TO` pairs."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    k = min(k, len(rows))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), dtype=np.int64)
    if len(queries) * len(rows) <= EXACT_UP_TO:
        out = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), _CHUNK):
            sims = queries[start : start + _CHUNK] @ rows.T
            out[start : start + len(sims)], _ = top_k(sims, k)
        return out
    import faiss

    dim = rows.shape[1]
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatIP(dim), dim, lists(len(rows)), faiss.METRIC_INNER_PRODUCT
    )
    index.cp.seed = seed
    sample = rows
    if len(rows) > TRAINING_ROWS:
        pick = np.random.default_rng(seed).choice(len(rows), TRAINING_ROWS, replace=False)
        sample = rows[np.sort(pick)]
    index.train(sample)
    index.add(rows)
    index.nprobe = PROBED
    _, found = index.search(queries, k)
    return found.astype(np.int64)
