"""The serving engine: A/B arms, model swaps, served lists and the feedback that answers them.

The engine ties together the parts a service is made of, each in its own module:

* what requests read: an immutable :class:`~promptrec.service.snapshots.Snapshot` (catalogue,
  one fitted recommender per arm), built by
  :class:`~promptrec.service.snapshots.SnapshotBuilder`;
* the served catalogue and its changes (:class:`~promptrec.service.catalogue.LiveCatalogue`):
  changes and model swaps build a new snapshot beside the old one and replace the reference,
  so a request in flight finishes on the snapshot it started with and a swap drops nothing;
* users' histories, read from the store per request
  (:class:`~promptrec.service.histories.StoredHistories`);
* the served lists and their attribution (:class:`~promptrec.service.impressions.ImpressionLog`);
* the model registry (:class:`~promptrec.service.registry.ModelRegistry`), polled for swaps.

Behaviour events do not rebuild anything: they are committed to the store, from which every
request reads the user's history (:class:`~promptrec.service.histories.StoredHistories`), so the
next recommendation reflects them with no retraining, on every worker.

Several engines may serve one store (``promptrec serve --workers N``; processes on several
machines over PostgreSQL): the store is the one source of truth. Histories are read from it
per request; catalogue changes are logged in it, and each engine follows the log
(:meth:`Engine.follow_catalogue`, four times a second), applying the others' changes the same way as
its own; the registry's pointer swaps models on all of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread
import numpy as np
import pandas as pd

from promptrec.data.dataset import live_query
from promptrec.errors import ConfigError
from promptrec.recommender import Recommendation
from promptrec.retrieval.filters import Filters
from promptrec.service.catalogue import LiveCatalogue
from promptrec.service.config import EngineConfig
from promptrec.service.histories import StoredHistories
from promptrec.service.impressions import ImpressionLog, new_request_id
from promptrec.service.registry import ModelRegistry
from promptrec.service.snapshots import Snapshot, SnapshotBuilder
from promptrec.service.state import Impression, ServiceState
from promptrec.store import Event, EventWrite, Store
from promptrec.store.events import checked

__all__ = ["Engine", "EventsAdded", "Served"]

log = logging.getLogger("promptrec.service")

CHANGES_KEPT = 3600.0  # catalogue changes are kept this long for engines to follow


@dataclass(frozen=True)
class EventsAdded:
    """What :meth:`Engine.add_events` did.

    Attributes:
        write: the store's account (added, duplicates, replayed).
        attributed: clicks, carts and purchases linked to a served list.
        unknown_request_ids: events quoting a ``request_id`` that names no list served to
            their user (lost in a crash, pruned, or wrong): stored all the same, attributed by
            the fallback rule where it applies.
    """

    write: EventWrite
    attributed: int
    unknown_request_ids: int


@dataclass(frozen=True)
class Served:
    """One served list and where it came from.

    Attributes:
        query: the live query the list answers, or None.
        query_source: where that query came from: ``"request"`` (the caller's own), or
            ``"search"`` (the user's latest stored search: user data), or None.
    """

    request_id: str
    arm: str
    model_version: str
    strategy: str
    recommendation: Recommendation
    query: str | None
    cold_start: bool
    query_source: Literal["request", "search"] | None = None


class Engine:
    """Serve recommendations from a :class:`Store`, with A/B arms and a model registry.

    The engine keeps its state in the service's room of the store (:class:`ServiceState`) and
    takes the store's service lock: a second engine on the same store, in this process or
    another, is refused until this one is closed.
    """

    def __init__(
        self, store: Store, config: EngineConfig | None = None, state: ServiceState | None = None
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.config.check()
        self.state = state or ServiceState(store)
        self.registry = ModelRegistry(self.config.registry) if self.config.registry else None
        owner = self.config.owner or (
            f"a promptrec engine {id(self):x} (pid {os.getpid()} on {_host()})"
        )
        if self.config.claim_service:
            self.state.claim(owner)
        try:
            self._setup()
        except BaseException:
            if self.config.claim_service:
                self.state.release()
            raise

    def _setup(self) -> None:
        store = self.store
        self.salt = self.config.salt or self._stored_secret("ab_salt")
        self.log_key = self._stored_secret("log_key").encode()
        self.histories = StoredHistories(store, self.config.history_limit)
        self.catalogue = LiveCatalogue(
            store,
            self.state,
            SnapshotBuilder(store, self.config, self.registry),
            self.registry,
            self.config.max_retired_share,
        )
        self._registry_error: dict[str, Any] | None = None  # the pointer's, if it failed to load
        self._registry_stamp = self.registry.stamp() if self.registry else 0.0
        # one model swap at a time (poller, activate, rollback): each reads the pointer and
        # builds inside it, so a slower swap never lands on top of a newer one
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.pruned = {
            "impressions": 0,
            "attributions": 0,
            "idempotency": 0,
            "catalogue_changes": 0,
        }
        self.rebuild()
        self.impressions = ImpressionLog(
            self.state, self.config.flush_seconds, keep_seconds=self.config.keep_served_seconds
        )
        self._janitor = threading.Thread(target=self._sweep, name="retention", daemon=True)
        self._janitor.start()
        self._follower = threading.Thread(target=self._follow, name="catalogue", daemon=True)
        self._follower.start()

    # ------------------------------------------------------------------ lifecycle
    def start_polling(self) -> None:
        """Watch the registry's pointer and swap models when it changes (cron retraining)."""
        if self.registry is None or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll, name="registry", daemon=True)
        self._poller.start()

    def flush(self) -> None:
        """Write every served list still buffered to the store (graceful shutdown runs it)."""
        self.impressions.flush()

    def close(self) -> None:
        """Stop the background threads, flush what is buffered and give the store back."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.impressions.close()
        self.state.group.close()
        self._janitor.join(timeout=5)
        self._follower.join(timeout=5)
        if self._poller is not None:
            self._poller.join(timeout=5)
        if self.config.claim_service:
            self.state.release()

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Apply the retention settings once (the background sweep runs it every
        ``prune_seconds``); returns what went."""
        now = time.time() if now is None else now
        cfg = self.config
        self.impressions.flush()
        removed = self.state.prune(
            served_before=None
            if cfg.keep_served_seconds is None
            else now - cfg.keep_served_seconds,
            idempotency_before=None
            if cfg.keep_idempotency_seconds is None
            else now - cfg.keep_idempotency_seconds,
            changes_before=now - CHANGES_KEPT,
        )
        for key, n in removed.items():
            self.pruned[key] += n
        return removed

    def _sweep(self) -> None:
        while not self._stop.wait(self.config.prune_seconds):
            try:
                self.prune()
            except Exception:  # the sweep must outlive a busy or broken store; it retries
                log.exception("the retention sweep failed")

    def _follow(self) -> None:
        while not self._stop.wait(self.config.follow_seconds):
            try:
                self.follow_catalogue()
            except Exception:  # the follower must outlive a busy store; it retries
                log.exception("following the catalogue's changes failed")

    @property
    def catalogue_version(self) -> int:
        """The newest change of the store's catalogue log this engine serves."""
        return self.catalogue.version

    def follow_catalogue(self) -> int:
        """Serve the catalogue changes other engines on the store made since the last call
        (:meth:`LiveCatalogue.follow`); returns how many items changed here."""
        return self.catalogue.follow()

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.poll_registry()
            except Exception:  # the poller must outlive a broken registry folder
                log.exception("reading the model registry failed")

    def poll_registry(self) -> None:
        """Swap to the registry's active version if its pointer moved (what the poller runs).

        A version that fails to load is not served: the current model stays, and ``/model``
        reports the failure (``registry.load_error``) until a good version is activated.
        """
        assert self.registry is not None
        with self._swap_lock:
            stamp = self.registry.stamp()
            if stamp == self._registry_stamp:
                return
            self._registry_stamp = stamp
            wanted = self.registry.active
            if wanted != self.catalogue.served_version:
                try:
                    self.rebuild(version=wanted)
                except Exception as exc:  # a bad model must not stop the service
                    self._registry_error = {
                        "version": wanted,
                        "error": str(exc),
                        "at": time.time(),
                    }
                    log.exception(
                        "model swap to %s failed; still serving %s",
                        wanted,
                        self.catalogue.served_version,
                    )
                    return
            self._registry_error = None

    def _stored_secret(self, key: str) -> str:
        value = self.store.meta(key)
        if value is None:
            value = secrets.token_hex(16)
            self.store.set_meta(key, value, overwrite=False)
            value = self.store.meta(key)
        return str(value)

    # ------------------------------------------------------------------ building
    @property
    def snapshot(self) -> Snapshot:
        """What requests read now."""
        return self.catalogue.snapshot

    def rebuild(self, *, version: str | None = None) -> Snapshot:
        """Build a snapshot from the store (and the registry's active model, or ``version``)
        and swap it in."""
        return self.catalogue.rebuild(version=version)

    def activate(self, version: str) -> str:
        """Activate a registry version and swap to it (raises before swapping if it fails)."""
        if self.registry is None:
            raise ConfigError("no model registry: start the service with --models DIR")
        self.registry.path(version)
        with self._swap_lock:
            self.rebuild(version=version)  # load first: a broken model never becomes active
            self.registry.activate(version)
            self._registry_stamp = self.registry.stamp()
            self._registry_error = None
        return version

    def rollback(self) -> str:
        if self.registry is None:
            raise ConfigError("no model registry: start the service with --models DIR")
        with self._swap_lock:
            previous = self.registry.previous()
            self.rebuild(version=previous)  # load first: a broken model never becomes active
            self.registry.rollback()
            self._registry_stamp = self.registry.stamp()
            self._registry_error = None
        return previous

    # ------------------------------------------------------------------ serving
    def arm_for(self, user_id: str) -> str:
        """The user's arm: a stable hash of the salted id, split by the arms' weights."""
        arms = self.config.arms
        if len(arms) == 1:
            return arms[0].name
        digest = hashlib.sha256(f"{self.salt}:{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(a.weight for a in arms)
        for arm in arms:
            point -= arm.weight
            if point < 0:
                return arm.name
        return arms[-1].name

    def recommend(
        self,
        user_id: str,
        *,
        k: int = 10,
        query: str | None = None,
        filters: Filters | None = None,
        explain: bool = False,
        keep_seen: bool = False,
    ) -> Served:
        snap = self.snapshot
        now = time.time()
        arm = snap.arms[self.arm_for(user_id)]
        history = self.histories.history(user_id, snap.data, now)
        asked = live_query(query)  # a blank query is no query: the stored search answers
        if asked is not None:
            history = history.with_query(asked)
        source = "request" if asked is not None else "search" if history.query else None
        [rec] = arm.recommender.recommend(
            [history], k, filters=filters, exclude_seen=not keep_seen, explain=explain
        )
        request_id = new_request_id()
        self.impressions.add(
            Impression(
                request_id,
                user_id,
                arm.name,
                arm.model_version,
                arm.strategy,
                tuple(rec.item_ids),
                now,
            )
        )
        cold = len(history) == 0 and not history.query
        return Served(
            request_id, arm.name, arm.model_version, arm.strategy, rec, history.query, cold, source
        )

    async def add_events(
        self,
        events: Sequence[Event],
        request_ids: Sequence[str | None] = (),
        *,
        idempotency_key: str | None = None,
    ) -> EventsAdded:
        """Commit events (searches that led to no item among them) to the store, then make
        them live.

        ``request_ids[row]`` names the served list an event answers. A click, cart or
        purchase is attributed to that list when it was served to the event's user and shows
        the item; without a request id, or with one that names no such list (a list lost in a
        crash, pruned, or mistyped), to the user's latest list with that item within an hour.
        Such events are stored all the same, never refused.

        Raises:
            DataError: invalid events, naming the row and field
                (:class:`~promptrec.store.UnknownItemError` for an item not in the store);
                nothing is written then.
        """
        batch = checked(events)  # once: before anything is looked up for them
        attributions: dict[int, str] = {}
        unknown = 0
        if self.impressions.may_attribute(batch.rows, request_ids):
            # finding the lists may read the store (and wait for another worker's batch):
            # in a thread of the server's pool (40), never on the event loop
            attributions, unknown = await anyio.to_thread.run_sync(
                self._attribute, batch.rows, request_ids
            )
        result = await self.state.add_feedback_async(
            batch, attributions=attributions, idempotency_key=idempotency_key
        )
        attributed = sum(1 for row in result.added_rows if row in attributions)
        return EventsAdded(result, attributed, unknown)

    def _attribute(
        self, rows: Sequence[Event], request_ids: Sequence[str | None]
    ) -> tuple[dict[int, str], int]:
        """:meth:`ImpressionLog.attribute` now, with the lists it names stored."""
        found = self.impressions.attribute(rows, request_ids, time.time())
        if found[0]:
            self.impressions.flush()  # attributions refer to stored lists
        return found

    def upsert_item(self, item_id: str, fields: dict[str, Any]) -> bool:
        """Store an item and make it recommendable (its vector from its text) before returning;
        True when it is new. Nothing is stored unless it can be served.

        Raises:
            DataError: a field the store cannot keep (nothing is stored then).
        """
        return self.catalogue.change(str(item_id), fields)

    def delete_item(self, item_id: str) -> bool:
        """Remove an item (and its events) from the store and the lists; False if unknown."""
        return self.catalogue.change(str(item_id), None)

    def forget_user(self, user_id: str) -> dict[str, int] | None:
        """Forget a user everywhere (store, live history, recent lists); None if unknown."""
        # no batch of served lists may be on its way to the store meanwhile: it could write
        # this user's lists back after they were deleted
        with self.impressions.flushing():
            self.impressions.forget(user_id)
            counts = self.state.forget_user(user_id)
        return counts if any(counts.values()) else None

    def item(self, item_id: str) -> dict[str, Any] | None:
        snap = self.snapshot
        pos = snap.data.item_index.get(str(item_id))
        if pos is None:
            return None
        record = snap.data.rows(np.array([pos])).iloc[0].to_dict()
        return {k: _plain(v) for k, v in record.items()}

    def describe(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "items": snap.data.n_live,
            "events_at_build": snap.data.n_events,
            "built_at": snap.built_at,
            "arms": [
                {
                    "name": a.name,
                    "source": spec.source,
                    "weight": spec.weight,
                    "model_version": snap.arms[a.name].model_version,
                    "strategy": snap.arms[a.name].strategy,
                }
                for spec in self.config.arms
                for a in [snap.arms[spec.name]]
            ],
            "registry": None
            if self.registry is None
            else {
                "root": str(self.registry.root),
                "active": self.catalogue.served_version,
                "pointer": self.registry.active,
                "load_error": self._registry_error,
                "versions": self.registry.versions(),
            },
        }


def _host() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "this host"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    return value
