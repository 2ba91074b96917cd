"""Served lists and the feedback attributed to them.

Each list served is an :class:`Impression` (written in batches by the service's
:class:`~promptrec.service.impressions.ImpressionLog`); a click, cart or purchase that answers
one is an attribution, written in the transaction that stores the event. Both keep the online
counts (:mod:`promptrec.service.state.counts`) up to date as they are written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from promptrec.service.state import counts
from promptrec.store.database import Database

_COLUMNS = "request_id, user_id, arm, model_version, strategy, items, at"


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


def record(db: Database, impressions: Sequence[Impression]) -> None:
    """Store served lists (a retried request id is ignored) and count them."""
    new = [
        imp
        for imp in impressions
        if db.execute(
            f"INSERT INTO impressions({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(request_id) DO NOTHING",
            (
                imp.request_id,
                imp.user_id,
                imp.arm,
                imp.model_version,
                imp.strategy,
                json.dumps(imp.items),
                imp.at,
            ),
        ).rowcount
    ]
    counts.count(db, "impressions", [(i.arm, i.model_version, i.strategy, i.at) for i in new])
    if new:  # feedback recorded before its list was stored counts now
        ids = tuple(i.request_id for i in new)
        marks = ", ".join("?" * len(ids))
        counts.recount(db, f"WHERE i.request_id IN ({marks})", ids, 1, lists=False)


def _impression(row: Sequence) -> Impression:
    return Impression(*row[:5], tuple(json.loads(row[5])), row[6])


def of_user(db: Database, user_id: str, limit: int = 20) -> list[Impression]:
    """A user's most recent served lists, newest first."""
    rows = db.read(
        f"SELECT {_COLUMNS} FROM impressions WHERE user_id = ? ORDER BY at DESC LIMIT ?",
        (str(user_id), int(limit)),
    )
    return [_impression(r) for r in rows]


def by_request(db: Database, request_id: str) -> Impression | None:
    """One served list by its request id (None when unknown)."""
    rows = db.read(f"SELECT {_COLUMNS} FROM impressions WHERE request_id = ?", (str(request_id),))
    return _impression(rows[0]) if rows else None


def attribute(db: Database, rows: Sequence[tuple[str, str, str, str, float]]) -> None:
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
        if row[3] in counts.COUNTED and pair not in seen:
            seen.add(pair)
            n = db.execute(
                "SELECT COUNT(*) FROM attributions WHERE request_id = ? AND event = ?", pair
            ).fetchone()[0]
            if n == 1:
                firsts.append(pair)
    for event, column in counts.COUNTED.items():
        lists = [
            tuple(r)
            for rid, kind in firsts
            if kind == event
            for r in db.execute(
                f"SELECT {counts.KEY}, at FROM impressions WHERE request_id = ?", (rid,)
            ).fetchall()
        ]
        counts.count(db, column, lists)


def forget_user(db: Database, user_id: str) -> dict[str, int]:
    """Delete a user's served lists and every attribution of theirs (of their lists, or of
    their events), taking their share out of the online counts."""
    uid = str(user_id)
    counts.recount(db, "WHERE i.user_id = ?", (uid,), -1)
    attributions = db.execute(
        "DELETE FROM attributions WHERE request_id IN "
        "(SELECT request_id FROM impressions WHERE user_id = ?) OR event_key IN "
        "(SELECT event_key FROM events WHERE user_id = ?)",
        (uid, uid),
    ).rowcount
    gone = db.execute("DELETE FROM impressions WHERE user_id = ?", (uid,)).rowcount
    return {"impressions": gone, "attributions": attributions}
