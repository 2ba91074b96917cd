"""Vector indexes: top-K inner-product queries over items, and the functions that make one.

Every vector scorer (the text strategies, the trained models) ranks through an index, in the
service and in batch: user vectors in, the ``k`` best item keys out, with the user's history
excluded and filters applied with their exact meaning (the contract:
:class:`~promptrec.retrieval.base.VectorIndex`).

* :class:`ExactIndex`: brute force with BLAS, exact; the choice for small catalogues.
* :class:`HNSWIndex`: an approximate HNSW graph (faiss), for large catalogues; about a
  millisecond a query at a million items.
* :class:`~promptrec.retrieval.milvus.MilvusIndex`: a Milvus collection (embedded milvus-lite
  or a server), for catalogues that outgrow one process.

:func:`build_index` picks one by catalogue size (:class:`IndexConfig`); :func:`cached_index`
keeps what it built on disk, and :func:`load_index` reads a saved index back. The index kinds
live in their own modules (:mod:`~promptrec.retrieval.config`, :mod:`~promptrec.retrieval.base`,
:mod:`~promptrec.retrieval.exact`, :mod:`~promptrec.retrieval.hnsw`,
:mod:`~promptrec.retrieval.milvus`); this module re-exports their public names, so
``from promptrec.retrieval.index import ...`` finds them all. Milvus is imported only when
asked for (pymilvus is an optional dependency).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from promptrec.errors import ConfigError
from promptrec.retrieval.base import ReadWriteLock, VectorIndex, as_rows
from promptrec.retrieval.config import (
    CALIBRATION_USERS,
    DEFAULT_EF_SEARCH,
    GROWTH_ROOM,
    MAX_EF_SEARCH,
    RESCORED,
    REUSE_DEAD_SHARE,
    IndexConfig,
    IndexKind,
)
from promptrec.retrieval.exact import ExactIndex
from promptrec.retrieval.hnsw import HNSWIndex, reused_graph, vector_fingerprints

__all__ = [
    "CALIBRATION_USERS",
    "DEFAULT_EF_SEARCH",
    "GROWTH_ROOM",
    "MAX_EF_SEARCH",
    "RESCORED",
    "REUSE_DEAD_SHARE",
    "ExactIndex",
    "HNSWIndex",
    "IndexConfig",
    "IndexKind",
    "ReadWriteLock",
    "VectorIndex",
    "build_index",
    "cached_index",
    "load_index",
]


def build_index(vectors: np.ndarray, config: IndexConfig | None = None) -> VectorIndex:
    """An index over ``vectors`` (keys ``0..n-1``): exact or HNSW as ``config`` says."""
    config = config or IndexConfig()
    vectors = as_rows(vectors, np.asarray(vectors).shape[1])
    kind = config.resolve(len(vectors))
    if kind == "milvus":
        from promptrec.retrieval.milvus import MilvusIndex

        return MilvusIndex(vectors, config)
    if kind == "hnsw":
        return HNSWIndex(vectors, config)
    return ExactIndex(vectors, config)


def cached_index(
    vectors: np.ndarray,
    config: IndexConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    key: str | None = None,
    progress: bool = False,
    users: Callable[[], tuple[np.ndarray, list[np.ndarray]]] | None = None,
) -> VectorIndex:
    """:func:`build_index`, with an HNSW graph kept on disk by the hash of the vectors and
    the settings it is built with: a restart over the same catalogue loads it (seconds)
    instead of building it (minutes at a million items); a Milvus collection likewise named
    by that hash, reused if it exists. An exact index needs no building and is never cached.

    ``users`` gives sample users' vectors and histories, asked for when a graph needs its
    ``ef_search`` calibrated (:meth:`HNSWIndex.calibrate`: a graph built or first loaded with
    ``config.ef_search`` None); the width found is saved with the graph. ``key``, where the
    caller has one, identifies the vectors' content instead of their hash (see
    :attr:`~promptrec.scorers.vector.VectorScorer.item_vectors_key`): a start then reads no
    vector it does not serve."""
    config = config or IndexConfig()
    vectors = as_rows(vectors, np.asarray(vectors).shape[1])
    kind = config.resolve(len(vectors))
    if kind == "exact":
        return ExactIndex(vectors, config)
    import hashlib
    import shutil

    from promptrec.encoders.cache import default_cache_dir, exclusive

    # the caller's identity of the vectors, or their buffer (no copy; read whole)
    digest = hashlib.sha1(key.encode()) if key else hashlib.sha1(vectors)
    digest.update(repr((vectors.shape, kind, sorted(config.built().items()))).encode())
    if kind == "milvus":
        from promptrec.retrieval.milvus import cached_collection

        return cached_collection(vectors, config, digest.hexdigest())
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "indexes"
    folder = root / digest.hexdigest()
    root.mkdir(parents=True, exist_ok=True)
    # one builder at a time (the workers of one service start together): the others wait for
    # its graph and load it
    with exclusive(root / f".{folder.name}.lock"):
        if (folder / "index.json").exists():
            try:
                index = load_index(folder)
            except Exception:  # a damaged or partial copy: build it again
                shutil.rmtree(folder, ignore_errors=True)
            else:
                index.config = config  # the query-time settings are the caller's
                if isinstance(index, HNSWIndex) and _calibrated(index, vectors, users):
                    index.write_meta(folder)
                return index
        fingerprints = vector_fingerprints(vectors)
        reused = reused_graph(root, vectors, config, fingerprints)
        if reused is not None:
            index, nodes_fingerprints, base = reused
        else:
            index, nodes_fingerprints, base = (
                HNSWIndex(vectors, config, progress=progress),
                fingerprints,
                None,
            )
        _calibrated(index, vectors, users)
        partial = root / f".{folder.name}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        index.save(partial)
        np.save(partial / "fingerprints.npy", nodes_fingerprints)
        try:
            partial.rename(folder)  # atomic: readers see a whole index or none
        except OSError:  # saved meanwhile by a process that did not lock (an older version)
            shutil.rmtree(partial, ignore_errors=True)
        if base is not None:  # the graph it grew from is superseded
            shutil.rmtree(base, ignore_errors=True)
    return index


def _calibrated(
    index: HNSWIndex,
    vectors: np.ndarray,
    users: Callable[[], tuple[np.ndarray, list[np.ndarray]]] | None,
) -> bool:
    """Calibrate ``index``'s beam width if its config asks for it, none is known, and users
    are at hand; True when it was."""
    if index.config.ef_search is not None or index.calibration is not None or users is None:
        return False
    queries, histories = users()
    if not len(queries):
        return False
    import logging

    found = index.calibrate(queries, histories, exact=vectors)
    logging.getLogger(__name__).info("HNSW ef_search calibrated: %s", found)
    return True


def load_index(path: str | Path) -> VectorIndex:
    """An index written by :meth:`VectorIndex.save`."""
    import json

    folder = Path(path)
    meta_file = folder / "index.json"
    if not meta_file.exists():
        raise ConfigError(f"{folder}: not a saved index (no index.json)")
    meta = json.loads(meta_file.read_text())
    config = IndexConfig(**meta["config"])
    if meta["kind"] == "milvus":
        from promptrec.retrieval.milvus import MilvusIndex

        return MilvusIndex.read(folder, meta, config)
    if meta["kind"] == "hnsw":
        return HNSWIndex.read(folder, config, meta.get("calibration"))
    return ExactIndex.read(folder, config)
