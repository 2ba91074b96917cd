"""The in-memory data model: a catalogue of items and a log of behaviour events.

Both are pandas DataFrames with normalised columns:

* ``items``: ``item_id`` (str, unique) plus any text or numeric fields, one row per item.
  The row position is the item's *index* (the column of score matrices).
* ``events``: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (float; seconds, or a
  position where the data has no clock), ``event`` (str, ``"interaction"`` when the log has no
  event types), ``value`` (float or NaN, e.g. a rating) and ``query`` (str or None). Row order is
  the file's order and breaks timestamp ties (never the item id: that leaks order).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from promptrec.data.rows import Column

EVENTS_COLUMNS = ("user_id", "item_id", "timestamp", "event", "value", "query")
DEFAULT_EVENT = "interaction"


@dataclass(frozen=True)
class UserHistory:
    """One user's behaviour, oldest first, as item indices into the catalogue.

    Attributes:
        user_id: the user's id.
        items: item indices, shape ``[n]``, chronological.
        events: event type per entry (``"view"``, ``"purchase"``, ``"interaction"``...).
        values: value per entry (rating) or NaN, shape ``[n]``.
        timestamps: shape ``[n]``.
        queries: the search text that led to each entry, or None.
        query: an optional live query (what the user types now): stripped, and a blank one
            is no query (None), however the history is made.
    """

    user_id: str
    items: np.ndarray
    events: tuple[str, ...] = ()
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    queries: tuple[str | None, ...] = ()
    query: str | None = None

    def __post_init__(self) -> None:
        if self.query is not None:
            object.__setattr__(self, "query", live_query(self.query))

    def __len__(self) -> int:
        return int(len(self.items))

    def with_query(self, query: str | None) -> UserHistory:
        """This history with ``query`` as its live query (see :attr:`query`)."""
        return UserHistory(
            self.user_id, self.items, self.events, self.values, self.timestamps, self.queries, query
        )

    def last(self, n: int) -> UserHistory:
        """The newest ``n`` entries (all when ``n`` is at least the length)."""
        if n >= len(self):
            return self
        s = slice(len(self) - n, None)
        return UserHistory(
            self.user_id,
            self.items[s],
            self.events[s],
            self.values[s],
            self.timestamps[s],
            self.queries[s],
            self.query,
        )


def live_query(query: str | None) -> str | None:
    """A live query as every path reads it: stripped of surrounding white space; None when
    nothing is left."""
    if query is None:
        return None
    return query.strip() or None


def normalise_events(events: pd.DataFrame) -> pd.DataFrame:
    """The log's columns in the types a :class:`Dataset` keeps: ids as text, times as float,
    events lower-cased (missing: the default event), values as numbers, blank queries as None."""
    out = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str),
            "item_id": events["item_id"].astype(str),
            "timestamp": events["timestamp"].astype("float64"),
        }
    )
    out["event"] = (
        events["event"].fillna(DEFAULT_EVENT).astype(str).str.lower()
        if "event" in events
        else DEFAULT_EVENT
    )
    out["value"] = (
        pd.to_numeric(events["value"], errors="coerce").astype("float64")
        if "value" in events
        else np.nan
    )
    if "query" in events:
        q = events["query"].astype(object)
        out["query"] = q.where(q.notna() & (q.astype(str).str.strip() != ""), None)
    else:
        out["query"] = None
    return out.reset_index(drop=True)


class Dataset:
    """A catalogue plus a behaviour log, validated and normalised.

    Build one with :func:`promptrec.data.loaders.load_dataset` (files or folders in known
    formats) or :class:`promptrec.store.Store` (the embedded database); the constructor
    trusts its input and only normalises column types.
    """

    def __init__(self, items: pd.DataFrame, events: pd.DataFrame, name: str = "dataset") -> None:
        items = items.copy()
        # remember integer ids so that exports give ids back in the user's own type (the
        # readers record it in attrs before they turn ids into strings)
        self.integer_ids = {
            "item_id": bool(
                items.attrs.get("integer_ids", pd.api.types.is_integer_dtype(items["item_id"]))
            ),
            "user_id": bool(
                events.attrs.get(
                    "integer_ids",
                    len(events) > 0 and pd.api.types.is_integer_dtype(events["user_id"]),
                )
            ),
        }
        items["item_id"] = items["item_id"].astype(str)
        self.items = items.reset_index(drop=True)
        self.events = normalise_events(events)
        self.name = name
        self.alive: np.ndarray | None = None  # see edited(): None when every row is an item
        self._appended: tuple[int, pd.DataFrame] | None = None  # see rows()

    def __repr__(self) -> str:
        users = "released" if self._events is None else self._events["user_id"].nunique()
        return (
            f"Dataset({self.name!r}, items={len(self.items)}, events={self.n_events}, "
            f"users={users})"
        )

    @property
    def events(self) -> pd.DataFrame:
        """The behaviour log (normalised: see :func:`normalise_events`)."""
        if self._events is None:
            raise RuntimeError(
                f"the log of dataset {self.name!r} was released (Dataset.release_log): read "
                "the data again (a service reads its store) to fit on it"
            )
        return self._events

    @events.setter
    def events(self, frame: pd.DataFrame) -> None:
        self._events = frame
        self._n_events = len(frame)

    @property
    def n_events(self) -> int:
        """Rows of the log (after :meth:`release_log`, those it held)."""
        return self._n_events

    def release_log(self) -> None:
        """Let go of the log frame and its memory (0.3-0.4 GB at 5 million events), for
        a holder that has fitted what it needs and reads histories elsewhere: the service's
        snapshots, once their arms are fitted (it reads users' histories from its store).
        :attr:`n_events` keeps the count; reading :attr:`events` afterwards raises, so that
        nothing is fitted on an empty log by mistake. A copy :meth:`edited` makes afterwards
        is released too (it shares the log as it is); one made before keeps its frame."""
        self._events = None

    @property
    def n_items(self) -> int:
        """Catalogue rows: the length of every per-item array (retired rows included)."""
        return len(self.items)

    @property
    def n_live(self) -> int:
        """Items that can be recommended (rows not retired by :meth:`edited`)."""
        return self.n_items if self.alive is None else int(self.alive.sum())

    def live_mask(self, size: int | None = None) -> np.ndarray | None:
        """``[size]`` bool: which rows are items (rows past ``n_items`` are not), or None when
        all ``size`` rows are (the common case: nothing to mask)."""
        size = self.n_items if size is None else size
        if self.alive is None and size == self.n_items:
            return None
        mask = np.zeros(size, dtype=bool)
        mask[: self.n_items] = True if self.alive is None else self.alive
        return mask

    def edited(
        self, upserts: pd.DataFrame, deleted: Sequence[str] = ()
    ) -> tuple[Dataset, np.ndarray]:
        """This catalogue with items added, replaced or removed, without touching the rows of
        the others: the service's change of one item, at a cost independent of the catalogue.

        New items and new versions of existing ones are appended as rows; the rows they
        replace, and those of ``deleted`` items, are *retired* (:attr:`alive` is False there):
        they keep their position, so every per-item array of this catalogue (vectors, labels,
        index keys) stays valid for the new one by appending. The log is shared; events of
        removed items find no item and are skipped, those of replaced ones follow the item.

        Returns:
            the new dataset, and the positions of the appended rows.
        """
        upserts = upserts.reset_index(drop=True).copy()
        upserts["item_id"] = upserts["item_id"].astype(str)
        new_ids = upserts["item_id"].tolist()
        if len(set(new_ids)) != len(new_ids):
            raise ValueError("an item appears twice among the changes")
        index = self.item_index
        n = self.n_items
        gone = [i for i in map(str, deleted) if i in index]
        retired = [index[i] for i in [*new_ids, *gone] if i in index]
        alive = np.ones(n + len(upserts), dtype=bool)
        if self.alive is not None:
            alive[:n] = self.alive
        alive[retired] = False
        added = np.arange(n, n + len(upserts), dtype=np.int64)
        clone = copy.copy(self)  # the log is shared as it is (with_events would copy it)
        clone.items = (
            pd.concat([self.items, upserts], ignore_index=True) if len(upserts) else self.items
        )
        clone.alive = None if alive.all() else alive
        clone._appended = (n, upserts)
        ids = self._item_id_column.extended(np.array(new_ids, dtype=object))
        clone.__dict__["_item_id_column"] = ids
        clone.__dict__["item_ids"] = ids.values
        clone.__dict__["item_index"] = ItemIndex.of(index).changed(
            gone, dict(zip(new_ids, added.tolist(), strict=True))
        )
        return clone, added

    def rows(self, positions: np.ndarray) -> pd.DataFrame:
        """The catalogue rows at ``positions``; those :meth:`edited` appended are read from the
        edit's own rows (taking rows from a million-row frame costs milliseconds a column)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._appended is not None and len(positions):
            start, appended = self._appended
            if positions.min() >= start:
                return appended.iloc[positions - start].reindex(columns=self.items.columns)
        return self.items.iloc[positions]

    @cached_property
    def _item_id_column(self) -> Column:
        return Column(self.items["item_id"].to_numpy(dtype=object))

    @cached_property
    def item_ids(self) -> np.ndarray:
        """``[n_items]`` (object): each row's item id (retired rows too)."""
        return self._item_id_column.values

    @cached_property
    def item_index(self) -> ItemIndex:
        """Item id -> its row (the live one)."""
        return ItemIndex({iid: i for i, iid in enumerate(self.item_ids)})

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Map item ids to indices; unknown ids raise KeyError."""
        index = self.item_index
        return np.fromiter((index[str(i)] for i in item_ids), dtype=np.int64, count=len(item_ids))

    def with_events(self, events: pd.DataFrame) -> Dataset:
        """The same catalogue with another (already normalised) log; shares the items frame."""
        clone = Dataset.__new__(Dataset)
        clone.items = self.items
        clone.events = events.reset_index(drop=True)
        clone.name = self.name
        clone.integer_ids = self.integer_ids
        clone.alive = self.alive
        clone._appended = self._appended
        # share cached id maps: the catalogue is the same object
        for key in ("_item_id_column", "item_ids", "item_index"):
            if key in self.__dict__:
                clone.__dict__[key] = self.__dict__[key]
        return clone

    def export_id(self, value: str, column: str = "item_id") -> str | int:
        """An id in the type the input had (int ids come back as ints)."""
        return int(value) if self.integer_ids.get(column) else value

    def histories(self, user_ids: Sequence[str] | None = None) -> list[UserHistory]:
        """Every user's history (or those asked for, in that order; unknown users get none)."""
        if user_ids is None:
            return list(build_histories(self.events, self.item_index.as_dict()).values())
        asked = self.events["user_id"].isin([str(u) for u in user_ids])
        hist = build_histories(self.events[asked], self.item_index.as_dict())
        return [
            hist.get(str(u), UserHistory(str(u), np.zeros(0, dtype=np.int64))) for u in user_ids
        ]

    @property
    def user_ids(self) -> list[str]:
        return list(pd.unique(self.events["user_id"]))


class ItemIndex(Mapping[str, int]):
    """Item id -> row, for one catalogue state: a dict shared by successive states of an
    edited catalogue (:meth:`Dataset.edited`), plus the ids changed since it was made, so that a
    change costs its own ids, not a copy of every id. Once the changes outgrow a thirty-second
    of the shared dict they are folded into a new one (amortised, a change still costs about
    its own ids)."""

    __slots__ = ("_base", "_changes", "_size")

    def __init__(
        self, base: dict[str, int], changes: dict[str, int] | None = None, size: int | None = None
    ) -> None:
        self._base = base
        self._changes = changes or {}  # id -> row, or -1: removed
        self._size = len(base) if size is None else size

    @staticmethod
    def of(index: Mapping[str, int]) -> ItemIndex:
        return index if isinstance(index, ItemIndex) else ItemIndex(dict(index))

    def changed(self, removed: Sequence[str], added: dict[str, int]) -> ItemIndex:
        """This index with the ids ``removed`` gone and ``added`` (id -> row) set (this one is
        unchanged)."""
        size = self._size - sum(1 for i in removed if i in self)
        size += sum(1 for i in added if i not in self or i in removed)
        changes = dict(self._changes)
        changes.update(dict.fromkeys(removed, -1))
        changes.update(added)
        if len(changes) > max(1024, len(self._base) // 32):
            merged = ItemIndex(self._base, changes, size)
            return ItemIndex(dict(merged.items()))
        return ItemIndex(self._base, changes, size)

    def as_dict(self) -> dict[str, int]:
        """A plain dict (for pandas' ``Series.map``); the shared one when nothing changed."""
        return self._base if not self._changes else dict(self.items())

    def __getitem__(self, key: str) -> int:
        row = self._changes.get(key)
        if row is None:
            return self._base[key]
        if row < 0:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        row = self._changes.get(key)  # type: ignore[call-overload]
        return key in self._base if row is None else row >= 0

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        row = self._changes.get(key)
        if row is None:
            return self._base.get(key, default)
        return default if row < 0 else row

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        changes = self._changes
        for key in self._base:
            if changes.get(key, 0) >= 0:
                yield key
        for key, row in changes.items():
            if row >= 0 and key not in self._base:
                yield key


def chronological(events: pd.DataFrame) -> pd.DataFrame:
    """Events sorted by user, then timestamp; ties keep the log's row order (stable sort)."""
    return events.sort_values(["user_id", "timestamp"], kind="stable")


def build_histories(events: pd.DataFrame, item_index: dict[str, int]) -> dict[str, UserHistory]:
    """Group a log into chronological per-user histories, keyed by user id.

    Events whose item is not in ``item_index`` are skipped (ingest already reported them).
    """
    if len(events) == 0:
        return {}
    ev = chronological(events)
    idx = ev["item_id"].map(item_index)
    keep = idx.notna().to_numpy()
    ev = ev[keep]
    items = idx[keep].to_numpy(dtype=np.int64)
    users = ev["user_id"].to_numpy()
    kinds = ev["event"].to_numpy()
    values = ev["value"].to_numpy(dtype=np.float64)
    stamps = ev["timestamp"].to_numpy(dtype=np.float64)
    queries = ev["query"].to_numpy()
    # users are contiguous after the sort: cut at each change of user
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(users)]])
    out: dict[str, UserHistory] = {}
    for s, e in zip(starts, ends, strict=True):
        uid = users[s]
        out[uid] = UserHistory(
            uid,
            items[s:e],
            tuple(kinds[s:e]),
            values[s:e],
            stamps[s:e],
            tuple(q if isinstance(q, str) else None for q in queries[s:e]),
        )
    return out
