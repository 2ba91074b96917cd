"""Behaviour events as the store keeps them: one typed :class:`Event`, its checks and its key.

An event reaches the store by one of two roads, each checked once:

* rows (:class:`Event`): what the service and the Python API write. The HTTP edge turns each
  request event into one with :func:`new_event` (its time in seconds, its query stripped);
  :func:`check_event_rows` checks them, one row at a time, naming the first bad row and field.
* frames: a file's events, normalised by :func:`~promptrec.data.readers.events_from_frame`
  and checked column by column by :func:`check_events` (a million rows in about a second).

Both apply the limits of :mod:`promptrec.data.limits`. Events are keyed by a hash of their
content plus their occurrence number within the batch (:func:`event_keys`), so re-ingesting the
same file adds nothing while genuine repeats inside one file (the same user viewing the same item
twice at the same second) are kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd

from promptrec.data.dataset import DEFAULT_EVENT, live_query
from promptrec.data.limits import (
    MAX_ID_LENGTH,
    MAX_QUERY_LENGTH,
    number_problem,
    text_problem,
    timestamp_problem,
    to_seconds,
)
from promptrec.data.readers import events_from_frame, file_positions
from promptrec.errors import DataError

SEARCH = "search"  # the event of a search; one with no item is kept as the user's context
EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "event", "value", "query")
TEXT_LIMITS = {
    "user_id": MAX_ID_LENGTH,
    "item_id": MAX_ID_LENGTH,
    "event": 64,
    "query": MAX_QUERY_LENGTH,
}


class Event(NamedTuple):
    """One behaviour event, the columns of a normalised log.

    ``item_id`` is None for a search that led to no item (``event="search"`` with a
    ``query``): the store keeps it as the user's context (their next lists answer it).
    """

    user_id: str
    item_id: str | None
    timestamp: float
    event: str = DEFAULT_EVENT
    value: float | None = None
    query: str | None = None

    @property
    def is_search(self) -> bool:
        """A search with no item (kept apart from the log of items)."""
        return self.item_id is None


@dataclass(frozen=True)
class EventWrite:
    """What one write of events did.

    Attributes:
        added: events newly stored.
        duplicates: events already stored (same key), skipped.
        searches: searches with no item stored.
        added_rows: positions (among the given events) of the newly stored ones.
        replayed: True when the request's idempotency key was seen before: nothing was written
            and the counts are those of the first request.
    """

    added: int
    duplicates: int
    searches: int = 0
    added_rows: tuple[int, ...] = ()
    replayed: bool = False


@dataclass(frozen=True)
class CheckedEvents:
    """Events checked once (:func:`checked`), ready for any write: the rows, their file lines
    (None: rows counted from 1) and their source (for messages)."""

    rows: tuple[Event, ...]
    lines: np.ndarray | None = None
    source: str | None = None


def checked(events: pd.DataFrame | Sequence[Event] | CheckedEvents) -> CheckedEvents:
    """Events as the store takes them, checked once: a frame is normalised
    (:func:`~promptrec.data.readers.events_from_frame`) and checked by :func:`check_events`;
    rows by :func:`check_event_rows`; events checked before pass as they are.

    Raises:
        DataError: naming the first bad row (or file line) and column.
    """
    if isinstance(events, CheckedEvents):
        return events
    if isinstance(events, pd.DataFrame):
        source = events.attrs.get("source")
        if not len(events):
            return CheckedEvents((), None, source)
        frame = events_from_frame(events)
        check_events(frame, source)
        return CheckedEvents(tuple(events_as_rows(frame)), file_positions(frame)[0], source)
    rows = tuple(events)
    check_event_rows(rows)
    return CheckedEvents(rows)


def write_of(rows: Sequence[Event], added: Sequence[int]) -> EventWrite:
    """The account of a write of ``rows`` whose events at positions ``added`` were new."""
    searches = sum(1 for e in rows if e.item_id is None)
    return EventWrite(len(added), len(rows) - searches - len(added), searches, tuple(added))


def new_event(
    user_id: str,
    item_id: str | None,
    event: str,
    *,
    timestamp: float | datetime | None,
    value: float | None = None,
    query: str | None = None,
    now: float,
) -> Event:
    """An event as the store takes it, from what a client sent: its time in seconds (``now``
    when it gave none; a datetime without a zone is UTC), its query stripped (a blank one is
    none). Nothing is checked here (:func:`check_event_rows` does, once).

    Raises:
        DataError: a time that is no moment at all (a datetime out of range), naming the
            column.
    """
    if timestamp is None:
        seconds = now
    elif isinstance(timestamp, datetime):
        try:
            seconds = to_seconds(timestamp, "timestamp", check=False)
        except ValueError as exc:
            raise DataError(str(exc).removeprefix("timestamp: "), column="timestamp") from None
    else:
        seconds = float(timestamp)
    return Event(user_id, item_id, seconds, event, value, live_query(query))


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


def _id_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "empty id"
    if value != value.strip():
        return f"an id may not start or end with spaces ({value[:40]!r})"
    return text_problem(value, MAX_ID_LENGTH)


def _row_problem(e: Event, now: float) -> tuple[str, str] | None:
    """``(column, problem)`` of the first thing wrong with one event, or None."""
    if not isinstance(e.timestamp, int | float) or isinstance(e.timestamp, bool):
        return "timestamp", "not a number of seconds"
    problem = timestamp_problem(float(e.timestamp), now)
    if problem:
        return "timestamp", problem
    if e.value is None and e.event == "rating":
        return "value", "a rating event needs a value"
    if e.value is not None:
        if not isinstance(e.value, int | float):
            return "value", "not a number"
        problem = number_problem(e.value)
        if problem:
            return "value", problem
    problem = _id_problem(e.user_id)
    if problem:
        return "user_id", problem
    if not isinstance(e.event, str) or not e.event.strip():
        return "event", "empty event type"
    problem = text_problem(e.event, TEXT_LIMITS["event"])
    if problem:
        return "event", problem
    if e.query is not None:
        if not isinstance(e.query, str) or not e.query.strip():
            return "query", "blank (give no query instead)"
        problem = text_problem(e.query, MAX_QUERY_LENGTH)
        if problem:
            return "query", problem
    if e.item_id is None:
        if e.event != SEARCH:
            return "item_id", "required (only a search with a query may have no item)"
        if e.query is None:
            return "query", "a search with no item needs a query (it is missing or blank)"
        return None
    problem = _id_problem(e.item_id)
    return ("item_id", problem) if problem else None


def check_event_rows(rows: Sequence[Event], source: str | None = None) -> None:
    """Refuse :class:`Event` rows the store cannot keep (:mod:`promptrec.data.limits`),
    naming the first bad row (1-based) and its column.

    Raises:
        DataError: with ``row`` and ``column`` set.
    """
    now = time.time()
    for n, e in enumerate(rows, start=1):
        found = _row_problem(e, now)
        if found is not None:
            column, problem = found
            raise DataError(problem, file=source, row=n, column=column)


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
    for column, limit in TEXT_LIMITS.items():
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
