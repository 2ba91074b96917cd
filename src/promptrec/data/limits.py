"""What the store accepts: one set of limits for every value it keeps, checked at every boundary.

The HTTP API (its pydantic models), :meth:`Store.ingest <promptrec.store.Store.ingest>`,
:meth:`Store.add_events <promptrec.store.Store.add_events>` and
:meth:`Store.upsert_item <promptrec.store.Store.upsert_item>` all check values with the
functions here, so a value that one of them accepts can be stored, read back and served by every
backend (SQLite and PostgreSQL), and a value that one refuses is refused by all of them, with a
message naming the field.

* **Text** (ids, queries, item fields and field names): valid Unicode (no lone surrogate, which
  UTF-8 cannot encode), no NUL character (PostgreSQL's text type cannot hold one), and a
  bounded length.
* **Numbers**: finite; integers within 64 bits (what the store's integer columns hold); other
  numbers within ``±MAX_ABS_NUMBER``.
* **Timestamps** (seconds since 1970-01-01 UTC): from the epoch to at most
  ``FUTURE_SLACK_SECONDS`` after now (clock skew), never a date far in the future.
* **Item fields**: at most ``MAX_FIELDS`` per item, lists (of lists) at most ``MAX_DEPTH``
  deep and ``MAX_LIST_LENGTH`` long, objects (of text keys) as deep; scalars are text, numbers,
  booleans or null.

A problem is a :class:`ValueError` whose message starts with where the value is (``title``,
``events[3].timestamp``...); callers turn it into a 422 or a :class:`~promptrec.errors.DataError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

MAX_ID_LENGTH = 256
MAX_QUERY_LENGTH = 1000
MAX_TEXT_LENGTH = 65_536  # one item field's text
MAX_FIELD_NAME_LENGTH = 128
MAX_FIELDS = 256
MAX_DEPTH = 3
MAX_LIST_LENGTH = 1000
MAX_ABS_NUMBER = 1e15  # beyond it no rating, price or count is meant (and doubles lose cents)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EARLIEST_TIMESTAMP = 0.0  # 1970-01-01T00:00:00Z
FUTURE_SLACK_SECONDS = 86_400.0


def latest_timestamp(now: float | None = None) -> float:
    """The latest timestamp accepted now: the clock plus :data:`FUTURE_SLACK_SECONDS`."""
    return (time.time() if now is None else now) + FUTURE_SLACK_SECONDS


def text_problem(value: str, max_length: int) -> str | None:
    """Why ``value`` cannot be stored as text (None when it can)."""
    if len(value) > max_length:
        return f"longer than {max_length} characters ({len(value)})"
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"is not valid Unicode: a lone surrogate {value[exc.start]!r} at character "
                f"{exc.start} (send the character itself, or a surrogate pair)"
            )
    return None


def check_text(value: str, where: str, *, max_length: int = MAX_TEXT_LENGTH) -> str:
    """``value`` if it can be stored as text; else a ValueError naming ``where``."""
    problem = text_problem(value, max_length)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return value


def check_id(value: str, where: str) -> str:
    """A user or item id: non-blank storable text of at most :data:`MAX_ID_LENGTH`."""
    if not value.strip():
        raise ValueError(f"{where}: empty id")
    if value != value.strip():
        raise ValueError(f"{where}: an id may not start or end with spaces ({value[:40]!r})")
    return check_text(value, where, max_length=MAX_ID_LENGTH)


def number_problem(value: float | int) -> str | None:
    """Why a number cannot be stored (None when it can)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return f"integer {value} is outside the 64-bit range (send it as a string)"
        return None
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    if abs(value) > MAX_ABS_NUMBER:
        return f"{value:g} is beyond ±{MAX_ABS_NUMBER:g}"
    return None


def check_number(value: float | int, where: str) -> float | int:
    """``value`` if it is a storable number; else a ValueError naming ``where``."""
    problem = number_problem(value)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return value


def timestamp_problem(seconds: float, now: float | None = None) -> str | None:
    """Why ``seconds`` (since the epoch) is not a plausible event time (None when it is)."""
    if not math.isfinite(seconds):
        return f"{seconds} is not a finite time"
    if seconds < EARLIEST_TIMESTAMP:
        return f"{seconds:g} is before 1970-01-01"
    latest = latest_timestamp(now)
    if seconds > latest:
        when = datetime.fromtimestamp(latest, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{seconds:g} is in the future (at most {when}, one day from now)"
    return None


def to_seconds(
    value: float | int | datetime, where: str, now: float | None = None, *, check: bool = True
) -> float:
    """An event time (seconds since the epoch, or a datetime: naive ones are UTC) as float
    seconds, checked to be plausible unless ``check`` is False; a ValueError naming ``where``
    when it is out of range."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError(f"{where}: {value.isoformat()} is out of range") from None
    else:
        seconds = float(value)
    problem = timestamp_problem(seconds, now) if check else None
    if problem:
        raise ValueError(f"{where}: {problem}")
    return seconds


def field_problem(value: Any, depth: int = 0) -> str | None:
    """Why an item field's value cannot be stored (None when it can)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return text_problem(value, MAX_TEXT_LENGTH)
    if isinstance(value, int | float):
        return number_problem(value)
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            return f"lists nested deeper than {MAX_DEPTH}"
        if len(value) > MAX_LIST_LENGTH:
            return f"a list longer than {MAX_LIST_LENGTH} ({len(value)})"
        for n, element in enumerate(value):
            problem = field_problem(element, depth + 1)
            if problem:
                return f"[{n}] {problem}"
        return None
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            return f"objects nested deeper than {MAX_DEPTH}"
        if len(value) > MAX_FIELDS:
            return f"an object with more than {MAX_FIELDS} keys ({len(value)})"
        for key, element in value.items():
            if not isinstance(key, str):
                return f"key {key!r} is not text"
            problem = text_problem(key, MAX_FIELD_NAME_LENGTH) or field_problem(element, depth + 1)
            if problem:
                return f"[{key[:40]!r}] {problem}"
        return None
    return (
        f"a {type(value).__name__} (expected text, a number, true/false, null, a list or an object)"
    )


def check_fields(fields: Mapping[str, Any], where: str = "") -> Mapping[str, Any]:
    """An item's fields, if every name and value can be stored; else a ValueError naming the
    first bad field (``where`` prefixes it, e.g. ``"item 'x': "``)."""
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"{where}{len(fields)} fields; at most {MAX_FIELDS}")
    for name, value in fields.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}field name {name!r}: expected non-empty text")
        problem = text_problem(name, MAX_FIELD_NAME_LENGTH)
        if problem:
            raise ValueError(f"{where}field name {name[:40]!r}: {problem}")
        problem = field_problem(value)
        if problem:
            raise ValueError(f"{where}{name}: {problem}")
    return fields
