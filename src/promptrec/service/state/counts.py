"""Online counts per arm, model version and strategy: lists served, and lists with a click, a
cart or a purchase, in total and per minute.

Kept as lists are served and clicked (:func:`count`), so that reading them does not grow with
the number of stored lists, and so that they outlive the lists' retention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptrec.store.database import Database

SERIES_SECONDS = 60.0  # the time resolution of the online counts per arm
COUNTED = {"click": "clicks", "cart": "carts", "purchase": "purchases"}  # lists with one
KEY = "arm, model_version, strategy"


def count(
    db: Database, column: str, lists: Sequence[tuple[str, str, str, float]], sign: int = 1
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
        ("online_totals", KEY, totals),
        ("online_series", f"bucket, {KEY}", series),
    ):
        marks = ", ".join("?" * (conflict.count(",") + 2))
        db.executemany(
            f"INSERT INTO {table}({conflict}, {column}) VALUES ({marks}) "
            f"ON CONFLICT({conflict}) DO UPDATE SET "
            f"{column} = {table}.{column} + excluded.{column}",
            [(*key, n) for key, n in counts.items()],
        )


def recount(db: Database, where: str, params: tuple, sign: int, *, lists: bool = True) -> None:
    """Add ``sign`` times the stored lists chosen by ``where`` (on ``impressions i``; the
    lists themselves only with ``lists``), and their clicks, carts and purchases (one each at
    most), to the online counts."""
    listed = "i.arm, i.model_version, i.strategy, i.at"
    if lists:
        found = db.execute(f"SELECT {listed} FROM impressions i {where}", params).fetchall()
        count(db, "impressions", [tuple(r) for r in found], sign)
    for event, column in COUNTED.items():
        joined = f"{where} AND" if where else "WHERE"
        hit = db.execute(
            f"SELECT {listed} FROM impressions i {joined} EXISTS (SELECT 1 FROM attributions "
            "a WHERE a.request_id = i.request_id AND a.event = ?)",
            (*params, event),
        ).fetchall()
        count(db, column, [tuple(r) for r in hit], sign)


def fill_if_missing(db: Database) -> None:
    """Fill the counts from the stored lists where a store kept lists but no counts (one
    written before the counts existed): no list is served without counting it."""
    if db.execute("SELECT 1 FROM online_totals LIMIT 1").fetchone() is None:
        if db.execute("SELECT 1 FROM impressions LIMIT 1").fetchone() is not None:
            recount(db, "", (), 1)


def online_stats(
    db: Database,
    *,
    bucket_seconds: float | None = None,
    since: float | None = None,
    unwritten: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """Served lists and the events attributed to them per arm, model version and strategy
    (and per time bucket of ``bucket_seconds`` when given, from ``since`` on):
    ``impressions``, ``clicks``, ``carts``, ``purchases`` (lists with at least one),
    ``ctr`` (clicked lists / lists) and ``conversion`` (lists with a purchase / lists).

    A bucket is the time the list was served; buckets are at least ``SERIES_SECONDS`` wide.
    ``unwritten`` are :class:`~promptrec.service.state.served.Impression` lists served but not
    stored yet (the service's buffer): they count as served, bucketed as if stored (their
    feedback, if any, flushed them first).
    """
    sums = "SUM(impressions), SUM(clicks), SUM(carts), SUM(purchases)"
    size = max(float(bucket_seconds), SERIES_SECONDS) if bucket_seconds else None
    if size is not None:
        when = db.bucket("bucket", size)
        sql = f"SELECT {KEY}, {when} AS b, {sums} FROM online_series"
        params: tuple = ()
        if since is not None:
            sql, params = sql + " WHERE bucket >= ?", (float(since) // size * size,)
        rows = db.read(sql + f" GROUP BY {KEY}, b", params)
    else:
        rows = db.read(f"SELECT {KEY}, NULL, {sums} FROM online_totals GROUP BY {KEY}")
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
