"""Items as the store keeps them: each one's fields as one JSON object, and back as a frame.

Fields are checked when they are written (:func:`item_fields`); a stored row is read back with
only the checks that keep a catalogue servable (:func:`items_frame`): a row written by hand or by
an older promptrec that cannot be served is skipped, never fatal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.limits import check_fields, check_id, number_problem
from promptrec.errors import DataError

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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


def fields_json(fields: Mapping[str, Any]) -> str:
    """:func:`item_fields` as the JSON text the items table holds."""
    return json.dumps(item_fields(fields), ensure_ascii=False, allow_nan=False)


def item_row(item_id: Any, fields: Mapping[str, Any]) -> tuple[str, str]:
    """``(item_id, fields JSON)`` as stored, or a DataError naming the field."""
    item_id = str(item_id).strip()
    try:
        check_id(item_id, "item_id")
        return item_id, fields_json(fields)
    except ValueError as exc:
        column = "item_id" if str(exc).startswith("item_id") else None
        raise DataError(str(exc), column=column, expected="values the store can keep") from None


def stored_text(item_id: Any, fields: Mapping[str, Any]) -> str:
    """An item's fields as the store keeps them (what :meth:`Store.item_text
    <promptrec.store.store.Store.item_text>` reads back)."""
    return item_row(item_id, fields)[1]


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


def items_frame(rows: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame, list[str]]:
    """The catalogue frame of stored ``(item_id, fields JSON)`` rows, and the ids of the rows
    that were skipped as unservable."""
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


def new_items_frame(changes: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Catalogue rows for items not yet stored, exactly as the store will read them back once
    they are (``item_id -> fields``).

    Raises:
        DataError: a field the store could not keep.
    """
    frame, skipped = items_frame([item_row(iid, f) for iid, f in changes.items()])
    if skipped:  # pragma: no cover - what item_row accepts is always servable
        raise DataError(f"item {skipped[0]!r} could not be served", column="item_id")
    return frame
