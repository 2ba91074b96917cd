"""The behaviour log's SQL: events (each under its key) and searches that led to no item.

The writes take an open transaction (:meth:`Database.transaction
<promptrec.store.database.Database.transaction>`), so that a caller can write events together
with rows of its own in one commit (the service writes the clicks' attributions so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.limits import text_problem
from promptrec.errors import DataError
from promptrec.store import copies
from promptrec.store.database import Database
from promptrec.store.events import Event, event_keys

COLUMNS = "user_id, item_id, timestamp, event, value, query"
_INSERT = (
    f"INSERT INTO events(event_key, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(event_key) DO NOTHING"
)


class UnknownItemError(DataError):
    """Events whose item is neither stored nor added with them (``row``: the first one's
    position, 1-based among the events given, or its file line)."""


def check_known_items(
    db: Database,
    rows: Sequence[Event],
    *,
    lines: np.ndarray | None = None,
    batch_ids: set[str] | frozenset[str] = frozenset(),
    source: str | None = None,
) -> None:
    """An :class:`UnknownItemError` naming the first event whose item is neither stored nor in
    ``batch_ids`` (items written in the same transaction).

    Runs inside the write transaction (an item deleted meanwhile cannot slip through), by key
    lookups of the batch's items: its cost follows the batch, not the catalogue."""
    wanted = {e.item_id for e in rows if e.item_id is not None} - set(batch_ids)
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
        raise UnknownItemError(
            f"{len(bad)} events refer to items neither in the store nor in this "
            f"batch (first: item {rows[first].item_id!r})",
            file=source,
            row=int(lines[first]) if lines is not None else first + 1,
            column="item_id",
            expected="items added before or with their events",
        )


def insert_events(db: Database, rows: Sequence[Event]) -> dict[int, str]:
    """Store the events with an item (those already stored, by key, are skipped) and the
    searches without one; returns ``position -> event key`` of the events newly stored."""
    items = [(pos, e) for pos, e in enumerate(rows) if e.item_id is not None]
    keys = event_keys([e for _, e in items])
    added = {
        pos: key
        for (pos, e), key in zip(items, keys, strict=True)
        if db.execute(_INSERT, (key, *e)).rowcount
    }
    db.executemany(
        "INSERT INTO searches(user_id, query, timestamp) VALUES (?, ?, ?)",
        [(e.user_id, e.query, float(e.timestamp)) for e in rows if e.item_id is None],
    )
    return added


def insert_many(db: Database, rows: Sequence[Event]) -> int:
    """:func:`insert_events` for a large batch of events that all have an item (an ingest):
    one statement for all of them; returns how many were new."""
    keyed = [(key, *e) for key, e in zip(event_keys(rows), rows, strict=True)]
    return db.executemany(_INSERT, keyed)


def delete_user(db: Database, user_id: str) -> dict[str, int]:
    """Delete a user's events and searches; how many of each went. The log's copy on disk goes
    too, once the transaction commits."""
    uid = (str(user_id),)
    copies.discard_log(db)
    return {
        "events": db.execute("DELETE FROM events WHERE user_id = ?", uid).rowcount,
        "searches": db.execute("DELETE FROM searches WHERE user_id = ?", uid).rowcount,
    }


def user_history(
    db: Database, user_id: str, limit: int
) -> list[tuple[str, float, str, float, str | None]]:
    """A user's newest ``limit`` events, oldest first: ``(item_id, timestamp, event, value,
    query)`` (NaN for no value). One indexed query: what every request reads."""
    rows = db.read(
        "SELECT item_id, timestamp, event, value, query FROM events WHERE user_id = ? "
        "ORDER BY timestamp DESC, id DESC LIMIT ?",
        (str(user_id), int(limit)),
    )
    out = []
    for item, stamp, kind, value, query in reversed(rows):
        if not isinstance(stamp, int | float) or not math.isfinite(stamp):
            continue  # a row the checks never saw: skipped, as Store.dataset() does
        value = float(value) if isinstance(value, int | float) else math.nan
        out.append((str(item), float(stamp), str(kind), value, query))
    return out


def is_storable_text(value: object) -> bool:
    return isinstance(value, str) and text_problem(value, 1 << 20) is None


def is_storable_id(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip()) and is_storable_text(value)


def latest_search(db: Database, user_id: str) -> tuple[str, float] | None:
    """The user's newest search with no item ``(query, timestamp)``, or None (a blank query
    stored by an older promptrec is none)."""
    rows = db.read(
        "SELECT query, timestamp FROM searches WHERE user_id = ? "
        "ORDER BY timestamp DESC, id DESC LIMIT 1",
        (str(user_id),),
    )
    if not rows or not is_storable_id(rows[0][0]) or not isinstance(rows[0][1], int | float):
        return None
    return str(rows[0][0]).strip(), float(rows[0][1])


def searches(db: Database, user_id: str | None = None) -> list[tuple[str, str, float]]:
    """``(user_id, query, timestamp)`` of searches with no item, oldest first."""
    sql = "SELECT user_id, query, timestamp FROM searches"
    params: tuple = ()
    if user_id is not None:
        sql, params = sql + " WHERE user_id = ?", (str(user_id),)
    rows = db.read(sql + " ORDER BY id", params)
    # rows the checks never saw (a hand edit, an older version) are skipped, never fatal
    return [
        (u, q, float(t))
        for u, q, t in rows
        if is_storable_id(u)
        and is_storable_text(q)
        and isinstance(t, int | float)
        and math.isfinite(t)
    ]


def events_frame(rows: Sequence[tuple]) -> tuple[pd.DataFrame, int]:
    """The log frame of stored event rows (:data:`COLUMNS`), and how many rows were skipped
    as unservable (no usable user, item or time)."""
    frame = pd.DataFrame(rows, columns=COLUMNS.split(", "))
    if not len(frame):
        frame["timestamp"] = frame["timestamp"].astype("float64")
        frame["value"] = frame["value"].astype("float64")
        return frame, 0
    stamps = pd.to_numeric(frame["timestamp"], errors="coerce").astype("float64")
    values = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    ids_ok = _each_unique(frame["user_id"], is_storable_id) & _each_unique(
        frame["item_id"], is_storable_id
    )
    keep = ids_ok & np.isfinite(stamps.to_numpy())
    frame["timestamp"], frame["value"] = stamps, values.where(np.isfinite(values))
    skipped = int((~keep).sum())
    return (frame[keep].reset_index(drop=True) if skipped else frame), skipped


def _each_unique(column: pd.Series, check: Callable[[Any], bool]) -> np.ndarray:
    """``check`` of each row's value, computed once per distinct value (a log of millions of
    events has far fewer users and items)."""
    uniques = pd.unique(column.to_numpy(dtype=object))
    good = {value for value in uniques if check(value)}
    return column.isin(good).to_numpy(dtype=bool)
