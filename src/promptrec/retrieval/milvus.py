"""A Milvus collection behind the retrieval contract, for catalogues that outgrow one process.

:class:`MilvusIndex` keeps item vectors in a Milvus collection (``id``: the item key,
``vector``: inner-product search) through ``pymilvus``. The same code takes a file path, served
by the embedded ``milvus-lite`` (what the tests use), or a server URI
(``http://host:19530``). A user's history and narrow filters travel with the query as a
boolean expression on ``id``, so Milvus never returns them (:meth:`MilvusIndex.candidates`,
:meth:`MilvusIndex._narrow`); broad filters are applied by fetching more, as for every index.

Install with ``pip install "promptrec[milvus]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptrec.errors import ConfigError
from promptrec.retrieval.base import VectorIndex, as_rows, write_index_json
from promptrec.retrieval.config import IndexConfig

MAX_LIMIT = 16_384  # the most results Milvus returns for one query
_BATCH = 5_000


class MilvusIndex(VectorIndex):
    """Items in a Milvus collection (see the module docstring).

    Args:
        uri: a file path (embedded milvus-lite) or a server URI; default: the config's.
        collection: the collection name; default: the config's. An existing collection of
            the same name is replaced when ``vectors`` are given, and reused when not.
        vectors: items to add at keys ``0..n-1``.
        dim: the vector size, when no vectors are given.
        transient: drop the collection once no index object of this process uses it any
            more (never at exit): what :func:`cached_collection` gives a serving snapshot,
            whose collection is replaced when the catalogue changes.
    """

    max_candidates = MAX_LIMIT

    def __init__(
        self,
        vectors: np.ndarray | None = None,
        config: IndexConfig | None = None,
        *,
        uri: str | None = None,
        collection: str | None = None,
        dim: int | None = None,
        transient: bool = False,
    ) -> None:
        config = config or IndexConfig(kind="milvus")
        dim = np.asarray(vectors).shape[1] if vectors is not None else dim
        if dim is None:
            raise ConfigError("a Milvus index needs vectors or their dimension")
        super().__init__(dim, config)
        self.uri = uri or config.milvus_uri
        if not self.uri:
            raise ConfigError("a Milvus index needs a URI: a file path or http://host:19530")
        self.collection = collection or config.milvus_collection
        self._client = open_client(self.uri)
        if transient:
            _USERS.hold(self)
        if vectors is not None:
            if self._client.has_collection(self.collection):
                self._client.drop_collection(self.collection)
            self._client.create_collection(
                self.collection, dimension=self.dim, metric_type="IP", auto_id=False
            )
            if len(vectors):
                self.add(vectors)

    def _add(self, vectors: np.ndarray) -> None:
        first = self.size
        for start in range(0, len(vectors), _BATCH):
            chunk = vectors[start : start + _BATCH]
            rows = [
                {"id": int(first + start + i), "vector": row.tolist()}
                for i, row in enumerate(chunk)
            ]
            # an upsert: every worker of a service applies the same change to a shared
            # collection (same keys, same vectors), which then holds each row once
            self._client.upsert(self.collection, rows)

    def _removed(self, keys: np.ndarray) -> None:
        for start in range(0, len(keys), _BATCH):
            self._client.delete(self.collection, ids=[int(k) for k in keys[start : start + _BATCH]])

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        rows = self._client.get(
            self.collection, ids=[int(k) for k in keys], output_fields=["vector"]
        )
        found = {int(r["id"]): r["vector"] for r in rows}
        return np.array([found[int(k)] for k in keys], dtype=np.float32).reshape(
            len(keys), self.dim
        )

    def candidates(
        self,
        queries: np.ndarray,
        n: int,
        banned: np.ndarray | None = None,
        only: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best items by Milvus; ``banned`` keys (the user's history) are left out by
        Milvus itself, as an ``id not in [...]`` expression."""
        return self._hits(queries, n, _id_expression("not in", banned))

    def _narrow(
        self,
        queries: np.ndarray,
        k: int,
        subset: np.ndarray,
        exclude: Sequence[np.ndarray] | None,
        exact: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A narrow filter travels with each query (``id in [...]``), with the history; no
        vectors leave Milvus."""
        inside = _id_expression("in", subset)
        keys = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, query in enumerate(queries):
            banned = None if exclude is None else exclude[row]
            outside = _id_expression("not in", banned)
            expression = " and ".join(t for t in (inside, outside) if t)
            found, found_scores = self._hits(query[None, :], k, expression)
            keys[row], scores[row] = found[0], found_scores[0]
        return keys, scores

    def _hits(self, queries: np.ndarray, n: int, expression: str) -> tuple[np.ndarray, np.ndarray]:
        queries = as_rows(queries, self.dim)
        n = min(n, MAX_LIMIT)
        keys = np.full((len(queries), n), -1, dtype=np.int64)
        scores = np.full((len(queries), n), -np.inf, dtype=np.float32)
        if n < 1:
            return keys, scores
        hits = self._client.search(
            self.collection, data=queries.tolist(), limit=n, filter=expression, output_fields=[]
        )
        for row, found in enumerate(hits):
            for col, hit in enumerate(found[:n]):
                keys[row, col] = int(hit["id"])
                scores[row, col] = float(hit["distance"])
        return keys, scores

    def save(self, path: str | Path) -> Path:
        """Milvus keeps the vectors; the folder records where, and which keys are live."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self._client.flush(self.collection)
        np.save(out / "alive.npy", self._alive)
        write_index_json(
            out, "milvus", self.config, uri=self.uri, collection=self.collection, dim=self.dim
        )
        return out

    @classmethod
    def read(cls, path: Path, meta: dict[str, Any], config: IndexConfig) -> MilvusIndex:
        """The index :meth:`save` recorded in ``path`` (``meta``: its ``index.json``)."""
        index = cls(config=config, uri=meta["uri"], collection=meta["collection"], dim=meta["dim"])
        if not index._client.has_collection(index.collection):
            raise ConfigError(f"{path}: the Milvus collection {index.collection!r} is gone")
        index._alive = np.load(path / "alive.npy")
        return index


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a file for the embedded milvus-lite (which one process opens at a
    time), not a server's address."""
    return "://" not in uri


def _id_expression(op: str, keys: np.ndarray | Sequence[int] | None) -> str:
    """``id in [...]`` / ``id not in [...]`` over the valid keys, or '' when there are none."""
    valid = [] if keys is None else [int(k) for k in keys if k >= 0]
    return f"id {op} {valid}" if valid else ""


def cached_collection(vectors: np.ndarray, config: IndexConfig, digest: str) -> MilvusIndex:
    """The collection of these vectors (named by their ``digest``): reused when it exists
    (a restart over the same catalogue inserts nothing), filled when not. In a milvus-lite
    file (one process) it is dropped when no snapshot uses it any more, so a changed catalogue
    leaves no copy; on a server, whose collections the workers of a service share, it is
    kept (another worker may still serve it): drop old ones there yourself."""
    from promptrec.encoders.cache import default_cache_dir, exclusive

    name = f"{config.milvus_collection}_{digest[:16]}"
    transient = is_local(config.milvus_uri or "")
    locks = default_cache_dir() / "indexes"
    locks.mkdir(parents=True, exist_ok=True)
    # one filler at a time (the workers of one service start together): the others find
    # its collection full and reuse it
    with exclusive(locks / f".milvus-{name}.lock"):
        client = open_client(config.milvus_uri or "")
        if client.has_collection(name):
            stats = client.get_collection_stats(name)
            if int(stats.get("row_count", -1)) == len(vectors):
                index = MilvusIndex(
                    config=config, collection=name, dim=vectors.shape[1], transient=transient
                )
                index._alive = np.ones(len(vectors), dtype=bool)
                return index
        return MilvusIndex(vectors, config, collection=name, transient=transient)


class _Users:
    """Which index objects of this process use each transient collection; the last one to
    be garbage-collected drops it (not at exit: a restart reuses it)."""

    def __init__(self) -> None:
        import threading

        self._count: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def hold(self, index: MilvusIndex) -> None:
        import weakref

        key = (index.uri, index.collection)
        with self._lock:
            self._count[key] = self._count.get(key, 0) + 1
        done = weakref.finalize(index, self._release, key, index._client)
        done.atexit = False

    def _release(self, key: tuple[str, str], client: Any) -> None:
        with self._lock:
            self._count[key] -= 1
            last = self._count[key] == 0
            if last:
                del self._count[key]
        if last:
            try:
                client.drop_collection(key[1])
            except Exception:  # a server gone meanwhile: nothing left to clean here
                pass


_USERS = _Users()


def open_client(uri: str) -> Any:
    """A ``pymilvus.MilvusClient`` on ``uri`` (a ConfigError if it cannot be opened)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise ConfigError(
            "the Milvus index needs pymilvus (and milvus-lite for a local file): "
            "pip install 'promptrec[milvus]'"
        ) from exc
    try:
        return MilvusClient(uri)
    except Exception as exc:  # the client's own errors: an unreachable server, a bad file
        raise ConfigError(f"cannot open Milvus at {uri}: {' '.join(str(exc).split())}") from exc
