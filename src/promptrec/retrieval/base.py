"""The retrieval contract: :class:`VectorIndex`, what every index kind answers, and what they
share (:class:`ReadWriteLock`, :func:`as_rows`, :func:`write_index_json`).

An index answers top-K inner-product queries over items: user vectors in, the ``k`` best item
keys out, with the user's history excluded and filters applied with their exact meaning.

Keys are item positions in the catalogue (``0..n-1``); :meth:`VectorIndex.add` appends items
at the next keys, :meth:`VectorIndex.remove` retires keys (never reused), so a key always names
the same item.

Exclusions and filters keep their exact meaning on an approximate index: candidates are
fetched with room for the excluded items, filtered, and fetched again wider while fewer than
``k`` survive; a filter that keeps few items is answered exactly over just those items.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from promptrec.retrieval.config import RESCORED, IndexConfig
from promptrec.retrieval.topk import top_k


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
        vectors = as_rows(vectors, self.dim)
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
        queries = as_rows(queries, self.dim)
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


def write_index_json(folder: Path, kind: str, config: IndexConfig, **extra: object) -> None:
    """Write ``folder/index.json``: the index's ``kind``, its ``config`` and the ``extra``
    facts its kind reads back (:func:`~promptrec.retrieval.index.load_index` reads it)."""
    import json

    meta = {"kind": kind, "config": config.model_dump(), **extra}
    (folder / "index.json").write_text(json.dumps(meta, indent=2) + "\n")


def as_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``[n, dim]`` array (a ValueError if they are not
    ``n`` rows of ``dim``)."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or (len(rows) and rows.shape[1] != dim):
        raise ValueError(f"expected vectors of shape [n, {dim}], got {rows.shape}")
    return rows


def _mask(allowed: np.ndarray, size: int) -> np.ndarray:
    """A filter mask as a ``[size]`` bool mask (keys past its end are not allowed)."""
    allowed = np.asarray(allowed, dtype=bool)
    if len(allowed) > size:
        raise ValueError(f"the filter mask has {len(allowed)} entries for {size} keys")
    if len(allowed) < size:  # items added after the mask was made are not allowed
        allowed = np.concatenate([allowed, np.zeros(size - len(allowed), dtype=bool)])
    return allowed
