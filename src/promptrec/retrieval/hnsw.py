"""Approximate search: :class:`HNSWIndex`, an HNSW graph (faiss) for large catalogues (about a
millisecond a query at a million items).

Beside the index: its beam-width calibration against exact search (:meth:`HNSWIndex.calibrate`),
the reuse of a saved graph for a changed catalogue (:func:`vector_fingerprints`,
:func:`reused_graph`), and the faiss loader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from promptrec.errors import ConfigError
from promptrec.retrieval.base import VectorIndex, as_rows, write_index_json
from promptrec.retrieval.config import (
    DEFAULT_EF_SEARCH,
    GROWTH_ROOM,
    MAX_EF_SEARCH,
    REUSE_DEAD_SHARE,
    IndexConfig,
)
from promptrec.retrieval.topk import top_k


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
        queries = as_rows(queries, self.dim)
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
        scores, nodes = self._index.search(as_rows(queries, self.dim), n, params=params)
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
        self.write_meta(out)
        return out

    def write_meta(self, folder: Path) -> None:
        """Write ``folder/index.json``: the settings, and the calibrated beam width."""
        write_index_json(folder, "hnsw", self.config, dim=self.dim, calibration=self.calibration)

    @classmethod
    def read(cls, path: Path, config: IndexConfig, calibration: dict | None = None) -> HNSWIndex:
        """The graph :meth:`save` wrote to ``path`` (its ``config`` and ``calibration`` read by
        the caller from ``index.json``)."""
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


def vector_fingerprints(vectors: np.ndarray) -> np.ndarray:
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


def reused_graph(
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
