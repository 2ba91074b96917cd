"""Columnar copies of the store's two large tables beside an SQLite file: what a read of the
whole store (a service's start, a training run) takes from disk instead of every row.

A million-item shop's 5 million events take 25-30 s to fetch from SQLite and make a frame of,
its million catalogue rows 10-11 s to parse (JSON); the copies (Arrow files next to the store,
``STORE-log.arrow`` and ``STORE-items.arrow``) read back in 2-4 s in all. A log or catalogue
smaller than :data:`MIN_ROWS` rows keeps no copy (it reads fast from the store).

A copy is trusted only while it is exactly what the store holds:

* **The log** (:class:`LogCopy`): events are never updated and their ids never reused
  (``AUTOINCREMENT``), so a copy of the rows up to id ``M``, ``C`` rows, is still exact if and
  only if the store holds ``C`` rows with an id up to ``M``. Any deletion since (a forgotten
  user, a removed item with its events) lowers that count, and the whole log is read from the
  store again; rows added since are read from the store and appended. Each deletion through
  promptrec also removes the file once it commits (:func:`discard_log`), so a forgotten user's
  events do not stay on disk in it; a copy written by a read that raced such a deletion is
  checked again once written, and removed.
* **The catalogue** (:class:`CatalogueCopy`): read only while the items table has the same
  number of rows, last row id, newest change time and sum of change times as when copied (every
  write of an item sets its change time); any change reads the catalogue from the store again.
  A catalogue whose frame does not read back from Arrow exactly (a field holding objects, or
  lists of mixed types) keeps no copy.

Both carry the store's own random id (``store_id`` in its meta table): a copy beside another
store file of the same name is never read. PostgreSQL stores keep no copies.

The processes that read one store at once (the workers of a service starting together) take
turns on a lock file beside each copy (``STORE-log.lock``, ``STORE-items.lock``): the first
reads the store and writes the copy, the others then read the copy.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from promptrec.store.database import Database, SQLiteDatabase

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no turns
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("promptrec")

#: a log or a catalogue with fewer rows is read from the store alone, and keeps no copy
MIN_ROWS = 200_000
_FORMAT = 1
_KEY = b"promptrec.copy"


def copy_path(db: Database, table: str) -> Path | None:
    """Where the copy of ``table`` (``log`` or ``items``) lies: beside an SQLite file; None for
    an in-memory SQLite database or a PostgreSQL store (they keep no copies)."""
    if not isinstance(db, SQLiteDatabase) or str(db.path) in ("", ":memory:"):
        return None
    return db.path.with_name(f"{db.path.name}-{table}.arrow")


def discard_log(db: Database) -> None:
    """Remove the log's copy once the open transaction commits (with every deletion of
    events)."""
    path = copy_path(db, "log")
    if path is not None:
        db.after_commit(lambda: _remove(path))


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # the check refuses it from now on, whatever it holds
        logger.warning("could not remove the store's copy %s: %s", path, exc)


def _open(path: Path, store_id: str) -> tuple[pa.Table, dict[str, Any]] | None:
    """A copy's table and what it records of the store, or None when there is none, it is
    unreadable (then removed) or it copies another store."""
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        meta = json.loads((reader.schema.metadata or {}).get(_KEY, b"{}"))
        if meta.get("format") != _FORMAT or meta.get("store_id") != store_id:
            _remove(path)
            return None
        return reader.read_all(), meta
    except FileNotFoundError:
        return None
    except (OSError, ValueError, pa.ArrowException) as exc:
        logger.warning("the store's copy %s is unreadable (%s): not read", path, exc)
        _remove(path)
        return None


def _write(path: Path, table: pa.Table, meta: dict[str, Any]) -> bool:
    """Write a copy in one piece (a reader sees the old file or the new one); False if it
    could not be written."""
    meta = {"format": _FORMAT, **meta}
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _KEY: json.dumps(meta).encode()}
    )
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    except OSError as exc:
        logger.warning("could not write the store's copy %s: %s", path, exc)
        return False
    try:
        with os.fdopen(fd, "wb") as handle, pa.ipc.new_file(handle, table.schema) as out:
            out.write_table(table)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write the store's copy %s: %s", path, exc)
        _remove(Path(tmp))
        return False
    return True


LogFramer = Callable[[Sequence[tuple]], tuple[pd.DataFrame, int]]


@dataclass
class _Copy:
    """A copy of one table of one SQLite store.

    Args:
        path: the copy's file.
        store_id: the store's random id.
        min_rows: a table with fewer rows keeps no copy.
    """

    path: Path
    store_id: str
    min_rows: int = MIN_ROWS

    @contextmanager
    def turn(self) -> Iterator[None]:
        """This process's turn to read the store for the copy (see the module docstring); no
        turns where fcntl is missing or the folder takes no new file."""
        try:
            handle = None if fcntl is None else self.path.with_suffix(".lock").open("a")
        except OSError:
            handle = None
        if handle is None:
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


class LogCopy(_Copy):
    """The behaviour log's copy of one SQLite store (see the module docstring)."""

    def read(self, db: Database, columns: str, frame_of: LogFramer) -> tuple[pd.DataFrame, int]:
        """:meth:`_read`, in this process's :meth:`turn`."""
        with self.turn():
            return self._read(db, columns, frame_of)

    def _read(self, db: Database, columns: str, frame_of: LogFramer) -> tuple[pd.DataFrame, int]:
        """The log's frame (rows in id order) and how many rows were skipped as unservable:
        the copy and the rows added since, or the whole log from the store. Writes the copy
        when the log has at least :attr:`min_rows` rows and the file does not hold them all.
        The store is read under its lock; the frame is made outside it.

        Args:
            db: the store's database.
            columns: the columns read (SQL), in the frame's order.
            frame_of: makes the frame of stored rows (and counts those skipped).
        """
        with db.lock:
            last = db.scalar("SELECT MAX(id) FROM events")
            if last is None:
                return frame_of([])
            last = int(last)
            copied = self._load(db)
            first = copied["last_id"] if copied is not None else 0
            stored = db.read(
                f"SELECT {columns} FROM events WHERE id > ? AND id <= ? ORDER BY id",
                (first, last),
            )
        if copied is not None and not stored:  # nothing added since
            return copied["table"].to_pandas(), copied["skipped"]
        # the rows counted are those framed: a deletion meanwhile fails the check
        rows, (frame, skipped) = len(stored), frame_of(stored)
        del stored
        if copied is not None:
            rows, skipped = copied["rows"] + rows, copied["skipped"] + skipped
            earlier = copied["table"].to_pandas()
            frame = pd.concat([earlier, frame], ignore_index=True) if len(frame) else earlier
        if rows >= self.min_rows:
            self._save(db, frame, {"last_id": last, "rows": rows, "skipped": skipped})
        return frame, skipped

    def _load(self, db: Database) -> dict[str, Any] | None:
        """The copy's table and record while it is still exactly the log's past, else None
        (and the file goes)."""
        opened = _open(self.path, self.store_id)
        if opened is None:
            return None
        table, meta = opened
        if self._count(db, meta["last_id"]) != meta["rows"]:
            _remove(self.path)  # a deletion since: never read again
            return None
        return {"table": table, **meta}

    def _save(self, db: Database, frame: pd.DataFrame, meta: dict[str, int]) -> None:
        """Write the copy, then check it again: a deletion committed meanwhile removes it."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if not _write(self.path, table, {"store_id": self.store_id, **meta}):
            return
        if self._count(db, meta["last_id"]) != meta["rows"]:
            _remove(self.path)

    @staticmethod
    def _count(db: Database, last_id: int) -> int:
        return int(db.scalar("SELECT COUNT(*) FROM events WHERE id <= ?", (int(last_id),)))


ItemsFramer = Callable[[Sequence[tuple[str, str]]], tuple[pd.DataFrame, list[str]]]


class CatalogueCopy(_Copy):
    """The catalogue's copy of one SQLite store: its items frame, as
    :func:`~promptrec.store.items.items_frame` makes it (see the module docstring)."""

    def read(
        self, db: Database, rows_of: Callable[[], list[tuple[str, str]]], frame_of: ItemsFramer
    ) -> tuple[pd.DataFrame, list[str]]:
        """:meth:`_read`, in this process's :meth:`turn`."""
        with self.turn():
            return self._read(db, rows_of, frame_of)

    def _read(
        self, db: Database, rows_of: Callable[[], list[tuple[str, str]]], frame_of: ItemsFramer
    ) -> tuple[pd.DataFrame, list[str]]:
        """The catalogue's frame and the ids of the rows skipped as unservable: from the copy
        while the items table is unchanged, else from ``rows_of()`` made a frame by
        ``frame_of`` (and copied, when the catalogue has at least :attr:`min_rows` rows and
        its frame reads back exactly).

        Args:
            db: the store's database (read under its lock; the frame is made outside it).
            rows_of: reads the stored ``(item_id, fields JSON)`` rows.
            frame_of: makes their frame (and names the rows skipped).
        """
        with db.lock:
            state = self._state(db)
            opened = _open(self.path, self.store_id)
            if opened is not None and opened[1]["state"] == state:
                table, meta = opened
                rows = None
            else:
                if opened is not None:
                    _remove(self.path)
                rows = rows_of()
        if rows is None:
            return _items_of(table), list(meta["skipped"])
        frame, skipped = frame_of(rows)
        if len(rows) >= self.min_rows:
            self._save(frame, skipped, state)
        return frame, skipped

    def _save(self, frame: pd.DataFrame, skipped: list[str], state: list) -> None:
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            exact = _items_of(table).equals(frame)
        except (pa.ArrowException, ValueError, TypeError):  # a field Arrow cannot hold
            exact = False
        if not exact:
            logger.info("%s: the catalogue's fields do not fit a columnar copy", self.path)
            return
        _write(self.path, table, {"store_id": self.store_id, "state": state, "skipped": skipped})

    @staticmethod
    def _state(db: Database) -> list:
        """What any write of an item changes: rows, the last row id, the newest change time
        and the sum of change times."""
        row = db.read(
            f"SELECT COUNT(*), MAX({db.item_order}), MAX(updated_at), TOTAL(updated_at) FROM items"
        )[0]
        return [None if v is None else (float(v) if isinstance(v, float) else int(v)) for v in row]


def _items_of(table: pa.Table) -> pd.DataFrame:
    """The items frame of a copy: list fields (category paths, tags) back as lists, equal
    strings in them one object (as :func:`~promptrec.store.items.items_frame` keeps them)."""
    frame = table.to_pandas()
    names: dict[str, str] = {}
    for field in table.schema:
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            frame[field.name] = pd.Series(
                [
                    None
                    if v is None
                    else [names.setdefault(x, x) if isinstance(x, str) else x for x in v.tolist()]
                    for v in frame[field.name].tolist()
                ],
                dtype=object,
            )
    return frame
