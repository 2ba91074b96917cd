"""A text space kept on disk, row by row: a restart over a large catalogue reads its item texts,
vectors and prompt labels back instead of rendering and encoding every item again.

Each catalogue row is keyed by a 128-bit hash of its content (:func:`row_keys`), so a catalogue
that changed since it was saved reuses every unchanged row and computes only the new or
changed ones; the saved copy is then replaced. One saved copy is kept per encoder, item
template (its source text), column set and promptrec version (:class:`SpaceCache`), under
``PROMPTREC_CACHE_DIR/spaces``. A copy is written in a folder of its own and published by
replacing a one-line pointer file, so a reader sees a whole copy or none; processes that fit
the same catalogue at once (the workers of one service) take turns, and the later ones read
what the first wrote.

A space whose catalogue is exactly the saved copy's (the same rows in the same order: any
restart with no change in between, and every process once the first has written the copy)
serves the saved vectors themselves, mapped copy-on-write (:func:`_mapped`), not a copy of them:
the workers of a service share one copy of the largest array they hold, and a page of it counts
in a worker's resident memory only once the worker reads it. The file has room after the rows
(a hole: no disk), where the items a service adds later are written, in that process's own
memory. What the space serves is known by the copy's identity and the rows' keys
(:attr:`TextSpace.content_key <promptrec.scorers.text.TextSpace.content_key>`), which names its
saved index, so a start reads no vector it does not serve.

Measured at a million product rows (``benchmarks/scale.py``): rendering and encoding with the
``hashing`` encoder took about two minutes; reading the saved copy back a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.rows import AppendOnlyRows
from promptrec.encoders.cache import exclusive
from promptrec.prompts.users import NO_GENRES

FORMAT = 1  # bump when what is saved, or how a row's text is made, changes
_HASH_KEYS = ("promptrec-rows-a", "promptrec-rows-b")  # two 64-bit hashes: a 128-bit key
_BLOCK = 65_536  # rows copied from the saved vectors at a time


def row_keys(items: pd.DataFrame) -> np.ndarray:
    """``[n_rows, 2]`` uint64: a hash of each row's values (columns in name order; lists and
    other objects by their text), the same in every process."""
    frame = pd.DataFrame(
        {name: _plain_column(items[name]) for name in sorted(items.columns, key=str)},
        index=pd.RangeIndex(len(items)),
    )
    if not len(frame.columns):
        return np.zeros((len(items), 2), dtype=np.uint64)
    return np.stack(
        [
            pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy(np.uint64)
            for key in _HASH_KEYS
        ],
        axis=1,
    )


def _plain_column(column: pd.Series) -> pd.Series:
    if column.dtype != object:
        return column.reset_index(drop=True)
    return pd.Series([_plain(v) for v in column.tolist()], dtype=object)


def _plain(value: Any) -> str:
    """An object cell as text that tells its type apart (a list from a string, None from
    "None")."""
    if value is None:
        return "\x00none"
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, float) and value != value:
        return "\x00nan"
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        value = value.tolist()  # numpy arrays from parquet
    if isinstance(value, (list, tuple)):
        return "l" + "\x1e".join(_plain(v) for v in value)
    return f"o{type(value).__name__}:{value!r}"


@dataclass
class SavedSpace:
    """A saved copy: per row, its key, text, vector and prompt labels."""

    keys: np.ndarray  # [m, 2] uint64
    texts: np.ndarray  # [m] object (str)
    room: np.ndarray  # [m + spare, dim] float32, memory-mapped: the vectors and room after them
    labels: np.ndarray  # [m] object (str)
    categories: np.ndarray  # [m] object (str | None)
    brands: np.ndarray  # [m] object (str | None)
    genres: np.ndarray  # [m] object (list[str])

    @property
    def vectors(self) -> np.ndarray:
        """``[m, dim]``: each row's vector."""
        return self.room[: len(self.keys)]

    def shared_rows(self, keys: np.ndarray) -> np.ndarray | None:
        """The saved vectors and the room after them, as the buffer of a catalogue whose rows
        are exactly this copy's, in order (else None; see :func:`_mapped`)."""
        if len(keys) != len(self.keys) or not np.array_equal(keys, self.keys):
            return None
        return self.room

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """For each of ``keys``' rows, its row in this copy, or -1."""
        found = pd.Index(self.keys[:, 0]).get_indexer(keys[:, 0])
        same = found >= 0
        same[same] = self.keys[found[same], 1] == keys[same, 1]  # the other 64 bits agree
        return np.where(same, found, -1)

    def gather_vectors(self, positions: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = vectors[positions[i]]`` for the rows where ``positions[i] >= 0``."""
        rows = np.flatnonzero(positions >= 0)
        for start in range(0, len(rows), _BLOCK):  # the map is read a block at a time
            block = rows[start : start + _BLOCK]
            out[block] = self.vectors[positions[block]]


class SpaceCache:
    """Where the saved copy of one kind of text space lives (see the module docstring).

    Args:
        encoder: the encoder's name (its vectors are what is saved).
        template: the item template's name or path; its source text is part of the identity.
        columns: the catalogue's columns and their dtypes.
        cache_dir: the cache folder (default: ``PROMPTREC_CACHE_DIR`` or
            ``~/.cache/promptrec``).
    """

    def __init__(
        self,
        encoder: str,
        template: str,
        columns: pd.Series,
        cache_dir: str | Path | None = None,
    ) -> None:
        from promptrec.encoders.cache import default_cache_dir
        from promptrec.version import __version__

        identity = {
            "format": FORMAT,
            "promptrec": __version__,
            "encoder": encoder,
            "template": template,
            "template_source": _template_source(template),
            "columns": [[str(k), str(v)] for k, v in columns.items()],
        }
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        root = Path(cache_dir) if cache_dir else default_cache_dir() / "spaces"
        self.folder = root / digest
        self.identity = identity

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One process at a time reads, computes and writes this copy."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with exclusive(self.folder / ".lock"):
            yield

    def read(self) -> SavedSpace | None:
        """The saved copy, or None (never saved, or unreadable: it is then computed again)."""
        import pyarrow.parquet as pq

        pointer = self.folder / "current"
        if not pointer.exists():
            return None
        folder = self.folder / pointer.read_text().strip()
        try:
            keys = np.load(folder / "keys.npy")
            room = _mapped(folder / "vectors.npy")
            table = pq.read_table(folder / "columns.parquet")
            if not len(keys) == table.num_rows <= len(room):
                return None
            return SavedSpace(
                keys=keys,
                texts=table.column("text").to_numpy(zero_copy_only=False),
                room=room,
                labels=table.column("label").to_numpy(zero_copy_only=False),
                categories=_shared_strings(table.column("category")),
                brands=_shared_strings(table.column("brand")),
                genres=np.fromiter(
                    (g or NO_GENRES for g in table.column("genres").to_pylist()),
                    dtype=object,
                    count=table.num_rows,
                ),
            )
        except (OSError, ValueError, KeyError):
            return None

    def write(
        self,
        keys: np.ndarray,
        texts: Any,
        vectors: np.ndarray,
        labels: Any,
        categories: Any,
        brands: Any,
        genres: Any,
    ) -> np.ndarray | None:
        """Save a copy (rows with the same key once) and make it the current one.

        Returns:
            the saved vectors and their room, mapped (:func:`_mapped`), when every row was
            saved as given (no key twice): the caller's buffer can be this map instead.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        _, first = np.unique(keys[:, 0], return_index=True)
        first.sort()
        everything = len(first) == len(keys)  # no row twice: saved as they are, no copy
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        folder = self.folder / name
        folder.mkdir(parents=True)
        np.save(folder / "keys.npy", keys if everything else keys[first])
        rows = vectors if everything else np.asarray(vectors)[first]
        _write_with_room(folder / "vectors.npy", rows, AppendOnlyRows.spare_for(len(rows)))
        table = pa.table(
            {
                "text": pa.array([texts[i] for i in first], pa.string()),
                "label": pa.array([labels[i] for i in first], pa.string()),
                "category": pa.array([categories[i] for i in first], pa.string()),
                "brand": pa.array([brands[i] for i in first], pa.string()),
                "genres": pa.array([list(genres[i]) for i in first], pa.list_(pa.string())),
            }
        )
        pq.write_table(table, folder / "columns.parquet")
        (folder / "space.json").write_text(json.dumps(self.identity, indent=2) + "\n")
        pointer = self.folder / f".current.{name}"
        pointer.write_text(name + "\n")
        os.replace(pointer, self.folder / "current")  # atomic: the new copy is published
        for old in self.folder.iterdir():  # earlier copies (an open reader keeps its files)
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return _mapped(folder / "vectors.npy") if everything else None


def _write_with_room(path: Path, rows: np.ndarray, room: int) -> None:
    """Save ``rows`` as a ``.npy`` file of ``len(rows) + room`` rows, the room a hole in the
    file (zeros that take no disk). Written, not mapped: a full disk is an OSError here."""
    rows = np.asarray(rows, dtype=np.float32)
    shape = (len(rows) + room, *rows.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(rows.dtype), "fortran_order": False}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {**header, "shape": shape})
        for start in range(0, len(rows), _BLOCK):
            f.write(np.ascontiguousarray(rows[start : start + _BLOCK]).data)
        f.truncate(f.tell() + room * rows.itemsize * int(np.prod(rows.shape[1:])))


def _mapped(path: Path) -> np.ndarray:
    """A saved copy's vectors (and the room after them) as a private copy-on-write map of its
    file: the processes that read one copy (a service's workers) share its pages, which count
    in a process's resident memory only once read, and rows a process appends in the room (a
    service's new items) are its own. A saved file is never changed (a new copy is a new
    folder), so the map stays valid after a newer copy replaces it; a saved file changed in
    place while mapped (not by promptrec: delete a cache, never edit it) stops the process
    that maps it."""
    return np.asarray(np.load(path, mmap_mode="c"))


def _shared_strings(column: Any) -> np.ndarray:
    """A string column with few distinct values (categories, brands) as an object array whose
    equal values are one Python string (a million rows, a few hundred objects)."""
    encoded = column.combine_chunks().dictionary_encode()
    values = np.append(encoded.dictionary.to_numpy(zero_copy_only=False), None)
    return values[encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()]


def _template_source(template: str) -> str:
    from promptrec.prompts.templates import TEMPLATE_DIR

    for path in (Path(template), TEMPLATE_DIR / f"{template}.j2"):
        if path.suffix and path.is_file():
            return path.read_text(encoding="utf-8")
    return ""
