"""Load a :class:`~promptrec.data.dataset.Dataset` from a folder in a known layout, or from a
catalogue file plus an events file.

Folder layouts recognised (first match wins):

* **MovieLens 100k**: ``u.data`` (ratings, tab-separated) + ``u.item`` (latin-1, ``|``-separated,
  19 genre flags turned into a ``genres`` list using ``u.genre``).
* **MovieLens 1M**: ``ratings.dat`` + ``movies.dat`` (``::``-separated, latin-1).
* **Generic** (including the Amazon P5 layout ``items.jsonl`` + ``interactions.csv``):
  ``catalog.*`` or ``items.*`` plus ``events.*`` or ``interactions.*`` in any format that
  :mod:`promptrec.data.readers` reads.
* **RecBole atomic files**: ``<name>.inter`` and optionally ``<name>.item`` (typed TSV headers
  such as ``item_id:token movie_title:token_seq``). A path to a ``.inter`` file also works.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec.data.dataset import Dataset
from promptrec.data.readers import (
    FORMATS,
    UnknownItems,
    catalog_from_frame,
    check_events_items,
    events_from_frame,
    parse_delimited,
    read_catalog,
    read_events,
    read_text,
)
from promptrec.errors import ConfigError, DataError

logger = logging.getLogger("promptrec")

RECBOLE_INSTALL = "pip install --no-deps recbole==1.2.1"

# The 19 genres of ml-100k in flag order, used when u.genre is absent.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# RecBole token_seq fields that are prose, kept as one string rather than split into tokens.
_TEXT_FIELDS = {"title", "name", "movie_title", "description", "text", "summary", "review"}
_TEXT_SUFFIXES = ("title", "name", "description", "text")
_RECBOLE_RENAMES = {"movie_title": "title", "class": "genres", "release_year": "year"}

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")

_LAYOUTS = (
    "u.data + u.item (MovieLens 100k), ratings.dat + movies.dat (MovieLens 1M), "
    "catalog.* or items.* + events.* or interactions.* (generic: "
    + ", ".join(FORMATS)
    + ", optionally .gz), <name>.inter [+ <name>.item] (RecBole atomic files)"
)


def find_demo_data() -> Path:
    """The MovieLens 100k folder shipped in the ``recbole`` wheel (RecBole atomic files).

    The package is located, never imported (importing it pulls torch and more).

    Raises:
        ConfigError: recbole is not installed, or its wheel lacks the example data.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file():
            return folder
    raise ConfigError(
        "the demo data (MovieLens 100k) comes with the recbole wheel, which is not installed; "
        f"install it without its dependencies: {RECBOLE_INSTALL}"
    )


def load_dataset(
    path: str | Path | None = None,
    *,
    catalog: str | Path | None = None,
    events: str | Path | None = None,
    unknown_items: UnknownItems = "drop",
    encoding: str | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a catalogue and a behaviour log.

    Args:
        path: a folder in one of the layouts of this module's docstring, a file of such a
            folder (``u.data``, ``items.jsonl``...), or a RecBole ``.inter`` file.
        catalog: the catalogue file (with ``events``, instead of ``path``).
        events: the events file (with ``catalog``).
        unknown_items: events whose item is not in the catalogue are dropped with a warning
            (``"drop"``) or raise (``"error"``).
        encoding: text encoding of every file; default: the format's own (latin-1 for the
            MovieLens ``.item``/``.dat`` files, UTF-8 otherwise).
        name: the dataset's name (default: the folder's name).

    Raises:
        DataError: missing or unrecognised files, or invalid content (file, line and column
            named).
        ConfigError: both ``path`` and ``catalog``/``events`` given, or only one of the two.

    Example:
        >>> data = load_dataset("../shared/data/movielens-100k")  # doctest: +SKIP
        >>> data = load_dataset(catalog="items.jsonl", events="events.csv")  # doctest: +SKIP
    """
    if path is not None and (catalog is not None or events is not None):
        raise ConfigError("give either a path, or catalog and events files, not both")
    if path is None:
        if catalog is None or events is None:
            raise ConfigError("give a dataset path, or both a catalog file and an events file")
        catalog, events = Path(catalog), Path(events)
        items = read_catalog(catalog, encoding=encoding or "utf-8")
        log = read_events(events, encoding=encoding or "utf-8")
        return _dataset(items, log, unknown_items, name or events.resolve().parent.name)

    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", file=str(path))
    if path.is_file():
        if path.suffix in (".inter", ".item"):
            items, log = _load_recbole(path.with_suffix(".inter"), encoding)
            return _dataset(items, log, unknown_items, name or path.stem)
        folder = path.parent
    else:
        folder = path
    items, log = _load_folder(folder, encoding)
    return _dataset(items, log, unknown_items, name or folder.resolve().name)


def _dataset(
    items: pd.DataFrame, events: pd.DataFrame, unknown_items: UnknownItems, name: str
) -> Dataset:
    events = check_events_items(events, items["item_id"], unknown_items=unknown_items)
    return Dataset(items, events, name=name)


def _load_folder(folder: Path, encoding: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if (folder / "u.data").is_file() and (folder / "u.item").is_file():
        return _load_ml100k(folder, encoding)
    if (folder / "movies.dat").is_file():
        return _load_ml1m(folder, encoding)
    catalog = _find_one(folder, ("catalog", "items"))
    events = _find_one(folder, ("events", "interactions"))
    if catalog is not None and events is not None:
        enc = encoding or "utf-8"
        return read_catalog(catalog, encoding=enc), read_events(events, encoding=enc)
    inters = sorted(folder.glob("*.inter"))
    if inters:
        chosen = [p for p in inters if p.stem == folder.name] or inters
        if len(chosen) > 1:
            raise DataError(
                "several RecBole .inter files: "
                + ", ".join(p.name for p in chosen)
                + "; pass the one to load",
                file=str(folder),
            )
        return _load_recbole(chosen[0], encoding)
    raise DataError(
        "no known data layout in this folder", file=str(folder), expected=f"one of: {_LAYOUTS}"
    )


def _find_one(folder: Path, stems: tuple[str, ...]) -> Path | None:
    """The single file named ``<stem>.<supported suffix>[.gz]`` for the first stem present."""
    for stem in stems:
        found = [
            p
            for p in sorted(folder.glob(f"{stem}.*"))
            if p.is_file() and p.name.lower().removesuffix(".gz")[len(stem) :] in FORMATS
        ]
        if len(found) > 1:
            raise DataError(
                f"several {stem} files: {', '.join(p.name for p in found)}; keep one",
                file=str(folder),
            )
        if found:
            return found[0]
    return None


def _year_from(title: pd.Series, fallback: pd.Series | None = None) -> pd.Series:
    years = title.str.extract(_YEAR_IN_TITLE, expand=False)
    if fallback is not None:
        years = years.fillna(fallback.str.extract(r"(\d{4})\s*$", expand=False))
    return pd.to_numeric(years, errors="coerce").astype("Int64")


# --------------------------------------------------------------------------- MovieLens


def _load_ml100k(folder: Path, encoding: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    enc = encoding or "latin-1"
    genres = list(ML100K_GENRES)
    if (folder / "u.genre").is_file():
        pairs = [
            line.split("|")
            for line in read_text(folder / "u.genre", enc).splitlines()
            if line.strip()
        ]
        genres = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
    source = str(folder / "u.item")
    fields = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]
    raw = parse_delimited(
        read_text(source, enc),
        "|",
        source=source,
        header=False,
        names=fields + genres,
        dtype=str,
        quoting=csv.QUOTE_NONE,
    )
    flags = raw[genres].fillna("0").to_numpy() == "1"
    names = np.asarray(genres, dtype=object)
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": raw["title"],
            "year": _year_from(raw["title"], raw["release_date"]),
            "genres": [names[row].tolist() for row in flags],
            "release_date": raw["release_date"],
            "imdb_url": raw["imdb_url"],
        },
        index=raw.index,
    )
    items = catalog_from_frame(items, source=source)

    source = str(folder / "u.data")
    raw = parse_delimited(
        read_text(source, enc),
        "\t",
        source=source,
        header=False,
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype=str,
        quoting=csv.QUOTE_NONE,
    )
    raw["event"] = "rating"
    return items, events_from_frame(raw, source=source)


def _load_ml1m(folder: Path, encoding: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = folder / "ratings.dat"
    if not ratings.is_file():
        raise DataError(
            "ratings.dat is missing: the chronological split needs each user's events in time "
            "order, so a MovieLens 1M folder without ratings.dat (e.g. only user-movie pairs, "
            "which carry no timestamps) cannot be loaded",
            file=str(ratings),
            expected="ratings.dat (UserID::MovieID::Rating::Timestamp)",
        )
    enc = encoding or "latin-1"
    source = str(folder / "movies.dat")
    text = read_text(source, enc)
    ids, titles, genres, lines = [], [], [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("::")
        if len(parts) != 3:
            raise DataError(
                f"{len(parts)} fields", file=source, row=number, expected="MovieID::Title::Genres"
            )
        ids.append(parts[0])
        titles.append(parts[1])
        genres.append([g for g in parts[2].split("|") if g])
        lines.append(number)
    title = pd.Series(titles, dtype="str", index=pd.Index(lines, name="line"))
    items = pd.DataFrame(
        {"item_id": ids, "title": title, "year": _year_from(title), "genres": genres},
        index=title.index,
    )
    items = catalog_from_frame(items, source=source)

    source = str(ratings)
    raw = parse_delimited(
        read_text(source, enc).replace("::", "\t"),
        "\t",
        source=source,
        header=False,
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype=str,
        quoting=csv.QUOTE_NONE,
    )
    raw["event"] = "rating"
    return items, events_from_frame(raw, source=source)


# --------------------------------------------------------------------------- RecBole


def _is_text_field(name: str) -> bool:
    return name in _TEXT_FIELDS or name.endswith(_TEXT_SUFFIXES)


def _token_lists(values: pd.Series) -> list[list[str]]:
    """Split a RecBole ``token_seq`` column into lists of strings.

    Values written as Python string lists (``'Beauty', 'Makeup'``, as in RecBole's Amazon
    files) are parsed as such; others are split on whitespace. Parsed once per distinct value.
    """

    def split(value: object) -> list[str]:
        if not isinstance(value, str) or not value.strip():
            return []
        text = value.strip()
        if text[0] in "'\"":
            try:
                parsed = ast.literal_eval(f"[{text}]")
            except (ValueError, SyntaxError):
                parsed = None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                return parsed
        return text.split()

    cache = {v: split(v) for v in pd.unique(values.dropna())}
    return [list(cache[v]) if isinstance(v, str) else [] for v in values]


def _read_atomic(path: Path, encoding: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole atomic file with its ``name:type`` header: (frame with bare names, types)."""
    source = str(path)
    raw = parse_delimited(read_text(path, encoding), "\t", source=source, dtype=str)
    types: dict[str, str] = {}
    names = []
    for column in raw.columns:
        field, _, kind = str(column).partition(":")
        names.append(field)
        types[field] = kind or "token"
    raw.columns = names
    raw.attrs["source"] = source
    return raw, types


def _load_recbole(inter: Path, encoding: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    enc = encoding or "utf-8"
    if not inter.is_file():
        raise DataError("no such file", file=str(inter), expected="a RecBole .inter file")
    raw, _ = _read_atomic(inter, enc)
    if "rating" in raw.columns and "event" not in raw.columns:
        raw["event"] = "rating"
    events = events_from_frame(raw, source=str(inter))

    item_file = inter.with_suffix(".item")
    if not item_file.is_file():
        logger.warning(
            "%s: no %s beside it, so the catalogue has item ids only (no text)",
            inter,
            item_file.name,
        )
        ids = pd.unique(events["item_id"])
        return pd.DataFrame({"item_id": pd.Series(ids, dtype="str")}), events

    raw, types = _read_atomic(item_file, enc)
    for field, kind in types.items():
        if kind == "float":
            raw[field] = pd.to_numeric(raw[field], errors="coerce")
        elif kind == "float_seq":
            raw[field] = [
                [float(x) for x in v.split()] if isinstance(v, str) else [] for v in raw[field]
            ]
        elif kind == "token_seq" and not _is_text_field(field):
            raw[field] = _token_lists(raw[field])
    renames = {
        old: new
        for old, new in _RECBOLE_RENAMES.items()
        if old in raw.columns and new not in raw.columns
    }
    raw = raw.rename(columns=renames)
    if "year" in raw.columns:
        # years are numbers, as in the other loaders; the odd junk token ("unkonwn" in
        # RecBole's ml-100k) becomes missing, but a column of non-years stays as it is
        years = pd.to_numeric(raw["year"], errors="coerce")
        if years.notna().sum() >= 0.95 * raw["year"].notna().sum():
            years = years.round().astype("Int64")
            if "title" in raw.columns:
                years = years.fillna(_year_from(raw["title"]))
            raw["year"] = years
    return catalog_from_frame(raw, source=str(item_file)), events


__all__ = ["find_demo_data", "load_dataset"]
