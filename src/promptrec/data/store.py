"""The embedded database: one SQLite file holding the catalogue, the behaviour log, a record of
ingests and embedding metadata.

Writes are all-or-nothing: :meth:`Store.ingest` validates its whole input first, then writes it
in one ``BEGIN IMMEDIATE`` transaction, so a failed ingest leaves the store as it was. The
journal is WAL with ``synchronous=FULL``: an acknowledged write survives a power cut.

Events are keyed by a hash of their content plus their occurrence number within the batch
(see :func:`event_keys`), so re-ingesting the same file adds nothing while genuine repeats
inside one file (the same user viewing the same item twice at the same second) are kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.dataset import Dataset
from promptrec.data.readers import catalog_from_frame, events_from_frame, file_positions
from promptrec.errors import DataError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items(
    item_id TEXT PRIMARY KEY,
    fields TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_key TEXT UNIQUE NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id) ON DELETE CASCADE,
    timestamp REAL NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    query TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id);
CREATE INDEX IF NOT EXISTS events_item ON events(item_id);
CREATE TABLE IF NOT EXISTS ingests(file_hash TEXT, path TEXT, kind TEXT, rows INTEGER, at REAL);
CREATE TABLE IF NOT EXISTS embeddings(
    model TEXT NOT NULL,
    item_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    PRIMARY KEY(model, item_id)
);
"""

_EVENT_COLUMNS = "user_id, item_id, timestamp, event, value, query"


@dataclass(frozen=True)
class IngestReport:
    """What one :meth:`Store.ingest` changed."""

    items_added: int = 0
    items_updated: int = 0
    events_added: int = 0
    events_skipped_duplicate: int = 0


def event_keys(events: pd.DataFrame) -> list[str]:
    """One key per normalised event: sha1 of its six fields plus its occurrence number ``k``
    among identical events of the same batch (0 for the first, 1 for a repeat...)."""
    stamps = events["timestamp"].map(float.__repr__)
    values = events["value"].map(lambda v: "" if v != v else repr(float(v)))
    queries = events["query"].map(lambda q: q if isinstance(q, str) else "")
    sep = "\x1f"
    base = (
        events["user_id"].astype(str)
        + sep
        + events["item_id"].astype(str)
        + sep
        + stamps
        + sep
        + events["event"].astype(str)
        + sep
        + values
        + sep
        + queries
    )
    occurrence = base.groupby(base, sort=False).cumcount().astype(str)
    full = (base + sep + occurrence).tolist()
    return [hashlib.sha1(text.encode("utf-8")).hexdigest() for text in full]


def _jsonable(value: Any) -> Any:
    """A field value as plain JSON: NaN/NA become null, numpy scalars and arrays Python's."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _fields_json(fields: Mapping[str, Any]) -> str:
    return json.dumps({str(k): _jsonable(v) for k, v in fields.items()}, ensure_ascii=False)


def _column(values: list[Any]) -> Any:
    """A column rebuilt from JSON values: whole numbers with gaps stay integers (``Int64``)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    return values


def _items_frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    ids = [r[0] for r in rows]
    records = [json.loads(r[1]) for r in rows]
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    data: dict[str, Any] = {"item_id": pd.Series(ids, dtype="str")}
    for name in names:
        if name != "item_id":
            data[name] = _column([r.get(name) for r in records])
    return pd.DataFrame(data)


def _source_hash(source: str | Path | None) -> str | None:
    """sha256 of a source file, or of a folder's files (names and contents); None otherwise."""
    if source is None:
        return None
    path = Path(source)
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Store:
    """A catalogue and behaviour log in one SQLite file.

    Args:
        path: the database file (created with its folder when missing).

    Raises:
        DataError: the file was written by a newer promptrec (a newer schema version).

    Example:
        >>> with Store("data.db") as store:  # doctest: +SKIP
        ...     store.ingest(load_dataset("movielens-100k"), source="movielens-100k")
        ...     data = store.dataset()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            found = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if int(found[0]) > SCHEMA_VERSION:
            self._conn.close()
            raise DataError(
                f"store schema version {found[0]} is newer than this promptrec supports "
                f"({SCHEMA_VERSION}); upgrade promptrec",
                file=str(self.path),
            )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()[0]

    # ------------------------------------------------------------------ writes

    def ingest(
        self,
        data: Dataset | tuple[pd.DataFrame | None, pd.DataFrame | None] | str | Path,
        *,
        source: str | Path | None = None,
    ) -> IngestReport:
        """Add a catalogue and a log: items are upserted, events added unless already present.

        Args:
            data: a :class:`Dataset`; an ``(items, events)`` pair of frames (either may be
                None); or a path, loaded with :func:`~promptrec.data.loaders.load_dataset`.
            source: where the data came from, recorded in the ``ingests`` table (its file hash
                too); default: ``data`` when it is a path.

        Returns:
            Counts of items added/updated and events added/skipped as already stored.

        Raises:
            DataError: invalid items or events, or events whose item is neither in the store
                nor in this batch. Nothing is written then.
        """
        kind = "dataset"
        if isinstance(data, str | Path):
            from promptrec.data.loaders import load_dataset

            source = data if source is None else source
            data = load_dataset(data)
        if isinstance(data, Dataset):
            items, events = data.items, data.events
        else:
            items, events = data
            kind = "frames"
        src = None if source is None else str(source)

        # validate and serialise everything before the transaction starts
        item_rows: list[tuple[str, str, float]] = []
        batch_ids = pd.Index([], dtype="str")
        if items is not None and len(items):
            items = catalog_from_frame(items, source=src, empty_text="ignore")
            batch_ids = pd.Index(items["item_id"])
            now = time.time()
            fields = items.drop(columns="item_id").to_dict("records")
            item_rows = [
                (iid, _fields_json(f), now)
                for iid, f in zip(items["item_id"].tolist(), fields, strict=True)
            ]
        event_rows: list[tuple] = []
        if events is not None and len(events):
            events = events_from_frame(events, source=src)
            self._check_known_items(events, batch_ids, src)
            event_rows = self._event_rows(events)
        file_hash = _source_hash(source)

        with self._write() as conn:
            before = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            conn.executemany(
                "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET fields=excluded.fields, "
                "updated_at=excluded.updated_at",
                item_rows,
            )
            added_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] - before
            added_events = self._insert_events(conn, event_rows)
            conn.execute(
                "INSERT INTO ingests(file_hash, path, kind, rows, at) VALUES (?, ?, ?, ?, ?)",
                (file_hash, src, kind, len(item_rows) + len(event_rows), time.time()),
            )
        return IngestReport(
            items_added=added_items,
            items_updated=len(item_rows) - added_items,
            events_added=added_events,
            events_skipped_duplicate=len(event_rows) - added_events,
        )

    def add_events(self, events: pd.DataFrame) -> int:
        """Add events (raw or normalised columns; see :func:`~promptrec.data.readers.read_events`).

        Returns:
            How many were new (events already stored, by key, are skipped).

        Raises:
            DataError: invalid events or an item not in the store; nothing is written then.
        """
        src = events.attrs.get("source")
        events = events_from_frame(events)
        self._check_known_items(events, pd.Index([], dtype="str"), src)
        rows = self._event_rows(events)
        with self._write() as conn:
            return self._insert_events(conn, rows)

    def upsert_item(self, item_id: str, fields: Mapping[str, Any]) -> bool:
        """Add an item or replace its fields. Returns True when it was new."""
        item_id = str(item_id).strip()
        if not item_id:
            raise DataError("empty item_id", column="item_id", expected="a non-empty id")
        fields = {k: v for k, v in fields.items() if k != "item_id"}
        with self._write() as conn:
            existed = conn.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone()
            conn.execute(
                "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET fields=excluded.fields, "
                "updated_at=excluded.updated_at",
                (item_id, _fields_json(fields), time.time()),
            )
        return existed is None

    def delete_item(self, item_id: str) -> bool:
        """Remove an item, its events and its embedding records. Returns True if it existed."""
        with self._write() as conn:
            conn.execute("DELETE FROM embeddings WHERE item_id = ?", (str(item_id),))
            removed = conn.execute("DELETE FROM items WHERE item_id = ?", (str(item_id),))
            return removed.rowcount > 0

    def delete_user(self, user_id: str) -> int:
        """Remove every event of a user. Returns how many were removed."""
        with self._write() as conn:
            return conn.execute("DELETE FROM events WHERE user_id = ?", (str(user_id),)).rowcount

    def record_embeddings(
        self, model: str, item_ids: Sequence[str], text_hashes: Sequence[str], dim: int
    ) -> None:
        """Record which text each item's stored embedding was computed from, for ``model``."""
        if len(item_ids) != len(text_hashes):
            raise ValueError(
                f"{len(item_ids)} item ids but {len(text_hashes)} text hashes: give one per item"
            )
        rows = [
            (model, str(i), str(h), int(dim)) for i, h in zip(item_ids, text_hashes, strict=True)
        ]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO embeddings(model, item_id, text_hash, dim) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(model, item_id) DO UPDATE SET text_hash=excluded.text_hash, "
                "dim=excluded.dim",
                rows,
            )

    # ------------------------------------------------------------------ reads

    def embedding_hashes(self, model: str) -> dict[str, str]:
        """``item_id -> text_hash`` of the embeddings recorded for ``model``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT item_id, text_hash FROM embeddings WHERE model = ?", (model,)
            ).fetchall()
        return dict(rows)

    def dataset(self, name: str | None = None) -> Dataset:
        """Everything in the store as a :class:`Dataset`: items and events in insertion order."""
        with self._lock:
            items = self._conn.execute(
                "SELECT item_id, fields FROM items ORDER BY rowid"
            ).fetchall()
            events = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id"
            ).fetchall()
        frame = pd.DataFrame(events, columns=_EVENT_COLUMNS.split(", "))
        frame["value"] = frame["value"].astype("float64")
        return Dataset(_items_frame(items), frame, name=name or self.path.stem)

    def counts(self) -> dict[str, int]:
        """Numbers of items, events, distinct users, ingests and embedding records."""
        return {
            "items": self._scalar("SELECT COUNT(*) FROM items"),
            "events": self._scalar("SELECT COUNT(*) FROM events"),
            "users": self._scalar("SELECT COUNT(DISTINCT user_id) FROM events"),
            "ingests": self._scalar("SELECT COUNT(*) FROM ingests"),
            "embeddings": self._scalar("SELECT COUNT(*) FROM embeddings"),
        }

    # ------------------------------------------------------------------ helpers

    def _check_known_items(
        self, events: pd.DataFrame, batch_ids: pd.Index, source: str | None
    ) -> None:
        with self._lock:
            stored = [r[0] for r in self._conn.execute("SELECT item_id FROM items")]
        known = batch_ids.append(pd.Index(stored, dtype="str"))
        unknown = ~events["item_id"].isin(known).to_numpy()
        if unknown.any():
            pos, _ = file_positions(events)
            first = int(np.argmax(unknown))
            raise DataError(
                f"{int(unknown.sum())} events refer to items neither in the store nor in this "
                f"batch (first: item {events['item_id'].iloc[first]!r})",
                file=source,
                row=int(pos[first]),
                column="item_id",
                expected="items added before or with their events",
            )

    @staticmethod
    def _event_rows(events: pd.DataFrame) -> list[tuple]:
        values = events["value"].astype(object).where(events["value"].notna(), None)
        queries = events["query"].astype(object).where(events["query"].notna(), None)
        return list(
            zip(
                event_keys(events),
                events["user_id"].tolist(),
                events["item_id"].tolist(),
                events["timestamp"].tolist(),
                events["event"].tolist(),
                values.tolist(),
                queries.tolist(),
                strict=True,
            )
        )

    @staticmethod
    def _insert_events(conn: sqlite3.Connection, rows: list[tuple]) -> int:
        before = conn.total_changes
        conn.executemany(
            f"INSERT OR IGNORE INTO events(event_key, {_EVENT_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return conn.total_changes - before


__all__ = ["IngestReport", "Store", "event_keys"]
