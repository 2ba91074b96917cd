"""The store: the catalogue, the behaviour log, a record of ingests and embedding metadata, in
one SQLite file (embedded, the default) or in a PostgreSQL database (``Store("postgresql://...")``).

Both backends run the same SQL, written once in the words the two share; the few that differ
(placeholders, column types, how a write transaction takes its lock, time buckets) live in a
small backend class per database (:class:`_SQLite`, :class:`_Postgres`).

Writes are all-or-nothing: :meth:`Store.ingest` validates its whole input first, then writes it
in one transaction, so a failed ingest leaves the store as it was. Writers are serialised: SQLite
takes its write lock at ``BEGIN IMMEDIATE``; PostgreSQL takes a transaction-scoped advisory lock
named after the store's schema right after ``BEGIN``. The SQLite journal is WAL with
``synchronous=FULL``: an acknowledged write survives a power cut (PostgreSQL commits durably with
its default settings).

Events are keyed by a hash of their content plus their occurrence number within the batch
(see :func:`event_keys`), so re-ingesting the same file adds nothing while genuine repeats
inside one file (the same user viewing the same item twice at the same second) are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from promptrec.data.dataset import DEFAULT_EVENT, Dataset
from promptrec.data.limits import (
    MAX_QUERY_LENGTH,
    check_fields,
    check_id,
    number_problem,
    text_problem,
    timestamp_problem,
)
from promptrec.data.readers import catalog_from_frame, events_from_frame, file_positions
from promptrec.errors import ConfigError, DataError

log = logging.getLogger("promptrec")

# 2: searches, impressions, attributions, idempotency; 3: online counts, retention indexes
# (each added on open, the counts filled from the stored lists); 4: the catalogue's change log
SCHEMA_VERSION = 4
SERIES_SECONDS = 60.0  # the time resolution of the online counts per arm

# Written once for both databases: {serial} is an auto-numbered primary key, {float} a 64-bit
# float (PostgreSQL's REAL is 32 bits) and {item_order} the column that keeps the items'
# first-insertion order where the database has no rowid.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items(
    item_id TEXT PRIMARY KEY,
    fields TEXT NOT NULL,
    updated_at {float} NOT NULL{item_order}
);
CREATE TABLE IF NOT EXISTS events(
    id {serial},
    event_key TEXT UNIQUE NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id) ON DELETE CASCADE,
    timestamp {float} NOT NULL,
    event TEXT NOT NULL,
    value {float},
    query TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id);
CREATE INDEX IF NOT EXISTS events_item ON events(item_id);
CREATE TABLE IF NOT EXISTS ingests(
    file_hash TEXT,
    path TEXT,
    kind TEXT,
    rows INTEGER,
    at {float}
);
CREATE TABLE IF NOT EXISTS embeddings(
    model TEXT NOT NULL,
    item_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    PRIMARY KEY(model, item_id)
);
CREATE TABLE IF NOT EXISTS searches(
    id {serial},
    user_id TEXT NOT NULL,
    query TEXT NOT NULL,
    timestamp {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS searches_user ON searches(user_id);
CREATE TABLE IF NOT EXISTS impressions(
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    items TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions(user_id, at);
CREATE TABLE IF NOT EXISTS attributions(
    event_key TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS attributions_request ON attributions(request_id);
CREATE TABLE IF NOT EXISTS idempotency(
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_at ON impressions(at);
CREATE INDEX IF NOT EXISTS attributions_event ON attributions(request_id, event);
CREATE INDEX IF NOT EXISTS attributions_at ON attributions(at);
CREATE INDEX IF NOT EXISTS idempotency_at ON idempotency(at);
CREATE TABLE IF NOT EXISTS online_totals(
    arm TEXT NOT NULL,
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    impressions BIGINT NOT NULL DEFAULT 0,
    clicks BIGINT NOT NULL DEFAULT 0,
    carts BIGINT NOT NULL DEFAULT 0,
    purchases BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY(arm, model_version, strategy)
);
CREATE TABLE IF NOT EXISTS online_series(
    bucket {float} NOT NULL,
    arm TEXT NOT NULL,
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    impressions BIGINT NOT NULL DEFAULT 0,
    clicks BIGINT NOT NULL DEFAULT 0,
    carts BIGINT NOT NULL DEFAULT 0,
    purchases BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY(bucket, arm, model_version, strategy)
);
CREATE TABLE IF NOT EXISTS catalogue_changes(
    seq {serial},
    item_id TEXT NOT NULL,
    at {float} NOT NULL
);
"""
_COUNTED = {"click": "clicks", "cart": "carts", "purchase": "purchases"}  # lists with one
_ONLINE_KEY = "arm, model_version, strategy"

_EVENT_COLUMNS = "user_id, item_id, timestamp, event, value, query"
_INSERT_EVENT = (
    f"INSERT INTO events(event_key, {_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(event_key) DO NOTHING"
)
_LOG_CHANGE = "INSERT INTO catalogue_changes(item_id, at) VALUES (?, ?)"
_UPSERT_ITEM = (
    "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT(item_id) DO UPDATE SET fields=excluded.fields, updated_at=excluded.updated_at"
)
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class IngestReport:
    """What one :meth:`Store.ingest` changed."""

    items_added: int = 0
    items_updated: int = 0
    events_added: int = 0
    events_skipped_duplicate: int = 0


@dataclass(frozen=True)
class EventWrite:
    """What one :meth:`Store.add_events` did.

    Attributes:
        added: events newly stored.
        duplicates: events already stored (same key), skipped.
        added_rows: positions (in the given frame) of the newly stored events.
        replayed: True when the idempotency key was seen before: nothing was written and the
            counts are those of the first request.
    """

    added: int
    duplicates: int
    added_rows: tuple[int, ...] = ()
    replayed: bool = False


@dataclass(frozen=True)
class Impression:
    """One served list: who saw which items, from which arm and model."""

    request_id: str
    user_id: str
    arm: str
    model_version: str
    strategy: str
    items: tuple[str, ...]
    at: float


class Event(NamedTuple):
    """One behaviour event as the store keeps it (the columns of a normalised log)."""

    user_id: str
    item_id: str
    timestamp: float
    event: str = DEFAULT_EVENT
    value: float | None = None
    query: str | None = None


def events_as_rows(events: pd.DataFrame) -> list[Event]:
    """A normalised log frame as :class:`Event` rows (missing values and queries are None)."""
    values = events["value"].astype(object).where(events["value"].notna(), None)
    queries = events["query"].astype(object).where(events["query"].notna(), None)
    return [
        Event(*row)
        for row in zip(
            events["user_id"].tolist(),
            events["item_id"].tolist(),
            events["timestamp"].tolist(),
            events["event"].tolist(),
            values.tolist(),
            queries.tolist(),
            strict=True,
        )
    ]


def event_keys(events: pd.DataFrame | Sequence[Event]) -> list[str]:
    """One key per normalised event: sha1 of its six fields plus its occurrence number ``k``
    among identical events of the same batch (0 for the first, 1 for a repeat...)."""
    rows = events_as_rows(events) if isinstance(events, pd.DataFrame) else events
    sep = "\x1f"
    seen: dict[str, int] = {}
    keys = []
    for e in rows:
        value = "" if e.value is None or e.value != e.value else repr(float(e.value))
        base = sep.join(
            (
                str(e.user_id),
                str(e.item_id),
                float.__repr__(float(e.timestamp)),
                str(e.event),
                value,
                e.query if isinstance(e.query, str) else "",
            )
        )
        occurrence = seen.get(base, 0)
        seen[base] = occurrence + 1
        keys.append(hashlib.sha1(f"{base}{sep}{occurrence}".encode()).hexdigest())
    return keys


def check_event_rows(rows: Sequence[Event], source: str | None = None) -> None:
    """:func:`check_events` for :class:`Event` rows (those the HTTP API builds): the same
    limits, one row at a time, naming the first bad row (1-based)."""
    now = time.time()
    for n, e in enumerate(rows, start=1):
        problems = [
            ("timestamp", timestamp_problem(float(e.timestamp), now)),
            ("value", None if e.value is None else number_problem(float(e.value))),
            *(
                (name, text_problem(text, _TEXT_LIMITS[name]))
                for name, text in (
                    ("user_id", e.user_id),
                    ("item_id", e.item_id),
                    ("event", e.event),
                    ("query", e.query),
                )
                if isinstance(text, str)
            ),
        ]
        for column, problem in problems:
            if problem:
                raise DataError(f"{column} {problem}", file=source, row=n, column=column)
        if not (isinstance(e.user_id, str) and e.user_id.strip()):
            raise DataError("empty user_id", file=source, row=n, column="user_id")
        if not (isinstance(e.item_id, str) and e.item_id.strip()):
            raise DataError("empty item_id", file=source, row=n, column="item_id")


def _keyed(rows: Sequence[Event]) -> list[tuple]:
    """Rows as the events table takes them: ``(event_key, user_id, item_id, ...)``."""
    return [(key, *e) for key, e in zip(event_keys(rows), rows, strict=True)]


def _jsonable(value: Any) -> Any:
    """A field value as plain JSON: NaN/NA become null (missing), numpy scalars and arrays
    Python's. Infinities are kept, for :func:`~promptrec.data.limits.check_fields` to refuse."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def item_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """An item's fields as they are stored: plain JSON values (without ``item_id``), checked
    against :mod:`promptrec.data.limits`.

    Raises:
        ValueError: naming the first field that cannot be stored.
    """
    clean = {str(k): _jsonable(v) for k, v in fields.items() if k != "item_id"}
    check_fields(clean)
    return clean


def _fields_json(fields: Mapping[str, Any]) -> str:
    return json.dumps(item_fields(fields), ensure_ascii=False, allow_nan=False)


def _column(values: list[Any]) -> Any:
    """A column rebuilt from JSON values: whole numbers with gaps stay integers (``Int64``);
    in lists (category paths, tags), equal strings are one object (a million items in a few
    hundred categories hold a few hundred names, not three million strings)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    if any(isinstance(v, list) for v in present):
        names: dict[str, str] = {}
        return [
            [names.setdefault(x, x) if isinstance(x, str) else x for x in v]
            if isinstance(v, list)
            else v
            for v in values
        ]
    return values


def _stored_item(item_id: Any, text: Any) -> dict[str, Any] | None:
    """A stored item row's fields, or None when the row cannot be served (hand-edited, or
    written by a promptrec that did not check values): it is then skipped.

    Rows are checked at write time; here, at every read of a catalogue of any size, only what
    could stop serving is looked at (the full check only where the JSON spells a surrogate):
    a bad id, JSON that is not an object, a top-level number outside 64 bits or not finite."""
    try:
        if not isinstance(item_id, str) or not isinstance(text, str) or not item_id.strip():
            return None
        fields = json.loads(text)
        if not isinstance(fields, dict):
            return None
        if _SURROGATE_ESCAPE.search(text):
            check_fields(fields)
        for value in fields.values():
            if type(value) is int or type(value) is float:  # noqa: E721 (not bool)
                if number_problem(value) is not None:
                    return None
        return fields
    except (ValueError, RecursionError):
        return None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _items_frame(rows: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame, list[str]]:
    """The catalogue frame of stored item rows, and the ids of rows that were skipped."""
    ids, records, skipped = [], [], []
    for item_id, text in rows:
        fields = _stored_item(item_id, text)
        if fields is None:
            skipped.append(str(item_id))
            continue
        ids.append(item_id)
        records.append(fields)
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    data: dict[str, Any] = {"item_id": pd.Series(ids, dtype="str")}
    for name in names:
        if name != "item_id":
            data[name] = _column([r.get(name) for r in records])
    return pd.DataFrame(data), skipped


def _events_frame(rows: Sequence[tuple]) -> tuple[pd.DataFrame, int]:
    """The log frame of stored event rows, and how many rows were skipped as unservable (no
    usable user, item or time)."""
    frame = pd.DataFrame(rows, columns=_EVENT_COLUMNS.split(", "))
    if not len(frame):
        frame["timestamp"] = frame["timestamp"].astype("float64")
        frame["value"] = frame["value"].astype("float64")
        return frame, 0
    stamps = pd.to_numeric(frame["timestamp"], errors="coerce").astype("float64")
    values = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    ids_ok = _each_unique(frame["user_id"], _is_id) & _each_unique(frame["item_id"], _is_id)
    keep = ids_ok & np.isfinite(stamps.to_numpy())
    frame["timestamp"], frame["value"] = stamps, values.where(np.isfinite(values))
    skipped = int((~keep).sum())
    return (frame[keep].reset_index(drop=True) if skipped else frame), skipped


def _each_unique(column: pd.Series, check: Any) -> np.ndarray:
    """``check`` of each row's value, computed once per distinct value (a log of millions of
    events has far fewer users and items)."""
    uniques = pd.unique(column.to_numpy(dtype=object))
    good = {value for value in uniques if check(value)}
    return column.isin(good).to_numpy(dtype=bool)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and text_problem(value, 1 << 20) is None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and text_problem(value, 1 << 20) is None


_TEXT_LIMITS = {"user_id": 256, "item_id": 256, "event": 64, "query": MAX_QUERY_LENGTH}


def _first_bad(bad: np.ndarray, events: pd.DataFrame) -> tuple[int, int]:
    """The position (in ``events``) and the file line of the first True in ``bad``."""
    pos, _ = file_positions(events)
    first = int(np.argmax(bad))
    return first, int(pos[first])


def check_events(events: pd.DataFrame, source: str | None = None) -> None:
    """Refuse normalised events that the store cannot keep (:mod:`promptrec.data.limits`):
    times before 1970 or more than a day ahead, numbers that are not finite or too large,
    ids, event types and queries that are too long or not storable text.

    Raises:
        DataError: naming the first bad line and column, and how many lines are bad.
    """
    if not len(events):
        return
    now = time.time()
    stamps = events["timestamp"].to_numpy(dtype=np.float64)
    problems = [timestamp_problem(t, now) for t in (stamps.min(), stamps.max())]
    if any(problems):
        bad = np.array([timestamp_problem(t, now) is not None for t in stamps])
        first, line = _first_bad(bad, events)
        raise DataError(
            f"timestamp {timestamp_problem(stamps[first], now)} ({int(bad.sum())} such rows)",
            file=source,
            row=line,
            column="timestamp",
            expected="a time from 1970 to one day from now",
        )
    values = events["value"].to_numpy(dtype=np.float64)
    present = ~np.isnan(values)
    bad = present & ~(np.abs(np.where(present, values, 0.0)) <= 1e15)
    if bad.any():
        first, line = _first_bad(bad, events)
        raise DataError(
            f"value {number_problem(float(values[first]))} ({int(bad.sum())} such rows)",
            file=source,
            row=line,
            column="value",
            expected="a finite number (e.g. a rating) or nothing",
        )
    for column, limit in _TEXT_LIMITS.items():
        texts = events[column]
        problem_of = {
            v: p
            for v in pd.unique(texts[texts.notna()])
            if (p := text_problem(str(v), limit)) is not None
        }
        if problem_of:
            bad = texts.isin(list(problem_of)).to_numpy()
            first, line = _first_bad(bad, events)
            raise DataError(
                f"{column} {problem_of[texts.iloc[first]]} ({int(bad.sum())} such rows)",
                file=source,
                row=line,
                column=column,
                expected=f"text of at most {limit} characters",
            )


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


def is_postgres_url(target: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (a string): a PostgreSQL store."""
    return isinstance(target, str) and target.startswith(_POSTGRES_SCHEMES)


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` parameter) as ``***``."""
    url = re.sub(r"^([a-z]+://[^:@/?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def stored_text(item_id: Any, fields: Mapping[str, Any]) -> str:
    """An item's fields as :meth:`Store.upsert_item` stores them (what
    :meth:`Store.item_text` reads back)."""
    return _item_row(item_id, fields)[1]


def _item_row(item_id: Any, fields: Mapping[str, Any]) -> tuple[str, str]:
    """``(item_id, fields JSON)`` as stored, or a DataError naming the field."""
    item_id = str(item_id).strip()
    try:
        check_id(item_id, "item_id")
        return item_id, _fields_json(fields)
    except ValueError as exc:
        column = "item_id" if str(exc).startswith("item_id") else None
        raise DataError(str(exc), column=column, expected="values the store can keep") from None


class _Backend:
    """One database connection, and what the store's SQL needs said differently there.

    The store writes its SQL once, with ``?`` placeholders and the schema's ``{serial}``,
    ``{float}`` and ``{item_order}`` words; a backend translates the placeholders
    (:meth:`sql`), fills in the words (:attr:`schema_words`), opens and closes write
    transactions (:meth:`begin`) and says how to cut time into buckets (:meth:`bucket`).
    """

    #: what the schema's ``{serial}``, ``{float}`` and ``{item_order}`` stand for
    schema_words: Mapping[str, str]
    #: the items column that orders them by first insertion
    item_order: str
    #: where the store is, for messages: the file, or the URL without its password
    location: str
    #: the default name of :meth:`Store.dataset`
    name: str
    #: the database driver's base exception
    errors: type[Exception]
    _conn: Any = None

    def open_error(self, exc: BaseException) -> ConfigError:
        """A one-line error naming the store (never its password: :attr:`location` has none,
        and the drivers' messages name no password) and what went wrong; closes the
        connection."""
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        return ConfigError(f"cannot open the store {self.location}: {_one_line(exc)}")

    def sql(self, text: str) -> str:
        return text

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor has ``rowcount``, ``fetchone`` and ``fetchall``."""
        return self._conn.execute(self.sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per row; returns the number of rows changed in all."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start a write transaction, waiting for any other writer of the store to finish."""
        raise NotImplementedError

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def bucket(self, expr: str, seconds: float) -> str:
        """SQL for ``expr`` (seconds) rounded down to a multiple of ``seconds``."""
        raise NotImplementedError

    def close(self) -> None:
        self._conn.close()


class _SQLite(_Backend):
    schema_words = {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "float": "REAL",
        "item_order": "",
    }
    item_order = "rowid"
    errors = sqlite3.Error

    def __init__(self, path: Path) -> None:
        self.location = str(path)
        self.name = path.stem
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._conn.execute("PRAGMA synchronous=FULL")
            # 64 MiB of page cache (the default is 2 MiB): a service's inserts into a table of
            # a million served lists stay in memory instead of re-reading index pages
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise self.open_error(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return max(self._conn.executemany(sql, rows).rowcount, 0)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def bucket(self, expr: str, seconds: float) -> str:
        return f"CAST({expr} / {seconds!r} AS INTEGER) * {seconds!r}"


class _Postgres(_Backend):
    schema_words = {
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "float": "DOUBLE PRECISION",
        "item_order": ",\n    seq BIGINT GENERATED ALWAYS AS IDENTITY",
    }
    item_order = "seq"

    def __init__(self, url: str) -> None:
        self.location = redact_url(url)
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                f"the store {self.location} is a PostgreSQL database, which needs psycopg: "
                "pip install 'psycopg[binary]'"
            ) from exc
        self.errors = psycopg.Error
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            # libpq's message may quote a piece of the URL, the password included: not shown
            raise ConfigError(f"{self.location}: not a valid PostgreSQL URL") from None
        options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            options["connect_timeout"] = 10
        try:
            self._conn = psycopg.connect(url, **options)
            schema = self._conn.execute("SELECT current_schema()").fetchone()[0]
        except psycopg.Error as exc:
            raise self.open_error(exc) from exc
        self.name = self._conn.info.dbname
        if schema is None:
            self._conn.close()
            raise ConfigError(
                f"cannot open the store {self.location}: no schema to make its tables in "
                "(none of the schemas in its search_path exists)"
            )
        # one advisory lock per store (database and schema), taken by every write transaction
        self._schema = schema
        self._lock_key = self.lock_key("store")

    def lock_key(self, purpose: str) -> int:
        """A 64-bit advisory lock key for this store (database and schema) and ``purpose``."""
        name = f"promptrec.{purpose}:{self.name}.{self._schema}"
        return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._conn.cursor() as cur:
            cur.executemany(self.sql(sql), rows)
            return max(cur.rowcount, 0)

    def begin(self) -> None:
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))

    def bucket(self, expr: str, seconds: float) -> str:
        return f"TRUNC({expr} / {seconds!r}) * {seconds!r}"


def _open(target: str | Path) -> _Backend:
    if is_postgres_url(target):
        return _Postgres(str(target))
    if re.match(r"postgres(ql)?:/(?!/)", str(target)):
        raise ConfigError(
            f"{target}: this looks like a PostgreSQL URL whose '//' was collapsed by turning it "
            "into a file path; pass the URL as a string"
        )
    return _SQLite(Path(target))


class Store:
    """A catalogue and behaviour log in one SQLite file or a PostgreSQL database.

    Args:
        path: the database file (created with its folder when missing), or a
            ``postgresql://`` (or ``postgres://``) URL: the tables are made, when missing, in
            the first schema of the connection's ``search_path`` (``public`` by default; give
            another with ``?options=-csearch_path%3DNAME``). A PostgreSQL store needs psycopg.

    Attributes:
        path: the SQLite file, or None for a PostgreSQL store.
        location: the file, or the URL without its password (for messages).

    Raises:
        DataError: the store was written by a newer promptrec (a newer schema version).
        ConfigError: the store cannot be opened or reached (one line, never the password).

    Example:
        >>> with Store("data.db") as store:  # doctest: +SKIP
        ...     store.ingest(load_dataset("movielens-100k"), source="movielens-100k")
        ...     data = store.dataset()
    """

    def __init__(self, path: str | Path) -> None:
        self._db = _open(path)
        self.path = None if isinstance(self._db, _Postgres) else Path(path)
        self.location = self._db.location
        self._lock = threading.RLock()
        self.skipped = {"items": 0, "events": 0}  # unservable rows seen by the last dataset()
        self._service_lock: Any = None
        self._service_owner = ""
        try:
            with self._write() as db:
                for statement in _SCHEMA.format_map(db.schema_words).split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )
                found = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if int(found[0]) < SCHEMA_VERSION:  # an older store: its new tables were made
                    if int(found[0]) < 3:  # fill the online counts from the stored lists
                        self._recount(db, "", (), 1)
                    db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                        (str(SCHEMA_VERSION),),
                    )
        except self._db.errors as exc:
            raise self._db.open_error(exc) from exc
        if int(found[0]) > SCHEMA_VERSION:
            self._db.close()
            raise DataError(
                f"store schema version {found[0]} is newer than this promptrec supports "
                f"({SCHEMA_VERSION}); upgrade promptrec",
                file=self.location,
            )

    # ------------------------------------------------------------------ lifecycle

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return "postgresql" if isinstance(self._db, _Postgres) else "sqlite"

    def close(self) -> None:
        self.release_service()
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    @contextmanager
    def _write(self) -> Iterator[_Backend]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._lock:
            try:
                self._db.begin()
                yield self._db
                self._db.commit()
            except BaseException:
                # a failed commit (disk full...) leaves the transaction open: close it; a broken
                # connection cannot roll back; the first error is the one to see
                with suppress(Exception):
                    self._db.rollback()
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, params).fetchone()[0]

    def claim_service(self, owner: str) -> None:
        """Take the store's service lock for this process (``owner`` says who, for messages).

        One ``promptrec serve`` per store (with as many workers as it is given): a second one,
        started by mistake with other arms, models or retention, would serve the same users
        differently and prune the first one's lists on its own schedule. The lock is
        the operating system's (a lock file beside a SQLite store) or PostgreSQL's (a session
        advisory lock): a crashed holder releases it at once.

        Raises:
            ConfigError: another process holds it, named where it said who it is.
        """
        if self._service_lock is not None:
            if owner == self._service_owner:
                return
            raise ConfigError(
                f"the store {self.location} is already served by {self._service_owner}; stop "
                "it first (one promptrec serve per store: give it --workers N for more processes)"
            )
        self._service_owner = owner
        if isinstance(self._db, _Postgres):
            key = self._db.lock_key("service")
            with self._lock:
                taken = self._db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]
            if not taken:
                holder = self.meta("service_owner") or "another process"
                raise ConfigError(
                    f"the store {self.location} is already served by {holder}; stop it first "
                    "(one promptrec serve per store: give it --workers N for more processes, or "
                    "start one with --replica on another machine)"
                )
            self._service_lock = key
            self.set_meta("service_owner", owner)
            return
        if self.path is None or str(self.path) == ":memory:":
            self._service_lock = True
            return
        import fcntl

        path = self.path.with_name(self.path.name + ".lock")
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"the store {self.location} is already served by {holder}; stop it first "
                "(one promptrec serve per store: give it --workers N for more processes)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(owner)
        handle.flush()
        self._service_lock = handle

    def release_service(self) -> None:
        """Give the service lock back (closing the store does too)."""
        held, self._service_lock = self._service_lock, None
        if held is None or held is True:
            return
        if isinstance(self._db, _Postgres):
            with suppress(Exception), self._lock:
                self._db.execute("SELECT pg_advisory_unlock(?)", (held,)).fetchone()
            return
        held.close()  # closing the file releases its flock

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
            lines, _ = file_positions(items)
            for n, (iid, record) in enumerate(zip(items["item_id"].tolist(), fields, strict=True)):
                try:
                    check_id(iid, "item_id")
                    item_rows.append((iid, _fields_json(record), now))
                except ValueError as exc:
                    raise DataError(
                        f"item {iid[:80]!r}: {exc}",
                        file=src,
                        row=int(lines[n]),
                        expected="values the store can keep: finite numbers, 64-bit "
                        "integers, valid Unicode text without NUL",
                    ) from None
        event_rows: list[Event] = []
        lines: np.ndarray | None = None
        if events is not None and len(events):
            events = events_from_frame(events, source=src)
            check_events(events, src)
            event_rows = events_as_rows(events)
            lines, _ = file_positions(events)
        file_hash = _source_hash(source)

        with self._write() as db:
            self._check_known_items(db, event_rows, lines, set(batch_ids), src)
            before = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            db.executemany(_UPSERT_ITEM, item_rows)
            added_items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0] - before
            added_events = self._insert_events(db, _keyed(event_rows))
            db.execute(
                "INSERT INTO ingests(file_hash, path, kind, rows, at) VALUES (?, ?, ?, ?, ?)",
                (file_hash, src, kind, len(item_rows) + len(event_rows), time.time()),
            )
        return IngestReport(
            items_added=added_items,
            items_updated=len(item_rows) - added_items,
            events_added=added_events,
            events_skipped_duplicate=len(event_rows) - added_events,
        )

    def add_events(
        self,
        events: pd.DataFrame | Sequence[Event],
        *,
        searches: Sequence[tuple[str, str, float]] = (),
        attributions: Mapping[int, str] | None = None,
        idempotency_key: str | None = None,
    ) -> EventWrite:
        """Add events in one transaction, with searches that led to no item and click
        attributions.

        Args:
            events: a frame (raw or normalised columns; see
                :func:`~promptrec.data.readers.read_events`), or :class:`Event` rows (what
                the service writes: no pandas on its path, a few hundred microseconds a
                batch). Either may be empty when only ``searches`` are given.
            searches: ``(user_id, query, timestamp)`` of searches with no item.
            attributions: ``row -> request_id`` of the served list an event answers; written
                only for events that are new.
            idempotency_key: a key of the client's choosing: a retried request with the same
                key writes nothing and gets the first request's counts back.

        Raises:
            DataError: invalid events or an item not in the store; nothing is written then.
        """
        lines: np.ndarray | None = None
        if isinstance(events, pd.DataFrame):
            src = events.attrs.get("source")
            rows: list[Event] = []
            if len(events):
                frame = events_from_frame(events)
                check_events(frame, src)
                rows = events_as_rows(frame)
                lines, _ = file_positions(frame)
        else:
            src, rows = None, list(events)
            check_event_rows(rows)
        keyed = _keyed(rows)
        attributions = attributions or {}
        with self._write() as db:
            if idempotency_key is not None:
                seen = db.execute(
                    "SELECT response FROM idempotency WHERE key = ?", (idempotency_key,)
                ).fetchone()
                if seen is not None:
                    first = json.loads(seen[0])
                    return EventWrite(first["added"], first["duplicates"], (), replayed=True)
            self._check_known_items(db, rows, lines, set(), src)
            added_rows = [
                pos for pos, row in enumerate(keyed) if db.execute(_INSERT_EVENT, row).rowcount
            ]
            db.executemany(
                "INSERT INTO searches(user_id, query, timestamp) VALUES (?, ?, ?)",
                [(str(u), str(q), float(t)) for u, q, t in searches],
            )
            now = time.time()
            self._attribute(
                db,
                [
                    (keyed[pos][0], str(attributions[pos]), rows[pos].item_id, rows[pos].event, now)
                    for pos in added_rows
                    if pos in attributions
                ],
            )
            result = EventWrite(len(added_rows), len(rows) - len(added_rows), tuple(added_rows))
            if idempotency_key is not None:
                db.execute(
                    "INSERT INTO idempotency(key, response, at) VALUES (?, ?, ?)",
                    (
                        idempotency_key,
                        json.dumps({"added": result.added, "duplicates": result.duplicates}),
                        now,
                    ),
                )
        return result

    def record_impressions(self, impressions: Sequence[Impression]) -> None:
        """Store served lists (a retried request id is ignored)."""
        rows = [
            (i.request_id, i.user_id, i.arm, i.model_version, i.strategy, json.dumps(i.items), i.at)
            for i in impressions
        ]
        with self._write() as db:
            new = [
                imp
                for imp, row in zip(impressions, rows, strict=True)
                if db.execute(
                    "INSERT INTO impressions(request_id, user_id, arm, model_version, strategy, "
                    "items, at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(request_id) DO NOTHING",
                    row,
                ).rowcount
            ]
            self._count(
                db, "impressions", [(i.arm, i.model_version, i.strategy, i.at) for i in new]
            )
            if new:  # feedback recorded before its list was stored counts now
                ids = tuple(i.request_id for i in new)
                marks = ", ".join("?" * len(ids))
                self._recount(db, f"WHERE i.request_id IN ({marks})", ids, 1, lists=False)

    def upsert_item(self, item_id: str, fields: Mapping[str, Any]) -> bool:
        """Add an item or replace its fields. Returns True when it was new.

        Raises:
            DataError: an empty id, or a field the store cannot keep (see
                :mod:`promptrec.data.limits`); nothing is written then.
        """
        item_id, text = _item_row(item_id, fields)
        with self._write() as db:
            existed = db.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone()
            db.execute(_UPSERT_ITEM, (item_id, text, time.time()))
            db.execute(_LOG_CHANGE, (item_id, time.time()))
        return existed is None

    @staticmethod
    def items_frame(changes: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
        """Catalogue rows for items not yet stored, exactly as :meth:`dataset` will read them
        back once they are (``item_id -> fields``).

        Raises:
            DataError: a field the store could not keep.
        """
        frame, skipped = _items_frame([_item_row(iid, f) for iid, f in changes.items()])
        if skipped:  # pragma: no cover - what _item_row accepts is always servable
            raise DataError(f"item {skipped[0]!r} could not be served", column="item_id")
        return frame

    def delete_item(self, item_id: str) -> bool:
        """Remove an item, its events and its embedding records. Returns True if it existed."""
        with self._write() as db:
            db.execute("DELETE FROM embeddings WHERE item_id = ?", (str(item_id),))
            removed = db.execute("DELETE FROM items WHERE item_id = ?", (str(item_id),))
            if removed.rowcount > 0:
                db.execute(_LOG_CHANGE, (str(item_id), time.time()))
            return removed.rowcount > 0

    # ------------------------------------------------------------------ what serving reads
    def item_text(self, item_id: str) -> str | None:
        """An item's stored fields as JSON text (None when it is not stored)."""
        rows = self._read("SELECT fields FROM items WHERE item_id = ?", (str(item_id),))
        return rows[0][0] if rows else None

    def catalogue_version(self) -> int:
        """The number of the newest catalogue change (0 before any)."""
        return int(self._scalar("SELECT COALESCE(MAX(seq), 0) FROM catalogue_changes"))

    def catalogue_changes(self, since: int) -> list[tuple[int, str]]:
        """``(seq, item_id)`` of the catalogue changes after ``since``, oldest first: each
        :meth:`upsert_item` and :meth:`delete_item` appends one in its transaction (services
        on this store poll them to follow each other's changes).

        Raises:
            LookupError: changes after ``since`` were already pruned (:meth:`prune`): whoever
                follows them must read the catalogue again.
        """
        rows = self._read(
            "SELECT seq, item_id FROM catalogue_changes WHERE seq > ? ORDER BY seq",
            (int(since),),
        )
        if rows and rows[0][0] > since + 1:
            oldest = self._scalar("SELECT MIN(seq) FROM catalogue_changes")
            if oldest > since + 1:
                raise LookupError(f"catalogue changes {since + 1}..{oldest - 1} were pruned")
        return [(int(q), str(i)) for q, i in rows]

    def user_history(
        self, user_id: str, limit: int
    ) -> list[tuple[str, float, str, float, str | None]]:
        """A user's newest ``limit`` events, oldest first: ``(item_id, timestamp, event,
        value, query)`` (NaN for no value). One indexed query: what every request reads."""
        rows = self._read(
            "SELECT item_id, timestamp, event, value, query FROM events WHERE user_id = ? "
            "ORDER BY timestamp DESC, id DESC LIMIT ?",
            (str(user_id), int(limit)),
        )
        out = []
        for item, stamp, kind, value, query in reversed(rows):
            if not isinstance(stamp, int | float) or not math.isfinite(stamp):
                continue  # a row the checks never saw: skipped, as dataset() does
            value = float(value) if isinstance(value, int | float) else math.nan
            out.append((str(item), float(stamp), str(kind), value, query))
        return out

    def latest_search(self, user_id: str) -> tuple[str, float] | None:
        """The user's newest search with no item ``(query, timestamp)``, or None."""
        rows = self._read(
            "SELECT query, timestamp FROM searches WHERE user_id = ? "
            "ORDER BY timestamp DESC, id DESC LIMIT 1",
            (str(user_id),),
        )
        if not rows or not _is_text(rows[0][0]) or not isinstance(rows[0][1], int | float):
            return None
        return str(rows[0][0]), float(rows[0][1])

    def knows_user(self, user_id: str) -> bool:
        """Whether the user has any event or search."""
        uid = (str(user_id),)
        return bool(
            self._read("SELECT 1 FROM events WHERE user_id = ? LIMIT 1", uid)
            or self._read("SELECT 1 FROM searches WHERE user_id = ? LIMIT 1", uid)
        )

    def most_active_users(self, limit: int) -> list[str]:
        """The users with the most events, most first (for pickers and benchmarks)."""
        rows = self._read(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT ?",
            (int(limit),),
        )
        return [str(u) for (u,) in rows]

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Forget a user: events, searches, served lists and their attributions, in one
        transaction. Returns how many rows of each were removed."""
        uid = str(user_id)
        with self._write() as db:
            self._recount(db, "WHERE i.user_id = ?", (uid,), -1)  # their share of the counts
            attributions = db.execute(
                "DELETE FROM attributions WHERE request_id IN "
                "(SELECT request_id FROM impressions WHERE user_id = ?) OR event_key IN "
                "(SELECT event_key FROM events WHERE user_id = ?)",
                (uid, uid),
            ).rowcount
            return {
                "events": db.execute("DELETE FROM events WHERE user_id = ?", (uid,)).rowcount,
                "searches": db.execute("DELETE FROM searches WHERE user_id = ?", (uid,)).rowcount,
                "impressions": db.execute(
                    "DELETE FROM impressions WHERE user_id = ?", (uid,)
                ).rowcount,
                "attributions": attributions,
            }

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
        with self._write() as db:
            db.executemany(
                "INSERT INTO embeddings(model, item_id, text_hash, dim) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(model, item_id) DO UPDATE SET text_hash=excluded.text_hash, "
                "dim=excluded.dim",
                rows,
            )

    # ------------------------------------------------------------------ reads

    def embedding_hashes(self, model: str) -> dict[str, str]:
        """``item_id -> text_hash`` of the embeddings recorded for ``model``."""
        rows = self._read("SELECT item_id, text_hash FROM embeddings WHERE model = ?", (model,))
        return dict(rows)

    def meta(self, key: str) -> str | None:
        """A stored setting (None when unset)."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str, *, overwrite: bool = True) -> None:
        """Store a setting; with ``overwrite=False`` an existing value is kept."""
        then = "DO UPDATE SET value=excluded.value" if overwrite else "DO NOTHING"
        with self._write() as db:
            db.execute(
                f"INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) {then}",
                (key, str(value)),
            )

    def searches(self, user_id: str | None = None) -> list[tuple[str, str, float]]:
        """``(user_id, query, timestamp)`` of searches with no item, oldest first."""
        sql = "SELECT user_id, query, timestamp FROM searches"
        params: tuple = ()
        if user_id is not None:
            sql, params = sql + " WHERE user_id = ?", (str(user_id),)
        rows = self._read(sql + " ORDER BY id", params)
        # rows the checks never saw (a hand edit, an older version) are skipped, never fatal
        return [
            (u, q, float(t))
            for u, q, t in rows
            if _is_id(u) and _is_text(q) and isinstance(t, int | float) and math.isfinite(t)
        ]

    def impressions(self, user_id: str, *, limit: int = 20) -> list[Impression]:
        """A user's most recent served lists, newest first."""
        rows = self._read(
            "SELECT request_id, user_id, arm, model_version, strategy, items, at "
            "FROM impressions WHERE user_id = ? ORDER BY at DESC LIMIT ?",
            (str(user_id), int(limit)),
        )
        return [Impression(*r[:5], tuple(json.loads(r[5])), r[6]) for r in rows]

    def impression(self, request_id: str) -> Impression | None:
        """One served list by its request id (None when unknown)."""
        rows = self._read(
            "SELECT request_id, user_id, arm, model_version, strategy, items, at "
            "FROM impressions WHERE request_id = ?",
            (str(request_id),),
        )
        return Impression(*rows[0][:5], tuple(json.loads(rows[0][5])), rows[0][6]) if rows else None

    def online_stats(
        self,
        *,
        bucket_seconds: float | None = None,
        since: float | None = None,
        unwritten: Sequence[Impression] = (),
    ) -> list[dict[str, Any]]:
        """Served lists and the events attributed to them per arm, model version and strategy
        (and per time bucket of ``bucket_seconds`` when given, from ``since`` on):
        ``impressions``, ``clicks``, ``carts``, ``purchases`` (lists with at least one),
        ``ctr`` (clicked lists / lists) and ``conversion`` (lists with a purchase / lists).

        Read from counts kept as lists are served and clicked, so the cost does not grow with
        the number of stored lists, and the counts outlive the lists' retention. A bucket is
        the time the list was served; buckets are at least ``SERIES_SECONDS`` wide.

        ``unwritten`` are lists served but not stored yet (the service's buffer): they count as
        served, bucketed as if stored (their feedback, if any, flushed them first).
        """
        counts = "SUM(impressions), SUM(clicks), SUM(carts), SUM(purchases)"
        size = max(float(bucket_seconds), SERIES_SECONDS) if bucket_seconds else None
        if size is not None:
            when = self._db.bucket("bucket", size)
            sql = f"SELECT {_ONLINE_KEY}, {when} AS b, {counts} FROM online_series"
            params: tuple = ()
            if since is not None:
                sql, params = sql + " WHERE bucket >= ?", (float(since) // size * size,)
            rows = self._read(sql + f" GROUP BY {_ONLINE_KEY}, b", params)
        else:
            rows = self._read(
                f"SELECT {_ONLINE_KEY}, NULL, {counts} FROM online_totals GROUP BY {_ONLINE_KEY}"
            )
        if unwritten:
            merged = {
                (a, v, s, None if b is None else float(b)): [int(x or 0) for x in n]
                for a, v, s, b, *n in rows
            }
            for imp in unwritten:
                minute = imp.at // SERIES_SECONDS * SERIES_SECONDS  # as online_series keeps it
                if since is not None and size is not None and minute < since // size * size:
                    continue
                bucket = None if size is None else minute // size * size
                key = (imp.arm, imp.model_version, imp.strategy, bucket)
                merged.setdefault(key, [0, 0, 0, 0])[0] += 1
            rows = [(*key, *n) for key, n in merged.items()]
        # sorted here, not in SQL: the same order (by code point) whatever the database collation
        rows = sorted(rows, key=lambda r: (r[3] is not None, r[3] or 0.0, r[0], r[1], r[2]))
        out = []
        for arm, version, strategy, at, shown, clicked, carted, bought in rows:
            shown, clicked, carted, bought = (int(x or 0) for x in (shown, clicked, carted, bought))
            if not shown and not (clicked or carted or bought):
                continue
            out.append(
                {
                    "arm": arm,
                    "model_version": version,
                    "strategy": strategy,
                    "bucket": None if at is None else float(at),
                    "impressions": shown,
                    "clicks": clicked,
                    "carts": carted,
                    "purchases": bought,
                    "ctr": clicked / shown if shown else 0.0,
                    "conversion": bought / shown if shown else 0.0,
                }
            )
        return out

    def prune(
        self,
        *,
        served_before: float | None = None,
        idempotency_before: float | None = None,
        changes_before: float | None = None,
        batch: int = 5000,
    ) -> dict[str, int]:
        """Delete served lists (with their attributions) older than ``served_before``,
        idempotency keys older than ``idempotency_before`` and catalogue changes older than
        ``changes_before`` (unix seconds; None keeps them), in
        transactions of at most ``batch`` rows so that writers wait little. The online counts
        are kept. Returns how many rows of each went."""
        removed = {"impressions": 0, "attributions": 0, "idempotency": 0, "catalogue_changes": 0}
        # an attribution is never older than its list: one cut-off bounds both tables
        for table, key, before in (
            ("impressions", "request_id", served_before),
            ("attributions", "event_key", served_before),
            ("idempotency", "key", idempotency_before),
            ("catalogue_changes", "seq", changes_before),
        ):
            # the newest change is kept: who follows the log from further back sees the gap
            newest = " AND seq < (SELECT MAX(seq) FROM catalogue_changes)" if key == "seq" else ""
            while before is not None:
                with self._write() as db:
                    gone = db.execute(
                        f"DELETE FROM {table} WHERE {key} IN "
                        f"(SELECT {key} FROM {table} WHERE at < ?{newest} LIMIT ?)",
                        (float(before), batch),
                    ).rowcount
                removed[table] += gone
                if gone < batch:
                    break
        return removed

    def dataset(
        self,
        name: str | None = None,
        *,
        pending: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> Dataset:
        """Everything in the store as a :class:`Dataset`: items and events in insertion order.

        Rows that cannot be served (an item whose fields are out of range or not JSON, an event
        with no usable time: written by hand or by an older promptrec) are skipped, never
        fatal: :attr:`skipped` counts them and a warning names the first.

        Args:
            name: the data set's name (default: the store's).
            pending: catalogue changes not yet committed, applied to what is read: ``item_id
                -> fields`` adds or replaces an item, ``item_id -> None`` removes it with its
                events. This is the catalogue as it will be once they are committed (the
                service builds and checks it before it commits).

        Raises:
            DataError: a pending item the store could not keep.
        """
        changes = {
            iid: None if f is None else _item_row(iid, f)[1] for iid, f in (pending or {}).items()
        }
        with self._lock:
            items = self._read(f"SELECT item_id, fields FROM items ORDER BY {self._db.item_order}")
            events = self._read(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id")
        if changes:
            kept = [(iid, changes.get(iid, text)) for iid, text in items]
            items = [(iid, text) for iid, text in kept if text is not None]
            present = {iid for iid, _ in kept}
            items += [
                (iid, t) for iid, t in changes.items() if t is not None and iid not in present
            ]
        frame, skipped_items = _items_frame(items)
        events_frame, skipped_events = _events_frame(events)
        gone = skipped_items + [iid for iid, t in changes.items() if t is None]
        if gone:
            events_frame = events_frame[~events_frame["item_id"].isin(gone)].reset_index(drop=True)
        self.skipped = {"items": len(skipped_items), "events": skipped_events}
        if skipped_items or skipped_events:
            log.warning(
                "%s: skipped %d item rows and %d event rows that cannot be served (first "
                "item: %r); fix or delete them (PUT or DELETE /items/ID)",
                self.location,
                len(skipped_items),
                skipped_events,
                skipped_items[0][:80] if skipped_items else None,
            )
        return Dataset(frame, events_frame, name=name or self._db.name)

    def counts(self) -> dict[str, int]:
        """Numbers of items, events, distinct users, ingests and embedding records."""
        return {
            "items": self._scalar("SELECT COUNT(*) FROM items"),
            "events": self._scalar("SELECT COUNT(*) FROM events"),
            "users": self._scalar("SELECT COUNT(DISTINCT user_id) FROM events"),
            "ingests": self._scalar("SELECT COUNT(*) FROM ingests"),
            "embeddings": self._scalar("SELECT COUNT(*) FROM embeddings"),
            "searches": self._scalar("SELECT COUNT(*) FROM searches"),
            "impressions": self._scalar("SELECT COUNT(*) FROM impressions"),
        }

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check_known_items(
        db: _Backend,
        rows: Sequence[Event],
        lines: np.ndarray | None,
        batch_ids: set[str],
        source: str | None,
    ) -> None:
        """A DataError naming the first event whose item is neither stored nor in this batch.

        Runs inside the write transaction (an item deleted meanwhile cannot slip through), by
        key lookups of the batch's items: its cost follows the batch, not the catalogue."""
        wanted = {e.item_id for e in rows} - batch_ids
        if not wanted:
            return
        if len(wanted) > 5000:  # a large ingest: one scan beats many lookups
            stored = {r[0] for r in db.execute("SELECT item_id FROM items").fetchall()}
        else:
            ids, stored = sorted(wanted), set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                found = db.execute(f"SELECT item_id FROM items WHERE item_id IN ({marks})", chunk)
                stored.update(r[0] for r in found.fetchall())
        missing = wanted - stored
        if missing:
            bad = [n for n, e in enumerate(rows) if e.item_id in missing]
            first = bad[0]
            raise DataError(
                f"{len(bad)} events refer to items neither in the store nor in this "
                f"batch (first: item {rows[first].item_id!r})",
                file=source,
                row=int(lines[first]) if lines is not None else first + 1,
                column="item_id",
                expected="items added before or with their events",
            )

    def _count(
        self, db: _Backend, column: str, lists: Sequence[tuple[str, str, str, float]], sign: int = 1
    ) -> None:
        """Add ``sign`` to ``column`` of the online counts of each ``(arm, model_version,
        strategy, served at)`` (a list served, or its first click, cart or purchase)."""
        if not lists:
            return
        totals: dict[tuple, int] = {}
        series: dict[tuple, int] = {}
        for arm, version, strategy, at in lists:
            key = (str(arm), str(version), str(strategy))
            totals[key] = totals.get(key, 0) + sign
            slot = (float(at) // SERIES_SECONDS * SERIES_SECONDS, *key)
            series[slot] = series.get(slot, 0) + sign
        for table, conflict, counts in (
            ("online_totals", _ONLINE_KEY, totals),
            ("online_series", f"bucket, {_ONLINE_KEY}", series),
        ):
            marks = ", ".join("?" * (conflict.count(",") + 2))
            db.executemany(
                f"INSERT INTO {table}({conflict}, {column}) VALUES ({marks}) "
                f"ON CONFLICT({conflict}) DO UPDATE SET "
                f"{column} = {table}.{column} + excluded.{column}",
                [(*key, n) for key, n in counts.items()],
            )

    def _attribute(self, db: _Backend, rows: Sequence[tuple]) -> None:
        """Write attributions ``(event_key, request_id, item_id, event, at)`` and count each
        list's first click, cart and purchase."""
        firsts: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for row in rows:
            if not db.execute(
                "INSERT INTO attributions(event_key, request_id, item_id, event, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(event_key) DO NOTHING",
                row,
            ).rowcount:
                continue
            pair = (row[1], row[3])
            if row[3] in _COUNTED and pair not in seen:
                seen.add(pair)
                n = db.execute(
                    "SELECT COUNT(*) FROM attributions WHERE request_id = ? AND event = ?", pair
                ).fetchone()[0]
                if n == 1:
                    firsts.append(pair)
        for event in _COUNTED:
            ids = [rid for rid, kind in firsts if kind == event]
            lists = [
                tuple(r)
                for rid in ids
                for r in db.execute(
                    f"SELECT {_ONLINE_KEY}, at FROM impressions WHERE request_id = ?", (rid,)
                ).fetchall()
            ]
            self._count(db, _COUNTED[event], lists)

    def _recount(
        self, db: _Backend, where: str, params: tuple, sign: int, *, lists: bool = True
    ) -> None:
        """Add ``sign`` times the stored lists chosen by ``where`` (on ``impressions i``; the
        lists themselves only with ``lists``), and their clicks, carts and purchases (one
        each at most), to the online counts."""
        listed = "i.arm, i.model_version, i.strategy, i.at"
        if lists:
            found = db.execute(f"SELECT {listed} FROM impressions i {where}", params).fetchall()
            self._count(db, "impressions", [tuple(r) for r in found], sign)
        for event, column in _COUNTED.items():
            joined = f"{where} AND" if where else "WHERE"
            hit = db.execute(
                f"SELECT {listed} FROM impressions i {joined} EXISTS (SELECT 1 FROM attributions "
                "a WHERE a.request_id = i.request_id AND a.event = ?)",
                (*params, event),
            ).fetchall()
            self._count(db, column, [tuple(r) for r in hit], sign)

    @staticmethod
    def _insert_events(db: _Backend, rows: list[tuple]) -> int:
        """Insert events (those already stored, by key, are skipped); returns how many were new."""
        return db.executemany(_INSERT_EVENT, rows)


__all__ = [
    "Event",
    "EventWrite",
    "Impression",
    "IngestReport",
    "Store",
    "event_keys",
    "is_postgres_url",
    "redact_url",
]
