"""The lexical index behind BM25 (:mod:`promptrec.scorers.lexical`): words, and the postings
that say which rows (catalogue positions) hold each word how often.

Words are lower-cased runs of letters and digits; Chinese text, which has no spaces, is read as
its characters and character pairs (so ``"洗发水"`` matches ``"去屑洗发水"``).

An index has two parts. The **base** is built at once from a catalogue's texts: a vocabulary
and one compressed sparse array of postings (word by word, rows ascending), a few bytes a
posting; above ``CACHE_FROM`` texts it is saved on disk by the hash of the texts and
memory-mapped by the next process over the same catalogue, so the workers of a service share
one copy and a restart reads it instead of tokenising a million titles again. The **tail**
holds the rows appended one change at a time since (``PUT /items``), at the cost of those
rows. Scores are Lucene's BM25, with the statistics (item count, document frequencies, mean
length) of the rows a catalogue state keeps live, so several states share one index.
"""

from __future__ import annotations

import array
import hashlib
import logging
import math
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\W_]+", re.UNICODE)
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

CACHE_FROM = 100_000  # texts: a smaller base is built in about a second, never saved
_FORMAT = "postings-1"
_FILES = ("indptr", "rows", "counts", "lengths")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; a run of Chinese characters as its characters and their pairs."""
    out: list[str] = []
    for run in _WORD.findall(text.lower()):
        if _HAN.match(run):
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif len(run) > 1 or run.isdigit():
            out.append(run)
    return out


class LexicalIndex:
    """BM25 postings over texts, appended row by row (rows are catalogue positions).

    The first :meth:`add` to an empty index builds the compact base from all its texts; later
    ones append to the tail. :meth:`cached` builds (or loads) the base of a large catalogue
    once for every process.

    Args:
        k1 / b: BM25's term-frequency saturation and length normalisation.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        # the base: word -> id; the rows and counts of word w are [indptr[w]:indptr[w + 1]]
        self._vocabulary: dict[str, int] = {}
        self._indptr = np.zeros(1, dtype=np.int64)
        self._rows = np.zeros(0, dtype=np.int32)
        self._counts = np.zeros(0, dtype=np.float32)
        # the tail: word -> rows appended since the base, and its count in each
        self._tail_rows: dict[str, list[int]] = {}
        self._tail_counts: dict[str, list[int]] = {}
        # every row's length in words (base and tail), grown by doubling; _n rows are in
        self._lengths = np.zeros(0, dtype=np.float32)
        self._n = 0
        self._lock = threading.Lock()  # one writer; readers take a consistent prefix

    def __len__(self) -> int:
        return self._n

    def __getstate__(self) -> dict:  # a copy (pickled to a Ray worker) gets a lock of its own
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ building
    def add(self, texts: Sequence[str]) -> None:
        """Append rows ``len(self)``, ``len(self) + 1``... for ``texts``."""
        with self._lock:
            if self._n == 0:
                self._build(texts)
                return
            for text in texts:
                words = tokenize(text)
                row = self._n
                counts: dict[str, int] = {}
                for word in words:
                    counts[word] = counts.get(word, 0) + 1
                for word, count in counts.items():
                    self._tail_rows.setdefault(word, []).append(row)
                    self._tail_counts.setdefault(word, []).append(count)
                self._append_length(len(words))

    def _append_length(self, length: int) -> None:
        if self._n == len(self._lengths):
            grown = np.zeros(max(16, 2 * self._n), dtype=np.float32)
            grown[: self._n] = self._lengths[: self._n]
            self._lengths = grown  # readers holding the old array keep a valid prefix
        self._lengths[self._n] = length
        self._n += 1

    def _build(self, texts: Sequence[str]) -> None:
        n = len(texts)
        if n >= 2**31:
            raise ValueError(f"a lexical index holds at most {2**31 - 1} rows, got {n}")
        vocabulary: dict[str, int] = {}
        ids = array.array("q")
        lengths = np.zeros(n, dtype=np.int64)
        for row, text in enumerate(texts):
            words = tokenize(text)
            lengths[row] = len(words)
            ids.extend([vocabulary.setdefault(w, len(vocabulary)) for w in words])
        # one key per (word, row), sorted: word by word, rows ascending within each word
        keys = np.frombuffer(ids, dtype=np.int64) * max(n, 1) + np.repeat(np.arange(n), lengths)
        keys, counts = np.unique(keys, return_counts=True)
        words, rows = np.divmod(keys, max(n, 1))
        indptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        np.cumsum(np.bincount(words, minlength=len(vocabulary)), out=indptr[1:])
        self._vocabulary = vocabulary
        self._indptr = indptr
        self._rows = rows.astype(np.int32)
        self._counts = counts.astype(np.float32)
        self._lengths = lengths.astype(np.float32)
        self._n = n

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> None:
        """Write the base (an index with no tail) to ``folder``."""
        if self._tail_rows or len(self._rows) != self._indptr[-1]:
            raise ValueError("only an index built at once (no rows appended since) is saved")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocabulary.txt").write_text("\n".join(self._vocabulary), encoding="utf-8")
        arrays = (self._indptr, self._rows, self._counts, self._lengths[: self._n])
        for name, values in zip(_FILES, arrays, strict=True):
            np.save(folder / f"{name}.npy", values)
        (folder / "FORMAT").write_text(_FORMAT)

    @classmethod
    def load(cls, folder: str | Path, *, k1: float = 1.5, b: float = 0.75) -> LexicalIndex:
        """The base saved in ``folder``, its postings memory-mapped read-only (checked: a
        damaged copy raises ``ValueError``)."""
        folder = Path(folder)
        if (folder / "FORMAT").read_text() != _FORMAT:
            raise ValueError(f"{folder}: not a lexical index of format {_FORMAT}")
        text = (folder / "vocabulary.txt").read_text(encoding="utf-8")
        words = text.split("\n") if text else []
        indptr, rows, counts, lengths = (
            np.load(folder / f"{name}.npy", mmap_mode="r") for name in _FILES
        )
        consistent = (
            len(indptr) == len(words) + 1
            and indptr[0] == 0
            and indptr[-1] == len(rows) == len(counts)
            and (not len(rows) or int(rows.max()) < len(lengths))
        )
        if not consistent:
            raise ValueError(f"{folder}: the lexical index's files do not agree")
        index = cls(k1, b)
        index._vocabulary = dict(zip(words, range(len(words)), strict=True))
        index._indptr, index._rows, index._counts = indptr, rows, counts
        index._lengths = np.array(lengths, dtype=np.float32)  # a copy: the tail appends to it
        index._n = len(lengths)
        return index

    @classmethod
    def cached(
        cls,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        cache_dir: str | Path | None = None,
    ) -> LexicalIndex:
        """An index of ``texts``; from ``CACHE_FROM`` texts on, its base is kept on disk by
        the hash of the texts (``<cache>/lexical/``) and memory-mapped: the first process
        builds it (the others of a service wait for it) and every later one loads it."""
        if len(texts) < CACHE_FROM:
            index = cls(k1, b)
            index.add(texts)
            return index
        from promptrec.encoders.cache import default_cache_dir, exclusive

        digest = hashlib.sha1(_FORMAT.encode())
        for text in texts:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
        root = Path(cache_dir) if cache_dir else default_cache_dir() / "lexical"
        root.mkdir(parents=True, exist_ok=True)
        folder = root / digest.hexdigest()
        with exclusive(root / f".{folder.name}.lock"):
            if folder.exists():
                try:
                    return cls.load(folder, k1=k1, b=b)
                except (OSError, ValueError) as exc:  # damaged: built again below
                    log.warning("lexical index %s unreadable (%s): building it again", folder, exc)
                    shutil.rmtree(folder, ignore_errors=True)
            index = cls(k1, b)
            index.add(texts)
            partial = root / f".{folder.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            index.save(partial)
            partial.rename(folder)
            return cls.load(folder, k1=k1, b=b)

    # ------------------------------------------------------------------ scoring
    def statistics(self, live: np.ndarray) -> tuple[int, float]:
        """The live rows' count and mean length (what BM25 normalises by)."""
        n = int(live.sum())
        lengths = self._lengths[: len(live)]
        return n, (float(lengths[live].mean()) if n else 0.0) or 1.0

    def _postings(self, word: str, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows below ``n_rows`` that hold ``word``, and its count in each."""
        parts_rows, parts_counts = [], []
        at = self._vocabulary.get(word)
        if at is not None:
            start, stop = int(self._indptr[at]), int(self._indptr[at + 1])
            rows = self._rows[start:stop]
            end = int(np.searchsorted(rows, n_rows))  # ascending: a prefix state's rows
            parts_rows.append(rows[:end])
            parts_counts.append(self._counts[start : start + end])
        tail_counts = self._tail_counts.get(word)
        if tail_counts:
            # counts are appended after rows: the rows of the counts read are all there
            counts = np.asarray(tail_counts, dtype=np.float32)
            rows = np.asarray(self._tail_rows[word][: len(counts)], dtype=np.int32)
            inside = rows < n_rows
            parts_rows.append(rows[inside])
            parts_counts.append(counts[inside])
        if not parts_rows:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        if len(parts_rows) == 1:
            return parts_rows[0], parts_counts[0]
        return np.concatenate(parts_rows), np.concatenate(parts_counts)

    def scores(
        self, query: str, live: np.ndarray, statistics: tuple[int, float] | None = None
    ) -> np.ndarray:
        """``[len(live)]`` float32: the query's BM25 score of each row that ``live`` keeps
        (0 elsewhere), with the statistics of those rows alone (:meth:`statistics`, which a
        caller scoring many queries over one catalogue state computes once)."""
        out = np.zeros(len(live), dtype=np.float32)
        words = tokenize(query or "")
        if not words or not live.any():
            return out
        n, mean_length = statistics or self.statistics(live)
        lengths = self._lengths  # the array of this moment: it holds every row read below
        for word in words:
            rows, counts = self._postings(word, len(live))
            kept = live[rows]
            rows, counts = rows[kept], counts[kept]
            if not len(rows):
                continue
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = self.k1 * (1 - self.b + self.b * lengths[rows] / mean_length)
            out[rows] += (idf * counts / (counts + norm)).astype(np.float32)
        return out
