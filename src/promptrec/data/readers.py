"""Read a catalogue or a behaviour log from a file, and validate it.

Formats, chosen by the file's suffix: ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` (one JSON object
per line), ``.json`` (an array of objects) and ``.parquet``; ``.csv``, ``.tsv`` and ``.jsonl`` may
also be gzip-compressed (``events.csv.gz``).

Every problem is a :class:`~promptrec.errors.DataError` naming the file, the 1-based line as a
person counts lines (header included; for Parquet and JSON arrays the 1-based row/record number),
the column and what was expected. Validation is vectorised: a 200k-row log reads in about a
second.

The frames returned carry their positions in the file as the index (named ``"line"`` or
``"row"``) and the file's path in ``frame.attrs["source"]``, so later checks
(:func:`check_events_items`, :class:`~promptrec.store.Store`) can point at the line too.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from promptrec.data.dataset import normalise_events
from promptrec.errors import ConfigError, DataError

logger = logging.getLogger("promptrec")

EmptyText = Literal["warn", "error", "ignore"]
UnknownItems = Literal["drop", "error"]

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}
_GZIP_OK = {"csv", "tsv", "jsonl"}
SUPPORTED = ".csv, .tsv, .jsonl, .ndjson, .json, .parquet (.csv/.tsv/.jsonl may end in .gz)"

ITEM_ID_ALIASES = ("item_id", "id")
TIMESTAMP_ALIASES = ("timestamp", "ts", "time", "position")
VALUE_ALIASES = ("value", "rating")
_ID_COLUMNS = ("user_id", "item_id", "id")

_NUMERIC_TIME = "a number (unix seconds or milliseconds, or a position) or an ISO 8601 date/time"


# --------------------------------------------------------------------------- raw reading


def file_format(path: str | Path) -> tuple[str, bool]:
    """The format of ``path`` from its suffix, and whether it is gzip-compressed.

    Raises:
        DataError: the suffix is not one of :data:`SUPPORTED`.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (gz and fmt not in _GZIP_OK):
        raise DataError("unsupported file type", file=str(path), expected=SUPPORTED)
    return fmt, gz


def _column_at(raw: bytes, offset: int, sep: str, encoding: str) -> str | None:
    """The header name of the delimited field holding byte ``offset`` (quotes ignored)."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    if line_start == 0:
        return None  # the header itself
    field = raw[line_start:offset].count(sep.encode())
    header = raw[: raw.find(b"\n")].decode(encoding, errors="replace").rstrip("\r").split(sep)
    return header[field].strip().strip('"') if field < len(header) else None


def read_text(
    path: str | Path, encoding: str = "utf-8", *, gz: bool | None = None, sep: str | None = None
) -> str:
    """The whole file as text (gunzipped when it ends in ``.gz``), without a byte-order mark.

    Args:
        path: the file.
        encoding: its text encoding.
        gz: gzip-compressed (default: when the name ends in ``.gz``).
        sep: the delimiter of a file with a header line, to name the column of a bad byte.

    Raises:
        DataError: the file is missing, empty (or blank), not valid gzip, or has bytes that are
            not valid in ``encoding`` (the error names the line of the first bad byte).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a folder, not a file", file=str(path)) from None
    if gz is None:
        gz = path.suffix.lower() == ".gz"
    if gz:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"not a valid gzip file ({exc})", file=str(path)) from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"byte 0x{raw[exc.start]:02x} is not valid {encoding}; if the file uses another "
            "encoding, say which, e.g. --encoding latin-1 (encoding='latin-1' in Python)",
            file=str(path),
            row=line,
            column=None if sep is None else _column_at(raw, exc.start, sep, encoding),
            expected=f"{encoding} text",
        ) from None
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DataError("the file is empty", file=str(path), expected="a header and data rows")
    return text


def _data_lines(text: str, sep: str, header: bool, n_rows: int, quoting: int) -> np.ndarray:
    """1-based line number where each parsed data row starts, skipping blank lines as pandas does.

    Quoted fields may span lines, so files with quote characters go through :mod:`csv`, which
    counts physical lines; others are split on newlines. If the count disagrees with pandas
    (exotic layouts), fall back to "data row i is on line i+2" (i+1 without a header).
    """
    starts: list[int] = []
    if quoting == csv.QUOTE_NONE or '"' not in text:
        lines = text.split("\n")
        starts = [i + 1 for i, line in enumerate(lines) if line.strip()]
    else:
        reader = csv.reader(io.StringIO(text), delimiter=sep)
        previous = 0
        try:
            for record in reader:
                if any(cell.strip() for cell in record):
                    starts.append(previous + 1)
                previous = reader.line_num
        except csv.Error:
            starts = []
    if header:
        starts = starts[1:]
    if len(starts) != n_rows:
        return np.arange(n_rows, dtype=np.int64) + (2 if header else 1)
    return np.asarray(starts, dtype=np.int64)


def parse_delimited(
    text: str,
    sep: str,
    *,
    source: str,
    header: bool = True,
    names: list[str] | None = None,
    dtype: type | dict[str, type] | None = None,
    quoting: int = csv.QUOTE_MINIMAL,
) -> pd.DataFrame:
    """Parse delimited text; the index holds each row's line number (named ``"line"``).

    Only an empty field is missing (``"NA"`` or ``"null"`` stay text: they are real titles).
    """
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            names=names,
            dtype=dtype,
            keep_default_na=False,
            na_values=[""],
            quoting=quoting,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        found = re.search(r"line (\d+)", str(exc))
        row = int(found.group(1)) if found else None
        message = str(exc).replace("Error tokenizing data. C error: ", "").strip()
        raise DataError(f"cannot parse: {message}", file=source, row=row) from None
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty", file=source) from None
    frame.index = pd.Index(
        _data_lines(text, sep, header, len(frame), quoting), name="line", dtype=np.int64
    )
    frame.attrs["untyped"] = dtype is str  # every column read as text: types are unknown
    return frame


def _check_surrogates(record: dict, source: str, row: int) -> None:
    """A DataError when a field of ``record`` holds a lone surrogate (from a JSON escape such
    as ``\\ud800``): no UTF-8 text, file or database can hold one."""

    def bad(value: object) -> bool:
        if isinstance(value, str):
            return not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value)
        if isinstance(value, list):
            return any(bad(v) for v in value)
        if isinstance(value, dict):
            return any(bad(k) or bad(v) for k, v in value.items())
        return False

    for name, value in record.items():
        if bad(name) or bad(value):
            raise DataError(
                "not valid Unicode: a lone surrogate escape (\\ud800-\\udfff without its pair)",
                file=source,
                row=row,
                column=str(name).encode("utf-8", "replace").decode(),
                expected="text that UTF-8 can encode",
            )


def _read_json_lines(text: str, source: str) -> pd.DataFrame:
    records: list[dict] = []
    lines: list[int] = []
    loads = json.loads
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            record = loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON: {exc.msg} at character {exc.colno}",
                file=source,
                row=i + 1,
                expected="one JSON object per line",
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"a JSON {type(record).__name__}, not an object",
                file=source,
                row=i + 1,
                expected="one JSON object per line",
            )
        if "\\u" in line:  # an escape may spell a lone surrogate, which no text can hold
            _check_surrogates(record, source, i + 1)
        records.append(record)
        lines.append(i + 1)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame.index = pd.Index(lines, name="line", dtype=np.int64)
    return frame


def _read_json_array(text: str, source: str) -> pd.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON: {exc.msg} at character {exc.colno}",
            file=source,
            row=exc.lineno,
            expected="a JSON array of objects",
        ) from None
    if not isinstance(data, list):
        raise DataError(
            f"the top level is a JSON {type(data).__name__}",
            file=source,
            expected="a JSON array of objects",
        )
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(
                f"element is a JSON {type(record).__name__}, not an object",
                file=source,
                row=i + 1,
                expected="a JSON array of objects",
            )
    if "\\u" in text:
        for i, record in enumerate(data):
            _check_surrogates(record, source, i + 1)
    frame = pd.DataFrame.from_records(data) if data else pd.DataFrame()
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError("no such file", file=str(path)) from None
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    frame = frame.reset_index(drop=True)
    for col in frame.columns:
        if frame[col].dtype == object:  # list columns come back as numpy arrays
            frame[col] = frame[col].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


def read_table(
    path: str | Path, *, encoding: str = "utf-8", dtype: type | dict[str, type] | None = None
) -> pd.DataFrame:
    """Any supported file as a raw frame: index = line (or row) numbers, ``attrs["source"]``.

    Args:
        path: the file.
        encoding: text encoding (not used for Parquet).
        dtype: for CSV/TSV, passed to :func:`pandas.read_csv` (e.g. ``str`` for everything).

    Raises:
        DataError: unreadable file (see :func:`read_text`), bad JSON, or no data rows.
    """
    path = Path(path)
    source = str(path)
    fmt, gz = file_format(path)
    if fmt == "parquet":
        frame = _read_parquet(path)
    else:
        sep = {"csv": ",", "tsv": "\t"}.get(fmt)
        text = read_text(path, encoding, gz=gz, sep=sep)
        if fmt == "jsonl":
            frame = _read_json_lines(text, source)
        elif fmt == "json":
            frame = _read_json_array(text, source)
        else:
            frame = parse_delimited(text, sep, source=source, dtype=dtype)
    if len(frame) == 0:
        raise DataError("the file has no data rows", file=source, expected="at least one row")
    frame.attrs["source"] = source
    return frame


# --------------------------------------------------------------------------- validation


def file_positions(frame: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Each row's 1-based position in its file, and whether those are text lines (else rows).

    Frames from :func:`read_table` carry them as their index; any other frame counts rows.
    """
    if frame.index.name in ("line", "row"):
        return frame.index.to_numpy(dtype=np.int64), frame.index.name == "line"
    return np.arange(1, len(frame) + 1, dtype=np.int64), False


def _unit(is_line: bool) -> str:
    return "line" if is_line else "row"


def _source(frame: pd.DataFrame, source: str | Path | None) -> str | None:
    if source is not None:
        return str(source)
    found = frame.attrs.get("source")
    return None if found is None else str(found)


def _pick_column(
    frame: pd.DataFrame, aliases: tuple[str, ...], *, required: bool, source: str | None, what: str
) -> str | None:
    for name in aliases:
        if name in frame.columns:
            return name
    if not required:
        return None
    _, is_line = file_positions(frame)
    found = ", ".join(map(str, frame.columns)) or "none"
    also = f" (or {', '.join(aliases[1:])})" if len(aliases) > 1 else ""
    raise DataError(
        f"missing required column '{aliases[0]}'{also}; found columns: {found}",
        file=source,
        row=1 if is_line else None,
        column=aliases[0],
        expected=what,
    )


_CANONICAL_INT = r"(?:0|-?[1-9][0-9]{0,17})"


def ids_are_integers(values: pd.Series, untyped: bool = False) -> bool:
    """True when a raw id column holds whole numbers (exports give such ids back as ints).

    ``untyped``: the column came from a delimited text file read as strings, where ``"42"``
    is as much an integer as the file can say.
    """
    if untyped:
        text = values.dropna().astype(str).str.strip()
        return bool(len(text)) and bool(text.str.fullmatch(_CANONICAL_INT).all())
    if pd.api.types.is_integer_dtype(values.dtype):
        return True
    if pd.api.types.is_float_dtype(values.dtype):
        present = values.dropna().to_numpy()
        return bool(len(present)) and bool(np.all(np.mod(present, 1) == 0))
    return False


def ids_as_str(values: pd.Series) -> pd.Series:
    """Ids as stripped strings; missing stays NaN. Whole floats (``1.0``, from a column with
    gaps) become ``"1"``."""
    if pd.api.types.is_float_dtype(values.dtype):
        present = values.dropna()
        if len(present) and bool(np.all(np.mod(present.to_numpy(), 1) == 0)):
            values = values.astype("Int64")
    if not isinstance(values.dtype, pd.StringDtype):
        values = values.astype("str")
    return values.str.strip()


def _check_ids(ids: pd.Series, column: str, frame: pd.DataFrame, source: str | None) -> None:
    bad = (ids.isna() | (ids == "")).to_numpy()
    if bad.any():
        pos, is_line = file_positions(frame)
        first = int(np.argmax(bad))
        raise DataError(
            f"empty {column} ({int(bad.sum())} {_unit(is_line)}s in all)",
            file=source,
            row=int(pos[first]),
            column=column,
            expected="a non-empty id",
        )


def _datetimes_to_seconds(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def parse_timestamps(
    values: pd.Series, *, frame: pd.DataFrame, column: str, source: str | None
) -> np.ndarray:
    """Timestamps as float seconds since the epoch, or positions, shape ``[n]``.

    Numbers are taken as unix seconds or positions; a column whose numbers are all at least
    ``1e11`` is read as milliseconds (``1e14``: microseconds, ``1e17``: nanoseconds) and
    scaled to seconds. ISO 8601 strings and dates are converted (naive times are UTC).

    Raises:
        DataError: on the first missing or unparseable value, with its line.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        seconds = _datetimes_to_seconds(values).to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_bool_dtype(values.dtype):
        seconds = np.full(len(values), np.nan)
    else:
        if pd.api.types.is_numeric_dtype(values.dtype):
            numbers = values.astype("float64")
        else:
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        numeric = numbers.notna().to_numpy()
        seconds = numbers.to_numpy(dtype=np.float64, na_value=np.nan).copy()
        if numeric.any():
            smallest = np.abs(seconds[numeric]).min()
            for limit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
                if smallest >= limit:
                    seconds[numeric] /= scale
                    break
        rest = ~numeric & values.notna().to_numpy()
        if rest.any():
            texts = values[rest].astype(str)
            seconds[rest] = _datetimes_to_seconds(texts).to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(seconds)
    if bad.any():
        pos, is_line = file_positions(frame)
        first = int(np.argmax(bad))
        raw = values.iloc[first]
        missing = raw is None or (isinstance(raw, float) and np.isnan(raw)) or raw is pd.NaT
        missing = missing or (isinstance(raw, str) and not raw.strip())
        what = "missing timestamp" if missing else f"cannot parse timestamp {raw!r}"
        raise DataError(
            f"{what} ({int(bad.sum())} bad {_unit(is_line)}s in all)",
            file=source,
            row=int(pos[first]),
            column=column,
            expected=_NUMERIC_TIME,
        )
    return seconds


def _parse_values(values: pd.Series, frame: pd.DataFrame, column: str, source: str | None):
    numbers = pd.to_numeric(values, errors="coerce")
    present = values.notna().to_numpy()
    if not pd.api.types.is_numeric_dtype(values.dtype):
        present = present & values.astype(str).str.strip().ne("").to_numpy()
    bad = present & numbers.isna().to_numpy()
    if bad.any():
        pos, _ = file_positions(frame)
        first = int(np.argmax(bad))
        raise DataError(
            f"not a number: {values.iloc[first]!r}",
            file=source,
            row=int(pos[first]),
            column=column,
            expected="a number (e.g. a rating) or nothing",
        )
    return numbers.astype("float64")


def events_from_frame(frame: pd.DataFrame, *, source: str | Path | None = None) -> pd.DataFrame:
    """Validate and normalise a raw event frame (see :func:`read_events` for the rules).

    Returns the normalised columns ``user_id, item_id, timestamp, event, value, query``; the
    index is kept (line numbers when ``frame`` came from :func:`read_table`).
    """
    src = _source(frame, source)
    what = "columns user_id, item_id and timestamp"
    user_col = _pick_column(frame, ("user_id",), required=True, source=src, what=what)
    item_col = _pick_column(frame, ("item_id",), required=True, source=src, what=what)
    time_col = _pick_column(
        frame,
        TIMESTAMP_ALIASES,
        required=True,
        source=src,
        what="a time or order for each event (timestamp, ts, time or position)",
    )
    users = ids_as_str(frame[user_col])
    _check_ids(users, "user_id", frame, src)
    items = ids_as_str(frame[item_col])
    _check_ids(items, "item_id", frame, src)
    raw = pd.DataFrame(
        {
            "user_id": users.array,
            "item_id": items.array,
            "timestamp": parse_timestamps(
                frame[time_col], frame=frame, column=time_col, source=src
            ),
        },
        index=frame.index,
    )
    value_col = _pick_column(frame, VALUE_ALIASES, required=False, source=src, what="")
    if value_col is not None:
        raw["value"] = _parse_values(frame[value_col], frame, value_col, src).array
    for name in ("event", "query"):
        if name in frame.columns:
            raw[name] = frame[name].array
    out = normalise_events(raw)
    out.index = frame.index
    out.attrs["source"] = src
    untyped = bool(frame.attrs.get("untyped", False))
    out.attrs["integer_ids"] = ids_are_integers(frame[user_col], untyped)
    return out


def _has_text(values: pd.Series) -> np.ndarray:
    """Per row: does this column hold any non-blank text (a string, or a list with one)?"""
    if isinstance(values.dtype, pd.StringDtype):
        return (values.notna() & values.str.strip().ne("")).to_numpy(dtype=bool)

    def nonblank(v: object) -> bool:
        if isinstance(v, str):
            return bool(v.strip())
        if isinstance(v, list | tuple | np.ndarray):
            return any(nonblank(x) for x in v)
        return False

    return np.fromiter((nonblank(v) for v in values), dtype=bool, count=len(values))


def catalog_from_frame(
    frame: pd.DataFrame, *, source: str | Path | None = None, empty_text: EmptyText = "warn"
) -> pd.DataFrame:
    """Validate and normalise a raw catalogue frame (see :func:`read_catalog` for the rules)."""
    if empty_text not in ("warn", "error", "ignore"):
        raise ConfigError(f"empty_text must be 'warn', 'error' or 'ignore', not {empty_text!r}")
    src = _source(frame, source)
    id_col = _pick_column(
        frame, ITEM_ID_ALIASES, required=True, source=src, what="an item_id column"
    )
    ids = ids_as_str(frame[id_col])
    _check_ids(ids, "item_id", frame, src)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        pos, is_line = file_positions(frame)
        second = int(np.argmax(dup))
        value = ids.iloc[second]
        first = int(np.argmax((ids == value).to_numpy()))
        raise DataError(
            f"duplicate item_id {value!r} (first on {_unit(is_line)} {pos[first]}; "
            f"{int(dup.sum())} duplicates in all)",
            file=src,
            row=int(pos[second]),
            column="item_id",
            expected="each item once",
        )
    others = [c for c in frame.columns if c not in (id_col, "item_id")]
    out = frame[others].copy()
    out.insert(0, "item_id", ids.array)
    if empty_text != "ignore":
        text_cols = [
            c for c in others if isinstance(out[c].dtype, pd.StringDtype) or out[c].dtype == object
        ]
        has_text = np.zeros(len(out), dtype=bool)
        for col in text_cols:
            has_text |= _has_text(out[col])
        empty = ~has_text
        if empty.any():
            pos, is_line = file_positions(frame)
            first = int(np.argmax(empty))
            unit = _unit(is_line)
            fields = ", ".join(map(str, text_cols)) or "none"
            if empty_text == "error":
                raise DataError(
                    f"item {ids.iloc[first]!r} has no text in any field ({fields}); "
                    f"{int(empty.sum())} such items in all",
                    file=src,
                    row=int(pos[first]),
                    expected="some text per item, or empty_text='warn'",
                )
            logger.warning(
                "%s: %d items have no text in any field (%s), first item %r on %s %d; "
                "they are kept but their text is empty",
                src,
                int(empty.sum()),
                fields,
                ids.iloc[first],
                unit,
                pos[first],
            )
    out.attrs["source"] = src
    untyped = bool(frame.attrs.get("untyped", False))
    out.attrs["integer_ids"] = ids_are_integers(frame[id_col], untyped)
    return out


def check_events_items(
    events: pd.DataFrame,
    catalog_ids: Iterable[str],
    *,
    unknown_items: UnknownItems = "drop",
    source: str | Path | None = None,
) -> pd.DataFrame:
    """Events whose item is in the catalogue.

    Args:
        events: normalised events (from :func:`read_events`: the index holds line numbers).
        catalog_ids: the catalogue's item ids.
        unknown_items: ``"drop"`` logs a warning with the count and the first line and drops
            them; ``"error"`` raises.
        source: the events file, for messages (default: ``events.attrs["source"]``).

    Raises:
        DataError: ``unknown_items="error"`` and some events name items not in the catalogue.
    """
    if unknown_items not in ("drop", "error"):
        raise ConfigError(f"unknown_items must be 'drop' or 'error', not {unknown_items!r}")
    ids = catalog_ids if isinstance(catalog_ids, pd.Index) else pd.Index(list(catalog_ids))
    unknown = ~events["item_id"].isin(ids).to_numpy()
    if not unknown.any():
        return events
    src = _source(events, source)
    pos, is_line = file_positions(events)
    first = int(np.argmax(unknown))
    count = int(unknown.sum())
    example = events["item_id"].iloc[first]
    if unknown_items == "error":
        raise DataError(
            f"{count} events refer to items not in the catalogue (first: item {example!r})",
            file=src,
            row=int(pos[first]),
            column="item_id",
            expected="item ids from the catalogue, or unknown_items='drop'",
        )
    logger.warning(
        "%s: dropped %d of %d events whose item is not in the catalogue (first: item %r on %s %d)",
        src,
        count,
        len(events),
        example,
        _unit(is_line),
        pos[first],
    )
    kept = events[~unknown]
    kept.attrs.update(events.attrs)
    kept.attrs["source"] = src
    return kept


# --------------------------------------------------------------------------- public readers


def read_catalog(
    path: str | Path, *, encoding: str = "utf-8", empty_text: EmptyText = "warn"
) -> pd.DataFrame:
    """Read an item catalogue.

    Needs an ``item_id`` column (or ``id``); every other field is kept as it is (lists stay
    Python lists, e.g. ``categories``). Ids become strings.

    Args:
        path: a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.json`` or ``.parquet`` file.
        encoding: text encoding.
        empty_text: what to do with items whose text fields are all empty: ``"warn"`` (log a
            warning on the ``promptrec`` logger with the count and first line, keep them),
            ``"error"`` (raise) or ``"ignore"``.

    Returns:
        The catalogue, ``item_id`` first; index = line (or row) numbers.

    Raises:
        DataError: unreadable file, no ``item_id`` column, an empty or duplicate id, or an item
            without text when ``empty_text="error"``.

    Example:
        >>> items = read_catalog("catalog.jsonl")  # doctest: +SKIP
    """
    frame = read_table(path, encoding=encoding, dtype={c: str for c in ITEM_ID_ALIASES})
    return catalog_from_frame(frame, source=str(path), empty_text=empty_text)


def read_events(path: str | Path, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a behaviour log.

    Needs ``user_id``, ``item_id`` and a time or order: ``timestamp`` (or ``ts``, ``time``,
    ``position``). Optional: ``event`` (default ``"interaction"``), ``value`` (or ``rating``)
    and ``query``; other columns are dropped. Timestamps may be numbers (unix seconds,
    milliseconds, or positions) or ISO 8601 strings; they become float seconds (see
    :func:`parse_timestamps`).

    Returns:
        Normalised events (``user_id, item_id, timestamp, event, value, query``) in file
        order; index = line (or row) numbers.

    Raises:
        DataError: unreadable file, a missing column, an empty id, an unparseable timestamp
            or value.
    """
    frame = read_table(path, encoding=encoding, dtype=str)
    return events_from_frame(frame, source=str(path))


__all__ = [
    "check_events_items",
    "read_catalog",
    "read_events",
    "catalog_from_frame",
    "events_from_frame",
    "read_table",
    "read_text",
]
