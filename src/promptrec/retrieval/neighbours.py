"""The nearest rows of one set of vectors for each of many others, in one batch.

What a trained model's new items borrow their ids from (the ``k`` trained items nearest their
text: :class:`~promptrec.train.trained.TrainedScorer`) is such a search: every item without an
id embedding against every item with one. Exact, it costs ``queries x rows x dim``: nothing on
a shop of ten thousand items, but at a million items (half a million of each) about 190 TFLOP,
an hour and a half on two cores at every bind. Above :data:`EXACT_UP_TO` pairs the search goes
through an inverted-file index (faiss ``IndexIVFFlat``: the rows grouped around
:func:`lists` centroids learnt on a sample, each query compared with the rows of its
:data:`PROBED` nearest groups), a few minutes at that size.

:func:`cached_nearest_rows` keeps such a search on disk (``PROMPTREC_CACHE_DIR/neighbours``),
by the rows searched and per query vector: a service that starts again over the same catalogue
reads the answer back, and after catalogue changes searches for the new or changed queries
alone.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec.encoders.cache import default_cache_dir, exclusive
from promptrec.retrieval.hnsw import vector_fingerprints
from promptrec.retrieval.topk import top_k

#: query x row pairs up to which the search is exact (an amazon-beauty of 12,000 items is
#: 150 million; a million-item shop 250 billion)
EXACT_UP_TO = 5_000_000_000
#: groups of rows each query is compared with, in the inverted-file search
PROBED = 16
#: rows the groups' centroids are learnt on, at most
TRAINING_ROWS = 64 * 1024
_CHUNK = 1024  # queries scored at once, exactly
#: query x row pairs from which :func:`cached_nearest_rows` keeps its answer on disk (below,
#: the exact search takes about a second on two cores)
CACHED_FROM = 1_000_000_000
#: answers kept per cache folder (the newest used): one per set of rows searched
KEPT = 8
_FORMAT = 1


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


def cached_nearest_rows(
    queries: np.ndarray,
    rows: np.ndarray,
    k: int,
    *,
    cache_dir: str | Path | None = None,
    cached_from: int = CACHED_FROM,
) -> np.ndarray:
    """:func:`nearest_rows`, kept on disk when the search has at least ``cached_from`` pairs:
    the answer is saved by a hash of ``rows`` and ``k``, with a fingerprint of each query
    vector. A later call with the same rows reads back the answer of every query it saw and
    searches for the others alone (exactly, when they are few); the processes of one service
    take turns, so the first searches and the others read. Another set of rows (a trained item
    removed or its text changed) searches again."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if len(queries) * len(rows) < cached_from or min(k, len(rows)) == 0:
        return nearest_rows(queries, rows, k)
    digest = hashlib.sha1(rows)  # its buffer: no copy of the rows
    digest.update(repr((_FORMAT, rows.shape, k)).encode())
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "neighbours"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{digest.hexdigest()}.npz"
    prints = vector_fingerprints(queries)
    with exclusive(root / ".lock"):
        known, found = _saved(path)
        at = pd.Index(known).get_indexer(prints) if len(known) else np.full(len(queries), -1)
        missing = np.flatnonzero(at < 0)
        out = np.empty((len(queries), min(k, len(rows))), dtype=np.int64)
        if len(known):
            out[at >= 0] = found[at[at >= 0]]
        if len(missing):
            out[missing] = nearest_rows(queries[missing], rows, k)
            unique, first = np.unique(prints, return_index=True)
            _save(path, unique, out[first])
        else:
            os.utime(path)  # the newest used is kept
        _prune(root)
    return out


def _saved(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A saved answer: the queries' fingerprints (unique) and their rows; empty if none."""
    try:
        with np.load(path) as saved:
            return saved["fingerprints"], saved["nearest"]
    except (OSError, ValueError, KeyError):  # none, or damaged: searched again
        return np.zeros(0, dtype=np.uint64), np.zeros((0, 0), dtype=np.int64)


def _save(path: Path, fingerprints: np.ndarray, nearest: np.ndarray) -> None:
    partial = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(partial, fingerprints=fingerprints, nearest=nearest)
    partial.replace(path)  # atomic: a reader sees the old answer or the new one


def _prune(root: Path) -> None:
    saved = sorted(root.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in saved[KEPT:]:
        old.unlink(missing_ok=True)
