"""An on-disk embedding cache, keyed by the encoder's name and a hash of the text.

Re-runs and unchanged items are not re-encoded: a changed text has a new hash, a new model a new
name. One SQLite file (WAL) so several processes can share it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from promptrec.encoders.base import Encoder, TextKind

_CHUNK = 500
_WRITE_CHUNK = 4096  # texts encoded, then written, at a time (what an interruption can lose)
#: missing texts from which an encode takes the cache's file lock first (see
#: :meth:`CachedEncoder._encode_cached`); a request's few texts never wait for another process
SHARED_FROM = 256


def default_cache_dir() -> Path:
    root = os.environ.get("PROMPTREC_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "promptrec"


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block: the
    processes of one service take turns building what they then share from the cache."""
    import fcntl

    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class CachedEncoder(Encoder):
    """Wraps an encoder; vectors come from the cache when present, else from the encoder.

    Args:
        encoder: the encoder to wrap.
        cache_dir: the cache folder (default: ``PROMPTREC_CACHE_DIR`` or ``~/.cache/promptrec``).
        cache_queries: also cache query texts (user prompts, live queries). The service turns
            it off: what users type is not kept on disk, and no request writes to the cache.
    """

    def __init__(
        self, encoder: Encoder, cache_dir: str | Path | None = None, *, cache_queries: bool = True
    ) -> None:
        self.encoder = encoder
        self.cache_queries = cache_queries
        self._lock = threading.Lock()
        self.name = encoder.name
        self.max_tokens = encoder.max_tokens
        path = Path(cache_dir) if cache_dir else default_cache_dir()
        self.path = path / "embeddings.sqlite"
        self._open()
        self.hits = 0
        self.misses = 0

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)"
        )
        self._db.commit()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_db")}

    def __setstate__(self, state: dict) -> None:
        # a copy elsewhere (a Ray worker) opens the cache at the same path, on its machine
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._open()

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self.encoder.dim

    def _key(self, text: str, kind: TextKind) -> str:
        return hashlib.sha1(f"{self.name}\x00{kind}\x00{text}".encode()).hexdigest()

    def missing(self, texts: Sequence[str], kind: TextKind = "document") -> list[tuple[str, str]]:
        """``(key, text)`` of the distinct texts not in the cache yet (what is left to encode,
        e.g. elsewhere: :func:`promptrec.ray_batch.encode_on_ray`)."""
        first = {self._key(t, kind): t for t in reversed(texts)}
        with self._lock:
            found = self._lookup(list(first))
        return [(k, t) for k, t in reversed(first.items()) if k not in found]

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write vectors under keys given by :meth:`missing` (one transaction)."""
        with self._lock:
            self._write(keys, vectors)

    def _write(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (key, dim, vec) VALUES (?, ?, ?)",
                [
                    (str(k), v.shape[0], np.asarray(v, dtype=np.float32).tobytes())
                    for k, v in zip(keys, vectors, strict=True)
                ],
            )

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: TextKind = "document",
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        if kind == "query" and not self.cache_queries:
            return self.encoder.encode(
                texts, kind=kind, batch_size=batch_size, show_progress=show_progress
            )
        with self._lock:  # one connection, shared by a threaded server's requests
            return self._encode_cached(texts, kind, batch_size, show_progress)

    def _encode_cached(
        self, texts: Sequence[str], kind: TextKind, batch_size: int, show_progress: bool
    ) -> np.ndarray:
        keys = [self._key(t, kind) for t in texts]
        distinct = list(dict.fromkeys(keys))
        found = self._lookup(distinct)
        if len(distinct) - len(found) < SHARED_FROM:
            return self._encode_missing(texts, keys, found, kind, batch_size, show_progress)
        # many texts to encode (a catalogue): the processes of one service, started together,
        # take turns, and the later ones find the first one's vectors instead of encoding the
        # same texts at the same time on the same cores
        with exclusive(self.path.with_name(self.path.name + ".lock")):
            found = self._lookup(distinct)
            return self._encode_missing(texts, keys, found, kind, batch_size, show_progress)

    def _encode_missing(
        self,
        texts: Sequence[str],
        keys: list[str],
        found: dict[str, np.ndarray],
        kind: TextKind,
        batch_size: int,
        show_progress: bool,
    ) -> np.ndarray:
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            first = {}
            for k, t in zip(keys, texts, strict=True):
                first.setdefault(k, t)
            # written a chunk at a time: an interrupted run keeps what it finished, and the
            # next one encodes only the rest
            bar = tqdm(total=len(missing), disable=not show_progress, desc="encoding", unit="text")
            with bar:
                for start in range(0, len(missing), _WRITE_CHUNK):
                    chunk = missing[start : start + _WRITE_CHUNK]
                    vecs = self.encoder.encode(
                        [first[k] for k in chunk], kind=kind, batch_size=batch_size
                    )
                    self._write(chunk, vecs)
                    found.update(zip(chunk, vecs, strict=True))
                    bar.update(len(chunk))
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        return self.encoder.count_tokens(text)

    def close(self) -> None:
        self._db.close()
