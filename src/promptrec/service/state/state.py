"""The service's room in the store: its tables, on the store's connection and transactions.

A :class:`ServiceState` writes what only a service has (served lists, attributions, idempotency
keys, online counts, the catalogue's change log, the service lock) and the writes that touch
both rooms in one transaction: feedback (the events and their attributions), catalogue changes
(the item and its entry in the change log), forgetting a user (their events, searches, lists and
attributions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from promptrec.service.state import counts, served
from promptrec.service.state.group import GroupCommit
from promptrec.service.state.lock import ServiceLock
from promptrec.service.state.schema import SCHEMA
from promptrec.service.state.served import Impression
from promptrec.store import Store, catalogue, log
from promptrec.store.database import Database
from promptrec.store.events import CheckedEvents, Event, EventWrite, checked, write_of
from promptrec.store.items import item_row

_LOG_CHANGE = "INSERT INTO catalogue_changes(item_id, at) VALUES (?, ?)"


class ServiceState:
    """The service's tables on ``store`` (made when missing).

    Args:
        store: the store the service serves.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.lock = ServiceLock(store)
        #: feedback's writes share their commits (group commit)
        self.group = GroupCommit(self.db)
        try:
            with self.db.transaction() as db:
                db.create(SCHEMA)
                counts.fill_if_missing(db)
        except self.db.errors as exc:
            raise self.db.open_error(exc) from exc

    # ------------------------------------------------------------------ the lock
    def claim(self, owner: str) -> None:
        """Take the store's service lock (:class:`~promptrec.service.state.lock.ServiceLock`)."""
        self.lock.claim(owner)

    def release(self) -> None:
        self.lock.release()

    # ------------------------------------------------------------------ feedback
    def add_feedback(
        self,
        events: pd.DataFrame | Sequence[Event] | CheckedEvents,
        *,
        attributions: Mapping[int, str] | None = None,
        idempotency_key: str | None = None,
    ) -> EventWrite:
        """Add events (searches with no item among them) in one transaction with their
        attributions to served lists: a transaction shared with the writes of requests that
        arrive together (:class:`~promptrec.service.state.group.GroupCommit`), each in its own
        savepoint; it returns once the transaction is on disk.

        Args:
            events: as :meth:`Store.add_events <promptrec.store.Store.add_events>` takes them
                (the service checks them first, to attribute them: then they are not checked
                again).
            attributions: ``row -> request_id`` of the served list an event answers; written
                only for events that are new.
            idempotency_key: a key of the client's choosing: a retried request with the same
                key writes nothing and gets the first request's counts back.

        Raises:
            DataError: invalid events or an item not in the store; nothing is written then.
        """
        return self.group.run(self._feedback_write(events, attributions, idempotency_key))

    async def add_feedback_async(
        self,
        events: pd.DataFrame | Sequence[Event] | CheckedEvents,
        *,
        attributions: Mapping[int, str] | None = None,
        idempotency_key: str | None = None,
    ) -> EventWrite:
        """:meth:`add_feedback` for a coroutine: it awaits the shared commit without holding a
        thread (``POST /events``)."""
        return await self.group.submit(self._feedback_write(events, attributions, idempotency_key))

    def _feedback_write(
        self,
        events: pd.DataFrame | Sequence[Event] | CheckedEvents,
        attributions: Mapping[int, str] | None,
        idempotency_key: str | None,
    ) -> Callable[[Database], EventWrite]:
        """:meth:`add_feedback`'s write, for the group commit (the events checked first, in
        the caller's thread)."""
        batch = checked(events)
        given = attributions or {}
        return lambda db: self._feedback(db, batch, given, idempotency_key)

    @staticmethod
    def _feedback(
        db: Database,
        batch: CheckedEvents,
        attributions: Mapping[int, str],
        idempotency_key: str | None,
    ) -> EventWrite:
        """:meth:`add_feedback`'s write, inside its transaction."""
        rows = batch.rows
        if idempotency_key is not None:
            seen = db.execute(
                "SELECT response FROM idempotency WHERE key = ?", (idempotency_key,)
            ).fetchone()
            if seen is not None:
                first = json.loads(seen[0])
                return EventWrite(
                    first["added"], first["duplicates"], first.get("searches", 0), (), True
                )
        log.check_known_items(db, rows, lines=batch.lines, source=batch.source)
        added = log.insert_events(db, rows)
        now = time.time()
        served.attribute(
            db,
            [
                (key, str(attributions[pos]), str(rows[pos].item_id), rows[pos].event, now)
                for pos, key in added.items()
                if pos in attributions
            ],
        )
        result = write_of(rows, sorted(added))
        if idempotency_key is not None:
            answer = {"added": result.added, "duplicates": result.duplicates}
            answer["searches"] = result.searches
            db.execute(
                "INSERT INTO idempotency(key, response, at) VALUES (?, ?, ?)",
                (idempotency_key, json.dumps(answer), now),
            )
        return result

    # ------------------------------------------------------------------ served lists
    def record_impressions(self, impressions: Sequence[Impression]) -> None:
        """Store served lists (a retried request id is ignored)."""
        with self.db.transaction() as db:
            served.record(db, impressions)

    def impressions(self, user_id: str, *, limit: int = 20) -> list[Impression]:
        """A user's most recent served lists, newest first."""
        return served.of_user(self.db, user_id, limit)

    def impression(self, request_id: str) -> Impression | None:
        """One served list by its request id (None when unknown)."""
        return served.by_request(self.db, request_id)

    def online_stats(
        self,
        *,
        bucket_seconds: float | None = None,
        since: float | None = None,
        unwritten: Sequence[Impression] = (),
    ) -> list[dict[str, Any]]:
        """Online counts per arm, model version and strategy
        (:func:`~promptrec.service.state.counts.online_stats`)."""
        return counts.online_stats(
            self.db, bucket_seconds=bucket_seconds, since=since, unwritten=unwritten
        )

    # ------------------------------------------------------------------ the catalogue
    def upsert_item(self, item_id: str, fields: Mapping[str, Any]) -> bool:
        """:meth:`Store.upsert_item <promptrec.store.Store.upsert_item>`, logged in the change
        log in the same transaction (the other engines on the store follow it)."""
        item_id, text = item_row(item_id, fields)
        with self.db.transaction() as db:
            new = catalogue.upsert_item(db, item_id, text)
            db.execute(_LOG_CHANGE, (item_id, time.time()))
        return new

    def delete_item(self, item_id: str) -> bool:
        """:meth:`Store.delete_item <promptrec.store.Store.delete_item>`, logged as a change."""
        with self.db.transaction() as db:
            removed = catalogue.delete_item(db, str(item_id))
            if removed:
                db.execute(_LOG_CHANGE, (str(item_id), time.time()))
        return removed

    def catalogue_version(self) -> int:
        """The number of the newest catalogue change (0 before any)."""
        return int(self.db.scalar("SELECT COALESCE(MAX(seq), 0) FROM catalogue_changes"))

    def catalogue_changes(self, since: int) -> list[tuple[int, str]]:
        """``(seq, item_id)`` of the catalogue changes after ``since``, oldest first.

        Raises:
            LookupError: changes after ``since`` were already pruned (:meth:`prune`): whoever
                follows them must read the catalogue again.
        """
        rows = self.db.read(
            "SELECT seq, item_id FROM catalogue_changes WHERE seq > ? ORDER BY seq",
            (int(since),),
        )
        if rows and rows[0][0] > since + 1:
            oldest = self.db.scalar("SELECT MIN(seq) FROM catalogue_changes")
            if oldest > since + 1:
                raise LookupError(f"catalogue changes {since + 1}..{oldest - 1} were pruned")
        return [(int(q), str(i)) for q, i in rows]

    # ------------------------------------------------------------------ users, retention
    def forget_user(self, user_id: str) -> dict[str, int]:
        """Forget a user: events, searches, served lists and their attributions, in one
        transaction. Returns how many rows of each were removed."""
        with self.db.transaction() as db:
            lists = served.forget_user(db, user_id)  # before the events its rows refer to
            rows = log.delete_user(db, user_id)
        return {**rows, **lists}

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
        ``changes_before`` (unix seconds; None keeps them), in transactions of at most
        ``batch`` rows so that writers wait little. The online counts are kept. Returns how
        many rows of each went."""
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
                with self.db.transaction() as db:
                    gone = db.execute(
                        f"DELETE FROM {table} WHERE {key} IN "
                        f"(SELECT {key} FROM {table} WHERE at < ?{newest} LIMIT ?)",
                        (float(before), batch),
                    ).rowcount
                removed[table] += gone
                if gone < batch:
                    break
        return removed

    def counts(self) -> dict[str, int]:
        """:meth:`Store.counts <promptrec.store.Store.counts>` and the served lists."""
        return {
            **self.store.counts(),
            "impressions": self.db.scalar("SELECT COUNT(*) FROM impressions"),
        }
