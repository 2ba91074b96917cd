"""Served lists: kept in memory for attribution, written to the store in batches.

A list is written to the store by a background thread every ``interval`` seconds (a crash
loses at most that much of them; events are never buffered; a graceful stop flushes them all).
The newest lists of recent users stay in memory too, so that feedback is attributed without a
read; a list another worker served is found in the store.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from promptrec.service.state import Impression, ServiceState
from promptrec.store import Event

log = logging.getLogger("promptrec.service")

FEEDBACK_EVENTS = ("click", "cart", "purchase")  # attributed to the list they answer
MAX_PENDING_LISTS = 100_000  # served lists held while the store cannot take them
ATTRIBUTION_WINDOW = 3600.0  # a click without request id counts for a list shown this recently


class ImpressionLog:
    """Served lists, written to the store in batches by a background thread (a crash loses at
    most the last ``interval`` seconds of impressions; events are never buffered; a graceful
    stop flushes them all). The newest lists of recent users are also kept in memory, to
    attribute feedback without a read."""

    def __init__(
        self, state: ServiceState, interval: float = 0.25, keep_seconds: float | None = None
    ) -> None:
        self.state = state
        self.interval = interval
        self.keep_seconds = keep_seconds  # older lists are gone from the store: ignored here too
        self._pending: list[Impression] = []
        self._flushing = threading.Lock()  # held while a batch moves from pending to stored
        self.dropped = 0  # lists dropped while the store could not take them
        self._recent: OrderedDict[str, deque[Impression]] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._thread.start()

    def add(self, impression: Impression) -> None:
        with self._lock:
            self._pending.append(impression)
            if len(self._pending) > MAX_PENDING_LISTS:  # the store is down: keep the newest
                self.dropped += len(self._pending) - MAX_PENDING_LISTS
                del self._pending[: len(self._pending) - MAX_PENDING_LISTS]
            recent = self._recent.setdefault(impression.user_id, deque(maxlen=20))
            recent.appendleft(impression)
            self._recent.move_to_end(impression.user_id)
            while len(self._recent) > 100_000:
                self._recent.popitem(last=False)

    def find(self, request_id: str, user_id: str) -> Impression | None:
        """The list ``request_id``: among the user's recent lists, else in the store (whoever
        it was served to: the caller checks that)."""
        with self._lock:
            found = next(
                (i for i in self._recent.get(user_id, ()) if i.request_id == request_id), None
            )
        found = found or self.state.impression(request_id)
        if found is None:
            # served in the last moments by another worker on the store, whose batch is not
            # written yet? Its id says when it was served: wait for that batch, once
            wait = _served_at(request_id) + self.interval + 0.2 - time.time()
            if 0 < wait <= self.interval + 0.2:
                time.sleep(wait)
                found = self.state.impression(request_id)
        return found if found is not None and self._kept(found, time.time()) else None

    def _kept(self, impression: Impression, now: float) -> bool:
        return self.keep_seconds is None or now - impression.at <= self.keep_seconds

    def latest_with(self, user_id: str, item_id: str, now: float) -> Impression | None:
        with self._lock:
            recent = list(self._recent.get(user_id, ()))
        if not recent:
            recent = self.state.impressions(user_id)
        for imp in recent:
            if now - imp.at <= ATTRIBUTION_WINDOW and item_id in imp.items and self._kept(imp, now):
                return imp
        return None

    @staticmethod
    def may_attribute(events: Sequence[Event], request_ids: Sequence[str | None]) -> bool:
        """Whether :meth:`attribute` has anything to look up for ``events``: an item event
        that quotes a served list, or a click, cart or purchase (views, ratings and searches
        that quote no list answer none)."""
        return any(
            e.item_id is not None
            and (
                e.event in FEEDBACK_EVENTS
                or (row < len(request_ids) and request_ids[row] is not None)
            )
            for row, e in enumerate(events)
        )

    def attribute(
        self, events: Sequence[Event], request_ids: Sequence[str | None], now: float
    ) -> tuple[dict[int, str], int]:
        """Which served list each click, cart or purchase answers: ``({row: request_id},
        number of request ids that name no list served to the event's user)``.

        ``request_ids[row]`` names the list an event answers: the event is attributed to it
        when that list was served to the event's user and shows the item. Without a request
        id, or with one that names no such list (lost in a crash, pruned, or mistyped), to the
        user's latest list with that item within ``ATTRIBUTION_WINDOW``.
        """
        attributions: dict[int, str] = {}
        unknown = 0
        lists: dict[tuple[str, str], Impression | None] = {}  # one lookup per quoted list
        for row, (user, item, _, kind, _, _) in enumerate(events):
            if item is None:
                continue  # a search with no item answers no list
            rid = request_ids[row] if row < len(request_ids) else None
            if rid is not None:
                if (rid, user) not in lists:
                    lists[rid, user] = self.find(rid, str(user))
                imp = lists[rid, user]
                if imp is not None and imp.user_id == str(user):
                    if kind in FEEDBACK_EVENTS and str(item) in imp.items:
                        attributions[row] = rid
                    continue
                unknown += 1
            if kind in FEEDBACK_EVENTS:
                imp = self.latest_with(str(user), str(item), now)
                if imp is not None:
                    attributions[row] = imp.request_id
        return attributions, unknown

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._recent.pop(user_id, None)
            self._pending = [i for i in self._pending if i.user_id != user_id]

    def flushing(self) -> threading.Lock:
        """Held while a batch moves from memory to the store (hold it to keep one from
        moving)."""
        return self._flushing

    def flush(self) -> None:
        with self._flushing:  # readers of the counts see a batch either pending or stored
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                try:
                    self.state.record_impressions(batch)
                except Exception:  # keep serving; the next flush retries
                    log.exception("could not store %d impressions", len(batch))
                    with self._lock:
                        self._pending = batch + self._pending

    def online_stats(
        self, *, bucket_seconds: float | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`ServiceState.online_stats` with the lists not yet written counted in: exact at any
        moment, and no write (a scrape never waits for a disk)."""
        with self._flushing:  # no batch moves between the two reads
            with self._lock:
                pending = list(self._pending)
            return self.state.online_stats(
                bucket_seconds=bucket_seconds, since=since, unwritten=pending
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


def new_request_id() -> str:
    """A served list's id: 32 hex digits, the first 14 the time in microseconds, the rest 72
    random bits. Ids in time order keep the store's inserts at the end of its index (half the
    cost of random ids in a table of a million lists); 72 bits keep them unguessable."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def _served_at(request_id: str) -> float:
    """When a list was served, from its id (:func:`new_request_id`); 0 for an id that is
    not one."""
    try:
        return int(request_id[:14], 16) / 1e6 if len(request_id) == 32 else 0.0
    except ValueError:
        return 0.0
