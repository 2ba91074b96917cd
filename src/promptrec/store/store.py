"""The store: the catalogue, the behaviour log, a record of ingests and embedding metadata, in
one SQLite file (embedded, the default) or in a PostgreSQL database (``Store("postgresql://...")``).

Writes are all-or-nothing: :meth:`Store.ingest` validates its whole input first, then writes it
in one transaction, so a failed ingest leaves the store as it was. The service keeps its own
state (served lists, attributions, online counts...) beside these tables, on the same database
(:class:`~promptrec.service.state.ServiceState`).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.dataset import Dataset
from promptrec.data.limits import check_id
from promptrec.data.readers import catalog_from_frame, events_from_frame, file_positions
from promptrec.errors import DataError
from promptrec.store import catalogue, log
from promptrec.store.copies import CatalogueCopy, LogCopy, copy_path
from promptrec.store.database import Database, PostgresDatabase, open_database
from promptrec.store.events import (
    CheckedEvents,
    Event,
    EventWrite,
    check_events,
    checked,
    events_as_rows,
    write_of,
)
from promptrec.store.items import fields_json, item_row, items_frame
from promptrec.store.schema import SCHEMA, SCHEMA_VERSION

logger = logging.getLogger("promptrec")


@dataclass(frozen=True)
class IngestReport:
    """What one :meth:`Store.ingest` changed."""

    items_added: int = 0
    items_updated: int = 0
    events_added: int = 0
    events_skipped_duplicate: int = 0


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
    """A catalogue and behaviour log in one SQLite file or a PostgreSQL database.

    Args:
        path: the database file (created with its folder when missing), or a
            ``postgresql://`` (or ``postgres://``) URL: the tables are made, when missing, in
            the first schema of the connection's ``search_path`` (``public`` by default; give
            another with ``?options=-csearch_path%3DNAME``). A PostgreSQL store needs psycopg.

    Attributes:
        db: the :class:`~promptrec.store.database.Database` (one connection), for whoever keeps
            tables of their own beside these (the service).
        path: the SQLite file, or None for a PostgreSQL store.
        location: the file, or the URL without its password (for messages).
        skipped: stored rows the last :meth:`dataset` could not serve, per table.
        log_copy, catalogue_copy: the columnar copies of the log and the catalogue beside an
            SQLite file, which :meth:`dataset` reads instead of every row
            (:mod:`promptrec.store.copies`); None for a PostgreSQL or in-memory store.

    Raises:
        DataError: the store was written by a newer promptrec (a newer schema version).
        ConfigError: the store cannot be opened or reached (one line, never the password).

    Example:
        >>> with Store("data.db") as store:  # doctest: +SKIP
        ...     store.ingest(load_dataset("movielens-100k"), source="movielens-100k")
        ...     data = store.dataset()
    """

    def __init__(self, path: str | Path) -> None:
        self.db: Database = open_database(path)
        self.path = None if isinstance(self.db, PostgresDatabase) else Path(path)
        self.location = self.db.location
        self.skipped = {"items": 0, "events": 0}
        try:
            with self.db.transaction() as db:
                db.create(SCHEMA)
                db.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )
                db.execute(  # what tells this store from another file of the same name
                    "INSERT INTO meta(key, value) VALUES ('store_id', ?) "
                    "ON CONFLICT(key) DO NOTHING",
                    (uuid.uuid4().hex,),
                )
                store_id = db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
                found = int(
                    db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
                )
                if found < SCHEMA_VERSION:  # an older store: its new tables were made
                    db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                        (str(SCHEMA_VERSION),),
                    )
        except self.db.errors as exc:
            raise self.db.open_error(exc) from exc
        if found > SCHEMA_VERSION:
            self.db.close()
            raise DataError(
                f"store schema version {found} is newer than this promptrec supports "
                f"({SCHEMA_VERSION}); upgrade promptrec",
                file=self.location,
            )
        log_path, items_path = copy_path(self.db, "log"), copy_path(self.db, "items")
        self.log_copy = None if log_path is None else LogCopy(log_path, store_id)
        self.catalogue_copy = None if items_path is None else CatalogueCopy(items_path, store_id)

    # ------------------------------------------------------------------ lifecycle
    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return "postgresql" if isinstance(self.db, PostgresDatabase) else "sqlite"

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

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
                    item_rows.append((iid, fields_json(record), now))
                except ValueError as exc:
                    raise DataError(
                        f"item {iid[:80]!r}: {exc}",
                        file=src,
                        row=int(lines[n]),
                        expected="values the store can keep: finite numbers, 64-bit "
                        "integers, valid Unicode text without NUL",
                    ) from None
        event_rows: list[Event] = []
        event_lines: np.ndarray | None = None
        if events is not None and len(events):
            events = events_from_frame(events, source=src)
            check_events(events, src)
            event_rows = events_as_rows(events)
            event_lines, _ = file_positions(events)
        file_hash = _source_hash(source)

        with self.db.transaction() as db:
            log.check_known_items(
                db, event_rows, lines=event_lines, batch_ids=set(batch_ids), source=src
            )
            before = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            db.executemany(catalogue.UPSERT, item_rows)
            added_items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0] - before
            added_events = log.insert_many(db, event_rows)
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

    def add_events(self, events: pd.DataFrame | Sequence[Event] | CheckedEvents) -> EventWrite:
        """Add events in one transaction.

        Args:
            events: :class:`~promptrec.store.events.Event` rows (searches that led to no item
                among them), a frame of events (raw or normalised columns; see
                :func:`~promptrec.data.readers.read_events`), or events already
                :func:`~promptrec.store.events.checked`.

        Raises:
            DataError: invalid events, naming the first bad row and column
                (:class:`~promptrec.store.log.UnknownItemError` for an item not in the
                store); nothing is written then.
        """
        batch = checked(events)
        with self.db.transaction() as db:
            log.check_known_items(db, batch.rows, lines=batch.lines, source=batch.source)
            added = log.insert_events(db, batch.rows)
        return write_of(batch.rows, sorted(added))

    def upsert_item(self, item_id: str, fields: Mapping[str, Any]) -> bool:
        """Add an item or replace its fields. Returns True when it was new.

        Raises:
            DataError: an empty id, or a field the store cannot keep (see
                :mod:`promptrec.data.limits`); nothing is written then.
        """
        item_id, text = item_row(item_id, fields)
        with self.db.transaction() as db:
            return catalogue.upsert_item(db, item_id, text)

    def delete_item(self, item_id: str) -> bool:
        """Remove an item, its events and its embedding records. Returns True if it existed."""
        with self.db.transaction() as db:
            return catalogue.delete_item(db, str(item_id))

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
        with self.db.transaction() as db:
            db.executemany(
                "INSERT INTO embeddings(model, item_id, text_hash, dim) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(model, item_id) DO UPDATE SET text_hash=excluded.text_hash, "
                "dim=excluded.dim",
                rows,
            )

    def set_meta(self, key: str, value: str, *, overwrite: bool = True) -> None:
        """Store a setting; with ``overwrite=False`` an existing value is kept."""
        then = "DO UPDATE SET value=excluded.value" if overwrite else "DO NOTHING"
        with self.db.transaction() as db:
            db.execute(
                f"INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) {then}",
                (key, str(value)),
            )

    # ------------------------------------------------------------------ reads
    def meta(self, key: str) -> str | None:
        """A stored setting (None when unset)."""
        rows = self.db.read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def item_text(self, item_id: str) -> str | None:
        """An item's stored fields as JSON text (None when it is not stored)."""
        return catalogue.item_text(self.db, item_id)

    def user_history(
        self, user_id: str, limit: int
    ) -> list[tuple[str, float, str, float, str | None]]:
        """A user's newest ``limit`` events, oldest first: ``(item_id, timestamp, event,
        value, query)`` (NaN for no value). One indexed query: what every request reads."""
        return log.user_history(self.db, user_id, limit)

    def latest_search(self, user_id: str) -> tuple[str, float] | None:
        """The user's newest search with no item ``(query, timestamp)``, or None."""
        return log.latest_search(self.db, user_id)

    def searches(self, user_id: str | None = None) -> list[tuple[str, str, float]]:
        """``(user_id, query, timestamp)`` of searches with no item, oldest first."""
        return log.searches(self.db, user_id)

    def knows_user(self, user_id: str) -> bool:
        """Whether the user has any event or search."""
        uid = (str(user_id),)
        return bool(
            self.db.read("SELECT 1 FROM events WHERE user_id = ? LIMIT 1", uid)
            or self.db.read("SELECT 1 FROM searches WHERE user_id = ? LIMIT 1", uid)
        )

    def most_active_users(self, limit: int) -> list[str]:
        """The users with the most events, most first (for pickers and benchmarks)."""
        rows = self.db.read(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT ?",
            (int(limit),),
        )
        return [str(u) for (u,) in rows]

    def embedding_hashes(self, model: str) -> dict[str, str]:
        """``item_id -> text_hash`` of the embeddings recorded for ``model``."""
        rows = self.db.read("SELECT item_id, text_hash FROM embeddings WHERE model = ?", (model,))
        return dict(rows)

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
            iid: None if f is None else item_row(iid, f)[1] for iid, f in (pending or {}).items()
        }
        # items, then events, each read under the lock and made a frame outside it (an event
        # of an item added in between names an item the frame lacks: histories skip it)
        if self.catalogue_copy is not None and not changes:
            rows_of = partial(catalogue.all_items, self.db)
            frame, skipped_items = self.catalogue_copy.read(self.db, rows_of, items_frame)
        else:
            items = catalogue.all_items(self.db)
            if changes:
                kept = [(iid, changes.get(iid, text)) for iid, text in items]
                items = [(iid, text) for iid, text in kept if text is not None]
                present = {iid for iid, _ in kept}
                items += [
                    (iid, t) for iid, t in changes.items() if t is not None and iid not in present
                ]
            frame, skipped_items = items_frame(items)
            del items
        if self.log_copy is not None:
            events_frame, skipped_events = self.log_copy.read(
                self.db, log.COLUMNS, log.events_frame
            )
        else:
            events_frame, skipped_events = log.events_frame(
                self.db.read(f"SELECT {log.COLUMNS} FROM events ORDER BY id")
            )
        gone = skipped_items + [iid for iid, t in changes.items() if t is None]
        if gone:
            events_frame = events_frame[~events_frame["item_id"].isin(gone)].reset_index(drop=True)
        self.skipped = {"items": len(skipped_items), "events": skipped_events}
        if skipped_items or skipped_events:
            logger.warning(
                "%s: skipped %d item rows and %d event rows that cannot be served (first "
                "item: %r); fix or delete them (PUT or DELETE /items/ID)",
                self.location,
                len(skipped_items),
                skipped_events,
                skipped_items[0][:80] if skipped_items else None,
            )
        return Dataset(frame, events_frame, name=name or self.db.name)

    def counts(self) -> dict[str, int]:
        """Numbers of items, events, distinct users, ingests, embedding records and searches."""
        scalar = self.db.scalar
        return {
            "items": scalar("SELECT COUNT(*) FROM items"),
            "events": scalar("SELECT COUNT(*) FROM events"),
            "users": scalar("SELECT COUNT(DISTINCT user_id) FROM events"),
            "ingests": scalar("SELECT COUNT(*) FROM ingests"),
            "embeddings": scalar("SELECT COUNT(*) FROM embeddings"),
            "searches": scalar("SELECT COUNT(*) FROM searches"),
        }
