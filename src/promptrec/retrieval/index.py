"""The retrieval contract: a vector index answering top-K inner-product queries over items.

Every vector scorer (the text strategies, the trained models) ranks through it, in the service
and in batch: user vectors in, the ``k`` best item keys out, with the user's history excluded
and filters applied with their exact meaning.

* :class:`ExactIndex`: brute force with BLAS, exact; the choice for small catalogues.
* :class:`HNSWIndex`: an approximate HNSW graph (faiss), for large catalogues; about a
  millisecond a query at a million items.
* :class:`~promptrec.retrieval.milvus.MilvusIndex`: a Milvus collection (embedded milvus-lite
  or a server), for catalogues that outgrow one process.

:func:`build_index` picks one by catalogue size (:class:`IndexConfig`). Keys are item
positions in the catalogue (``0..n-1``); :meth:`VectorIndex.add` appends items at the next
keys, :meth:`VectorIndex.remove` retires keys (never reused), so a key always names the same
item.

Exclusions and filters keep their exact meaning on an approximate index: candidates are
fetched with room for the excluded items, filtered, and fetched again wider while fewer than
``k`` survive; a filter that keeps few items is answered exactly over just those items.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from promptrec.data.rows import AppendOnlyRows
from promptrec.errors import ConfigError
from promptrec.retrieval.topk import top_k

IndexKind = Literal["auto", "exact", "hnsw", "milvus"]


@dataclass(frozen=True)
class IndexConfig:
    """How items are searched.

    Attributes:
        kind: ``exact``, ``hnsw``, or ``auto``: exact up to ``auto_threshold`` items, HNSW
            above.
        auto_threshold: the catalogue size where ``auto`` switches to HNSW. Exact search of
            200k 384-d items takes about 13 ms a query on one core, HNSW under 1 ms; but an
            exact index needs no building, and a catalogue change rebuilds the graph.
        m: HNSW links per node (memory: about ``2 * m * 4`` bytes per item beside the vector).
        ef_construction: HNSW build-time beam width (higher: better graph, slower build).
        ef_search: HNSW query-time beam width (higher: better recall, slower queries); never
            less than the number of candidates asked for. None (the default): calibrated, the
            narrowest width from ``DEFAULT_EF_SEARCH`` (256) up whose recall@10 against exact
            search reaches ``target_recall`` for a sample of the catalogue's own users
            (:meth:`HNSWIndex.calibrate`), measured once when the graph is built and saved
            with it; 256 for a graph built without users. The width a catalogue needs depends
            on its vectors: 256 gave recall@10 0.988 on 30k product-like vectors (0.33 ms a
            query) but 0.80 on a million hashed ones, which need 4,096 (15 ms).
        target_recall: the recall@10 a calibrated ``ef_search`` reaches (the sample's recall
            must clear it by 1.64 standard errors: reached with 95% confidence).
        exact_below: a filter keeping at most this many items is answered exactly over them
            (their vectors gathered in blocks of 2,048: about 24 ms a query for 134,000 of a
            million 384-d items on one core). Graph search with a selective filter misses: at
            a million items, a category filter keeping 13% of them found 17% of the exact
            top-10 through the graph (faiss's id selector, even with a 30x wider beam), since
            the beam stays near the user and the category's items lie elsewhere.
        quantize: the HNSW graph keeps its vectors as 8-bit codes (faiss ``IndexHNSWSQ``): a
            quarter of the memory (0.66 GB instead of 1.8 GB at a million 384-d items, graph
            included). Its candidates are re-scored with the scorer's exact vectors, four times
            ``k`` of them: on 100k product vectors recall@10 was that of full-precision vectors
            (0.846 against 0.845 at ``ef_search`` 256), and search 20% faster.
        milvus_uri: with ``kind="milvus"``: a file path (embedded milvus-lite) or a server
            URI (see :mod:`promptrec.retrieval.milvus`).
        milvus_collection: the Milvus collection of the items.
    """

    kind: IndexKind = "auto"
    auto_threshold: int = 200_000
    m: int = 32
    ef_construction: int = 100
    ef_search: int | None = None
    target_recall: float = 0.95
    exact_below: int = 200_000
    quantize: bool = True
    milvus_uri: str | None = None
    milvus_collection: str = "promptrec_items"

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "exact", "hnsw", "milvus"):
            raise ConfigError(f"index kind must be auto, exact, hnsw or milvus, not {self.kind!r}")
        if self.kind == "milvus" and not self.milvus_uri:
            raise ConfigError("a Milvus index needs a URI: a file path or http://host:19530")
        for name in ("auto_threshold", "m", "ef_construction", "ef_search", "exact_below"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"index setting {name} must be at least 1")
        if not 0 < self.target_recall <= 1:
            raise ConfigError(f"target_recall must be in (0, 1], not {self.target_recall}")

    def resolve(self, n_items: int) -> Literal["exact", "hnsw", "milvus"]:
        if self.kind == "auto":
            return "hnsw" if n_items > self.auto_threshold else "exact"
        return self.kind

    def built(self) -> dict:
        """The settings a saved index is built with (the others act at query time)."""
        searching = ("ef_search", "target_recall", "exact_below")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in searching}


#: the HNSW beam width of a graph built without users to calibrate it on
DEFAULT_EF_SEARCH = 256
#: the widest beam calibration tries (about 15 ms a query at a million 384-d items)
MAX_EF_SEARCH = 4096
#: users whose lists calibrate the beam width
CALIBRATION_USERS = 200
#: items a loaded graph can take before its arrays grow (a growth copies them all: 0.35 s at a
#: million items, once, on the first add after a start instead)
GROWTH_ROOM = 10_000


class VectorIndex(ABC):
    """Top-K by inner product over item vectors, keyed by item position.

    Subclasses give :meth:`candidates` (the approximate best keys of live items per query);
    :meth:`search` adds exclusions and filters with their exact meaning.

    Attributes:
        max_candidates: the most candidates the index returns for one query (None: all).
    """

    config: IndexConfig
    max_candidates: int | None = None
    #: :meth:`candidates` can search among given keys only (``only``), as filters ask
    selects: bool = False
    #: the stored vectors are compressed: candidates are re-scored with exact ones when the
    #: search is given them
    compressed: bool = False

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        self.dim = int(dim)
        self.config = config or IndexConfig()
        self._alive = np.zeros(0, dtype=bool)
        self._lock = ReadWriteLock()  # searches share it; add and remove take it alone

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        """Items that can be found (added and not removed)."""
        return int(self._alive.sum())

    @property
    def size(self) -> int:
        """Keys handed out so far (removed ones included): the next key is ``size``."""
        return len(self._alive)

    @property
    def alive(self) -> np.ndarray:
        """``[size]`` bool: which keys can be found."""
        return self._alive

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Add items; returns their keys (``size``, ``size + 1``...)."""
        vectors = _rows(vectors, self.dim)
        with self._lock.writing():
            keys = np.arange(self.size, self.size + len(vectors), dtype=np.int64)
            self._add(vectors)
            self._alive = np.concatenate([self._alive, np.ones(len(vectors), dtype=bool)])
            self._added()
        return keys

    def remove(self, keys: Sequence[int] | np.ndarray) -> None:
        """Retire keys: they are never returned again (nor reused)."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) and (keys.min() < 0 or keys.max() >= self.size):
            raise KeyError(f"keys out of range 0..{self.size - 1}")
        with self._lock.writing():
            alive = self._alive.copy()
            alive[keys] = False
            self._alive = alive
            self._removed(keys)

    @abstractmethod
    def _add(self, vectors: np.ndarray) -> None: ...

    def _added(self) -> None:  # noqa: B027 (optional hook)
        """Called after keys were added (``_alive`` covers them)."""

    def _removed(self, keys: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Called after keys were retired (an index may drop them from its structures)."""

    @abstractmethod
    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """The stored vectors of ``keys``, ``[len(keys), dim]``."""

    @abstractmethod
    def candidates(
        self,
        queries: np.ndarray,
        n: int,
        banned: np.ndarray | None = None,
        only: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, scores)``, ``[n_queries, n]``: the (approximately) best live items per
        query, best first; ``-1`` and ``-inf`` pad rows with fewer. ``banned`` keys may be
        left out by the index itself (an index that cannot is filtered afterwards); so may
        the keys outside ``only`` (a ``[size]`` bool mask), by an index that :attr:`selects`."""

    def _narrow(
        self,
        queries: np.ndarray,
        k: int,
        subset: np.ndarray,
        exclude: Sequence[np.ndarray] | None,
        exact: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of the keys ``subset`` (a narrow filter), exactly: every one of them
        scored from its stored vector (or its ``exact`` one)."""
        sub_scores = np.empty((len(queries), len(subset)), dtype=np.float32)
        for start in range(0, len(subset), 2048):  # gathered in blocks: no copy of them all
            block = subset[start : start + 2048]
            stored = self.vectors(block) if exact is None else exact[block]
            sub_scores[:, start : start + len(block)] = queries @ stored.T
        position = np.full(self.size, -1, dtype=np.int64)
        position[subset] = np.arange(len(subset))
        sub_exclude = None
        if exclude is not None:
            sub_exclude = [position[np.asarray(e, dtype=np.int64)] for e in exclude]
            sub_exclude = [e[e >= 0] for e in sub_exclude]
        idx, best = top_k(sub_scores, k, exclude=sub_exclude)
        return np.where(idx >= 0, subset[np.maximum(idx, 0)], -1), best.astype(np.float32)

    # ------------------------------------------------------------------ search
    def _eligible(self, allowed: np.ndarray | None) -> np.ndarray:
        """``[size]`` bool: the live keys ``allowed`` keeps (all live ones for None)."""
        return self._alive if allowed is None else self._alive & _mask(allowed, self.size)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
        exact: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, scores)`` of the ``k`` best live items per query, best first.

        Args:
            queries: ``[n_queries, dim]`` (one row per user).
            k: how many; rows with fewer eligible items are padded with ``-1`` / ``-inf``.
            exclude: per query, keys never to return (the user's history).
            allowed: ``[size]`` bool mask of eligible keys (filters).
            exact: the items' full-precision vectors by key (the scorer's; rows past its
                length are not its items): an index that stores them :attr:`compressed`
                scores with these.
        """
        if exact is not None and not self.compressed:
            exact = None  # the stored vectors are these already
        queries = _rows(queries, self.dim)
        with self._lock.reading():
            eligible = self._eligible(allowed)
            n_eligible = int(eligible.sum())
            keys = np.full((len(queries), k), -1, dtype=np.int64)
            scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
            if n_eligible == 0 or k < 1:
                return keys, scores
            if allowed is not None and n_eligible <= self.config.exact_below:
                return self._narrow(queries, k, np.flatnonzero(eligible), exclude, exact)
            select = self.selects and allowed is not None
            for row, query in enumerate(queries):
                banned = None if exclude is None else np.asarray(exclude[row], dtype=np.int64)
                keys[row], scores[row] = self._search_one(
                    query, k, banned, eligible, n_eligible, select=select, exact=exact
                )
        return keys, scores

    def _search_one(
        self,
        query: np.ndarray,
        k: int,
        banned: np.ndarray | None,
        eligible: np.ndarray,
        n_eligible: int,
        *,
        select: bool = False,
        exact: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fetch candidates with room for the banned items, keep the eligible ones, and widen
        while fewer than ``k`` are left and more items could qualify. With ``select``, the
        index searches among the eligible, not banned keys alone (no room needed). With
        ``exact`` vectors, ``RESCORED`` times ``k`` candidates are re-scored with them."""
        ok = eligible
        if banned is not None and len(banned):
            ok = eligible.copy()
            ok[banned[(banned >= 0) & (banned < self.size)]] = False
        wanted = min(k, int(ok.sum()))
        most = min(len(self), self.max_candidates or len(self))
        n = k + (0 if banned is None or select else len(banned))
        if exact is not None:
            n = max(n, RESCORED * k)
        while True:
            n = min(n, most)
            found, found_scores = self.candidates(
                query[None, :], n, banned, only=ok if select else None
            )
            found, found_scores = found[0], found_scores[0]
            if exact is not None:
                found, found_scores = _rescored(query, found, exact)
            valid = found >= 0
            keep = valid.copy()
            keep[valid] = ok[found[valid]]
            if keep.sum() >= wanted or n >= most:
                break
            # how widely to look again: as many more as the share of candidates kept says
            share = max(keep.sum() / max(valid.sum(), 1), n_eligible / max(len(self), 1), 1e-3)
            n = int(min(most, max(2 * n, n + (wanted - keep.sum()) / share * 1.5)))
        out_keys = np.full(k, -1, dtype=np.int64)
        out_scores = np.full(k, -np.inf, dtype=np.float32)
        chosen = found[keep][:k]
        out_keys[: len(chosen)] = chosen
        out_scores[: len(chosen)] = found_scores[keep][:k]
        return out_keys, out_scores

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (a folder); :func:`load_index` reads it back."""


class ExactIndex(VectorIndex):
    """Brute-force inner product (numpy BLAS): exact, linear in the number of items."""

    def __init__(self, vectors: np.ndarray | None = None, config: IndexConfig | None = None):
        vectors = np.zeros((0, 0), np.float32) if vectors is None else vectors
        super().__init__(np.asarray(vectors).shape[1], config)
        self._rows = AppendOnlyRows(np.zeros((0, self.dim), dtype=np.float32))
        self._vectors = self._rows.view(0)
        if len(vectors):
            self.add(vectors)

    def _add(self, vectors: np.ndarray) -> None:
        if not len(self._vectors):  # the first batch: copied once, with room for more
            self._rows = AppendOnlyRows(vectors, spare=AppendOnlyRows.spare_for(len(vectors)))
            self._vectors = self._rows.view(len(vectors))
        else:  # later ones are appended in place (searches running read their own prefix)
            self._rows, self._vectors = self._rows.extended(len(self._vectors), vectors)

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._vectors[keys]

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Inner products with every key (removed ones too), ``[n_queries, size]``."""
        return _rows(queries, self.dim) @ self._vectors.T

    def candidates(
        self,
        queries: np.ndarray,
        n: int,
        banned: np.ndarray | None = None,
        only: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.scores(queries)
        return top_k(scores, n, allowed=self._alive)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
        exact: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.reading():  # the stored vectors are exact: ``exact`` adds nothing
            eligible = self._eligible(allowed)
            return top_k(self.scores(queries), k, exclude=exclude, allowed=eligible)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "vectors.npy", self._vectors)
        np.save(out / "alive.npy", self._alive)
        _write_kind(out, "exact", self.config)
        return out


class HNSWIndex(VectorIndex):
    """An approximate HNSW graph over inner products (faiss ``IndexHNSWFlat``, or
    ``IndexHNSWSQ`` with 8-bit codes when ``config.quantize``: see :class:`IndexConfig`).

    A key is normally the node of the same number. A graph reused from an earlier catalogue
    (:func:`cached_index`) maps keys to its nodes instead (``_key_node``, ``_node_key``): the
    rows found in it keep their nodes, the others are added, and nodes of items no longer in
    the catalogue are dead.

    Removed keys stay in the graph (HNSW cannot drop nodes) and are skipped during the search
    itself (an id selector), so they never take a candidate's place; so are the items a filter
    or the user's history rule out (:attr:`selects`), so that a filtered search costs about
    what a plain one does instead of widening until enough candidates pass.
    """

    selects = True

    def __init__(
        self,
        vectors: np.ndarray | None = None,
        config: IndexConfig | None = None,
        *,
        dim: int | None = None,
        progress: bool = False,
    ) -> None:
        faiss = _faiss()
        self.progress = progress  # a progress bar while items are added
        dim = np.asarray(vectors).shape[1] if vectors is not None else dim
        super().__init__(dim, config)
        if self.config.quantize:
            self._index = faiss.IndexHNSWSQ(
                self.dim, faiss.ScalarQuantizer.QT_8bit, self.config.m, faiss.METRIC_INNER_PRODUCT
            )
        else:
            self._index = faiss.IndexHNSWFlat(self.dim, self.config.m, faiss.METRIC_INNER_PRODUCT)
        self.compressed = self.config.quantize
        self._index.hnsw.efConstruction = self.config.ef_construction
        self._selector = None  # of the live nodes, when some were removed
        self._key_node: np.ndarray | None = None  # key -> node (None: the same number)
        self._node_key: np.ndarray | None = None  # node -> key (-1: a dead node)
        #: how ``ef_search`` was chosen (:meth:`calibrate`), saved with the graph; None: not
        self.calibration: dict | None = None
        if vectors is not None and len(vectors):
            self.add(vectors)

    @property
    def ef_search(self) -> int:
        """The beam width searches use: the config's, else the calibrated one, else
        ``DEFAULT_EF_SEARCH``."""
        if self.config.ef_search is not None:
            return self.config.ef_search
        return int((self.calibration or {}).get("ef_search", DEFAULT_EF_SEARCH))

    def calibrate(
        self,
        queries: np.ndarray,
        exclude: Sequence[np.ndarray] | None = None,
        exact: np.ndarray | None = None,
        *,
        k: int = 10,
    ) -> dict:
        """Choose the beam width for ``config.target_recall``: the narrowest of
        ``DEFAULT_EF_SEARCH`` (256), 384, 512, 768... ``MAX_EF_SEARCH`` whose recall@``k`` for
        ``queries`` (users' vectors; ``exclude``: their histories, left out as when served)
        against exact search clears the target by 1.64 standard errors of the users' mean;
        the widest if none does. ``exact``: the items' full-precision vectors, as
        :meth:`search` takes them. Returns (and keeps, in :attr:`calibration`) the width, the
        recall measured and the target."""
        queries = _rows(queries, self.dim)
        if exact is None:
            exact = self.vectors(np.arange(self.size))
        truth = _exact_top(queries, exact, self._alive, k, exclude)
        target = self.config.target_recall
        widths = sorted({w for e in range(5, 13) for w in (2**e, 3 * 2 ** (e - 1))})
        widths = [w for w in widths if DEFAULT_EF_SEARCH <= w <= MAX_EF_SEARCH]
        for width in widths:
            self.calibration = {"ef_search": width}
            found, _ = self.search(queries, k, exclude=exclude, exact=exact)
            per_user = _overlap(found, truth)
            error = per_user.std() / np.sqrt(len(per_user))
            if per_user.mean() - 1.64 * error >= target:
                break
        self.calibration = {
            "ef_search": width,
            f"recall@{k}": round(float(per_user.mean()), 4),
            "target": target,
            "users": len(queries),
        }
        return self.calibration

    def _make_room(self) -> None:
        """Reserve room for ``GROWTH_ROOM`` more nodes in the graph's arrays (a graph read from
        disk has none: its first add would copy them all, inside a catalogue change)."""
        graph = self._index.hnsw
        storage = _faiss().downcast_index(self._index.storage)
        per_node = graph.nb_neighbors(0) + graph.nb_neighbors(1)
        arrays = [(graph.levels, 1), (graph.offsets, 1), (graph.neighbors, per_node)]
        if hasattr(storage, "codes"):
            arrays.append((storage.codes, storage.code_size))
        for array, per_item in arrays:  # std::vector keeps its capacity when it shrinks
            size = array.size()
            array.resize(size + GROWTH_ROOM * per_item)
            array.resize(size)

    def _add(self, vectors: np.ndarray) -> None:
        if self._key_node is not None and len(vectors):  # new nodes for the new keys
            nodes = np.arange(self._index.ntotal, self._index.ntotal + len(vectors))
            self._key_node = np.concatenate([self._key_node, nodes])
            self._node_key = np.concatenate([self._node_key, self.size + nodes - nodes[0]])
        self._insert(vectors)

    def _insert(self, vectors: np.ndarray) -> None:
        """Add ``vectors`` to the graph as its next nodes."""
        faiss = _faiss()
        step = 20_000
        threads = faiss.omp_get_max_threads()
        if len(vectors) > step:  # a build: every core (a service limits searches to one)
            faiss.omp_set_num_threads(os.cpu_count() or 1)
        try:
            if not self._index.is_trained:  # the 8-bit codes' range, from the first items
                self._index.train(vectors)
            with tqdm(
                total=len(vectors), disable=not self.progress, desc="HNSW index", unit="item"
            ) as bar:
                for start in range(0, len(vectors), step):
                    self._index.add(vectors[start : start + step])
                    bar.update(min(step, len(vectors) - start))
        finally:
            faiss.omp_set_num_threads(threads)

    def _removed(self, keys: np.ndarray) -> None:
        self._select_live()

    def _added(self) -> None:
        if self._selector is not None:  # the selector must keep the new keys too
            self._select_live()

    def _select_live(self) -> None:
        """The selector of the live keys' nodes, which every search passes."""
        self._bits, self._selector = _bitmap_selector(self._nodes_of(self._alive))

    def _nodes_of(self, mask: np.ndarray) -> np.ndarray:
        """A ``[size]`` key mask as a mask of the graph's nodes (dead nodes never kept)."""
        if self._key_node is None:
            return mask
        nodes = np.zeros(self._index.ntotal, dtype=bool)
        nodes[self._key_node[: len(mask)][mask]] = True
        return nodes

    def _mapped(self, alive: np.ndarray, key_node: np.ndarray) -> None:
        """Serve keys ``0..len(key_node)-1`` from the nodes ``key_node`` (a reused graph)."""
        self._key_node = key_node.astype(np.int64)
        self._node_key = np.full(self._index.ntotal, -1, dtype=np.int64)
        self._node_key[self._key_node] = np.arange(len(self._key_node))
        self._alive = alive
        self._select_live()

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_selector", "_bits")}
        state["_index"] = _faiss().serialize_index(self._index)  # bytes (numpy uint8)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index = _faiss().deserialize_index(state["_index"])
        self._selector = None
        if not self._alive.all() or self._key_node is not None:
            self._select_live()

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        faiss = _faiss()
        keys = np.asarray(keys, dtype=np.int64)
        if self._key_node is not None:
            keys = self._key_node[keys]
        if self.compressed:  # decoded from the 8-bit codes
            return self._index.reconstruct_batch(keys)
        storage = faiss.downcast_index(self._index.storage)
        flat = faiss.rev_swig_ptr(storage.get_xb(), self.size * self.dim)
        return np.asarray(flat).reshape(self.size, self.dim)[keys]

    def candidates(
        self,
        queries: np.ndarray,
        n: int,
        banned: np.ndarray | None = None,
        only: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, n)
        if only is not None:
            # the beam also holds the items the selector rules out: widen it by 1/sqrt(share
            # kept). On 30k product-like vectors, history excluded, a filter keeping 5%:
            # recall@10 0.914 unwidened, 0.998 so (2.1 ms a query), 1.0 at 1/share (17 ms)
            share = max(int(only[: self.size].sum()) / max(self.size, 1), 1e-3)
            params.efSearch = int(params.efSearch / share**0.5)
            kept = self._nodes_of(only[: self.size])
            bits, params.sel = _bitmap_selector(kept)  # bits: kept while it runs
        elif self._selector is not None:
            params.sel = self._selector
        scores, nodes = self._index.search(_rows(queries, self.dim), n, params=params)
        keys = nodes.astype(np.int64)
        if self._node_key is not None:
            keys = np.where(nodes >= 0, self._node_key[np.maximum(nodes, 0)], -1)
        scores = np.where(keys >= 0, scores, -np.inf).astype(np.float32)
        return keys, scores

    def save(self, path: str | Path) -> Path:
        faiss = _faiss()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(out / "hnsw.faiss"))
        np.save(out / "alive.npy", self._alive)
        if self._key_node is not None:
            np.save(out / "nodes.npy", self._key_node)
        self._write_meta(out)
        return out

    def _write_meta(self, folder: Path) -> None:
        _write_kind(folder, "hnsw", self.config, dim=self.dim, calibration=self.calibration)

    @classmethod
    def _read(cls, path: Path, config: IndexConfig, calibration: dict | None = None) -> HNSWIndex:
        faiss = _faiss()
        graph = faiss.read_index(str(path / "hnsw.faiss"))
        index = cls(config=config, dim=graph.d)
        index._index = graph
        index.compressed = not isinstance(graph, faiss.IndexHNSWFlat)
        index.calibration = calibration
        index._make_room()
        alive = np.load(path / "alive.npy")
        if (path / "nodes.npy").exists():
            key_node = np.load(path / "nodes.npy")
            if len(key_node) != len(alive) or (len(key_node) and key_node.max() >= graph.ntotal):
                raise ConfigError(f"{path}: the key map does not fit the graph")
            index._mapped(alive, key_node)
            return index
        if len(alive) != graph.ntotal:
            raise ConfigError(f"{path}: {graph.ntotal} vectors but {len(alive)} keys")
        index._alive = alive
        if not alive.all():
            index._select_live()
        return index


RESCORED = 4  # a compressed index re-scores this many times k candidates with exact vectors


def _exact_top(
    queries: np.ndarray,
    vectors: np.ndarray,
    alive: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None,
) -> np.ndarray:
    """``[n_queries, k]`` keys of the exact top ``k`` live, not excluded items per query
    (``-1`` pads), scored a block of items at a time."""
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    keys = np.full((len(queries), k), -1, dtype=np.int64)
    step = 65_536
    for start in range(0, len(alive), step):
        block = np.ascontiguousarray(vectors[start : start + step], dtype=np.float32)
        banned = [np.asarray(b, dtype=np.int64) - start for b in exclude] if exclude else None
        found, scores = top_k(
            queries @ block.T,
            k,
            exclude=None if banned is None else [b[(b >= 0) & (b < len(block))] for b in banned],
            allowed=alive[start : start + len(block)],
        )
        # merge with the best so far: the k best of both
        both_keys = np.concatenate([keys, np.where(found >= 0, found + start, -1)], axis=1)
        pick, best = top_k(np.concatenate([best, scores], axis=1), k)
        keys = np.where(pick >= 0, np.take_along_axis(both_keys, np.maximum(pick, 0), 1), -1)
    return keys


def _overlap(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per row, the share of ``truth``'s keys that ``found`` holds (``-1`` pads ignored)."""
    return np.array(
        [
            len(set(f[f >= 0]) & set(t[t >= 0])) / max(int((t >= 0).sum()), 1)
            for f, t in zip(found, truth, strict=True)
        ]
    )


def _rescored(
    query: np.ndarray, keys: np.ndarray, exact: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` scored with their ``exact`` vectors and sorted, best first (padding and keys
    past ``exact`` last, at ``-inf``)."""
    scores = np.full(len(keys), -np.inf, dtype=np.float32)
    known = (keys >= 0) & (keys < len(exact))
    scores[known] = exact[keys[known]] @ query
    order = np.argsort(-scores, kind="stable")
    return keys[order], scores[order]


class ReadWriteLock:
    """Many readers at once, or one writer (writers waiting go first)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0

    def __getstate__(self) -> dict:
        return {}  # a copy of an index (pickled to a Ray worker) gets a lock of its own

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def build_index(vectors: np.ndarray, config: IndexConfig | None = None) -> VectorIndex:
    """An index over ``vectors`` (keys ``0..n-1``): exact or HNSW as ``config`` says."""
    config = config or IndexConfig()
    vectors = _rows(vectors, np.asarray(vectors).shape[1])
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
    progress: bool = False,
    users: Callable[[], tuple[np.ndarray, list[np.ndarray]]] | None = None,
) -> VectorIndex:
    """:func:`build_index`, with an HNSW graph kept on disk by the hash of the vectors and
    the settings it is built with: a restart over the same catalogue loads it (seconds)
    instead of building it (minutes at a million items); a Milvus collection likewise named
    by that hash, reused if it exists. An exact index needs no building and is never cached.

    ``users`` gives sample users' vectors and histories, asked for when a graph needs its
    ``ef_search`` calibrated (:meth:`HNSWIndex.calibrate`: a graph built or first loaded with
    ``config.ef_search`` None); the width found is saved with the graph."""
    config = config or IndexConfig()
    vectors = _rows(vectors, np.asarray(vectors).shape[1])
    kind = config.resolve(len(vectors))
    if kind == "exact":
        return ExactIndex(vectors, config)
    import hashlib
    import shutil

    from promptrec.encoders.cache import default_cache_dir

    digest = hashlib.sha1(vectors.tobytes())
    digest.update(repr((vectors.shape, kind, sorted(config.built().items()))).encode())
    if kind == "milvus":
        from promptrec.retrieval.milvus import cached_collection

        return cached_collection(vectors, config, digest.hexdigest())
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "indexes"
    folder = root / digest.hexdigest()
    root.mkdir(parents=True, exist_ok=True)
    # one builder at a time (the workers of one service start together): the others wait for
    # its graph and load it
    with (root / f".{folder.name}.lock").open("a") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "index.json").exists():
            try:
                index = load_index(folder)
            except Exception:  # a damaged or partial copy: build it again
                shutil.rmtree(folder, ignore_errors=True)
            else:
                index.config = config  # the query-time settings are the caller's
                if isinstance(index, HNSWIndex) and _calibrated(index, vectors, users):
                    index._write_meta(folder)
                return index
        fingerprints = _fingerprints(vectors)
        reused = _reused_graph(root, vectors, config, fingerprints)
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


#: a graph reused for a changed catalogue is built afresh instead once more than this share of
#: its nodes are dead (items no longer in the catalogue, or replaced)
REUSE_DEAD_SHARE = 0.25


def _fingerprints(vectors: np.ndarray) -> np.ndarray:
    """``[n]`` uint64: a hash of each vector's bytes (rows with equal vectors are equal)."""
    words = vectors.shape[1] if vectors.ndim == 2 else 0
    coefficients = np.random.default_rng(20_261_130).integers(
        1, 2**63, size=words, dtype=np.uint64
    ) | np.uint64(1)
    out = np.empty(len(vectors), dtype=np.uint64)
    for start in range(0, len(vectors), 65_536):  # a block at a time: no 64-bit copy of all
        block = np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32)
        with np.errstate(over="ignore"):
            out[start : start + len(block)] = (
                block.view(np.uint32).astype(np.uint64) * coefficients
            ).sum(axis=1)
    return out


def _reused_graph(
    root: Path, vectors: np.ndarray, config: IndexConfig, fingerprints: np.ndarray
) -> tuple[HNSWIndex, np.ndarray, Path] | None:
    """The newest graph saved in ``root`` with these settings, grown to serve ``vectors``:
    each row whose vector is a node keeps that node, the others are added; the nodes of the
    vectors no longer there are dead. Returns ``(index, fingerprint of each node, the folder
    it came from)``, or None when no graph fits (none saved, or too many dead nodes).

    A catalogue that changed since the graph was saved (items added, changed, removed, or
    compacted by a rebuild) thus restarts at the cost of its changes, not of its size."""
    import json

    faiss = _faiss()
    built = config.built()
    saved = []
    for meta_file in root.glob("*/index.json"):
        try:
            meta = json.loads(meta_file.read_text())
            settings = IndexConfig(**meta["config"]).built()
        except (OSError, ValueError, TypeError, KeyError, ConfigError):
            continue
        if meta.get("kind") == "hnsw" and meta.get("dim") == vectors.shape[1]:
            if settings == built and (meta_file.parent / "fingerprints.npy").exists():
                saved.append((meta_file.stat().st_mtime, meta_file.parent, meta))
    if not saved:
        return None
    _, folder, meta = max(saved, key=lambda entry: entry[0])
    try:
        known = np.load(folder / "fingerprints.npy")
        graph = faiss.read_index(str(folder / "hnsw.faiss"))
    except Exception:  # noqa: BLE001 (a damaged copy: not reused)
        return None
    if len(known) != graph.ntotal or not len(known):
        return None
    # each row's node: one with its vector; a node two rows share (equal vectors) serves the
    # first of them, and the others get nodes of their own
    order = np.argsort(known, kind="stable")
    at = np.minimum(np.searchsorted(known[order], fingerprints), len(known) - 1)
    node = np.where(known[order][at] == fingerprints, order[at], -1)
    found = np.flatnonzero(node >= 0)
    _, first = np.unique(node[found], return_index=True)
    keep = np.zeros(len(node), dtype=bool)
    keep[found[first]] = True
    node[~keep] = -1
    missing = np.flatnonzero(node < 0)
    dead = graph.ntotal - (len(node) - len(missing))
    if dead > REUSE_DEAD_SHARE * (graph.ntotal + len(missing)):
        return None
    node[missing] = graph.ntotal + np.arange(len(missing))
    index = HNSWIndex(config=config, dim=graph.d)
    index._index = graph
    index.compressed = not isinstance(graph, faiss.IndexHNSWFlat)
    index.calibration = meta.get("calibration")  # the same graph, a little grown
    index._insert(vectors[missing])
    index._make_room()
    index._mapped(np.ones(len(vectors), dtype=bool), node)
    return index, np.concatenate([known, fingerprints[missing]]), folder


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

        return MilvusIndex._read(folder, meta, config)
    if meta["kind"] == "hnsw":
        return HNSWIndex._read(folder, config, meta.get("calibration"))
    vectors = np.load(folder / "vectors.npy")
    index = ExactIndex(vectors, config)
    index._alive = np.load(folder / "alive.npy")
    return index


def _write_kind(folder: Path, kind: str, config: IndexConfig, **extra: object) -> None:
    import dataclasses
    import json

    meta = {"kind": kind, "config": dataclasses.asdict(config), **extra}
    (folder / "index.json").write_text(json.dumps(meta, indent=2) + "\n")


def _rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or (len(rows) and rows.shape[1] != dim):
        raise ValueError(f"expected vectors of shape [n, {dim}], got {rows.shape}")
    return rows


def _mask(allowed: np.ndarray, size: int) -> np.ndarray:
    allowed = np.asarray(allowed, dtype=bool)
    if len(allowed) > size:
        raise ValueError(f"the filter mask has {len(allowed)} entries for {size} keys")
    if len(allowed) < size:  # items added after the mask was made are not allowed
        allowed = np.concatenate([allowed, np.zeros(size - len(allowed), dtype=bool)])
    return allowed


def _bitmap_selector(mask: np.ndarray) -> tuple[np.ndarray, object]:
    """A faiss id selector of the keys ``mask`` keeps, and the bits it reads (which must outlive
    it: the selector holds only a pointer to them)."""
    faiss = _faiss()
    bits = np.packbits(mask, bitorder="little")
    return bits, faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError("the HNSW index needs faiss: pip install faiss-cpu") from exc
    return faiss
