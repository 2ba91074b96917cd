"""The serving engine: live histories, A/B arms, atomic model swaps, impressions and feedback.

Everything a request reads is in one immutable :class:`Snapshot` (catalogue, log at build time,
one fitted :class:`~promptrec.recommender.Recommender` per arm). Catalogue changes and model
swaps build a new snapshot beside the old one and replace the reference: a request in flight
finishes on the snapshot it started with, so a swap drops nothing. A snapshot owns what it
reads: each build fits its own copies of the scorers and their text spaces (sharing only the
read-only encoder and model weights), so nothing a request uses changes after it is published.
A catalogue change is committed only once the snapshot that serves it is built.

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

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.dataset import Dataset
from promptrec.data.store import Event, EventWrite, Impression, Store, stored_text
from promptrec.encoders import CachedEncoder, load_encoder
from promptrec.errors import ConfigError, DataError
from promptrec.recommender import Recommendation, Recommender
from promptrec.retrieval.filters import Filters, edited_facets, item_facets
from promptrec.retrieval.index import IndexConfig
from promptrec.scorers import SCORERS, TextSpace, make_scorer
from promptrec.service.histories import HISTORY_LIMIT, StoredHistories
from promptrec.service.impressions import ImpressionLog, new_request_id
from promptrec.service.registry import ModelRegistry

log = logging.getLogger("promptrec.service")

FEEDBACK_EVENTS = ("click", "cart", "purchase")  # attributed to the list they answer
REGISTRY = "registry"
CHANGES_KEPT = 3600.0  # catalogue changes are kept this long for engines to follow


@dataclass(frozen=True)
class ArmSpec:
    """One arm of an A/B test.

    Attributes:
        name: the arm's name (reported in responses and metrics).
        source: a strategy name (``mean-of-items``, ``sectioned``...), a trained model folder,
            or ``"registry"``: the registry's active model, swapped when a new one is activated.
        weight: share of users (relative to the other arms).
    """

    name: str
    source: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str, weight: float = 1.0) -> ArmSpec:
        """``NAME=SOURCE`` (or just ``SOURCE``, named after itself)."""
        name, _, source = text.partition("=") if "=" in text else (text, "", text)
        if not name or not source:
            raise ConfigError(f"arm '{text}': expected NAME=SOURCE")
        return cls(name.strip(), source.strip(), weight)


@dataclass(frozen=True)
class ServedArm:
    name: str
    recommender: Recommender
    model_version: str
    strategy: str


@dataclass(frozen=True)
class Snapshot:
    """What requests read: immutable once built."""

    data: Dataset
    arms: dict[str, ServedArm]
    built_at: float
    skipped: dict[str, int] = field(default_factory=dict)  # store rows that cannot be served


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
    """One served list and where it came from."""

    request_id: str
    arm: str
    model_version: str
    strategy: str
    recommendation: Recommendation
    query: str | None
    cold_start: bool


@dataclass
class EngineConfig:
    """How the engine serves (see ``promptrec serve --help``)."""

    arms: list[ArmSpec] = field(default_factory=lambda: [ArmSpec("main", "mean-of-items")])
    registry: Path | None = None
    encoder: str = "default"
    item_template: str | None = None
    salt: str = ""
    poll_seconds: float = 2.0
    #: served lists (and their attributions) are deleted this long after they were served
    keep_served_seconds: float | None = 7 * 86400.0
    #: idempotency keys are forgotten this long after their request (a later retry is new)
    keep_idempotency_seconds: float | None = 86400.0
    #: how often the retention sweep runs
    prune_seconds: float = 60.0
    #: served lists are written to the store in a batch this often (a crash loses at most this
    #: much of them; a graceful stop loses none)
    flush_seconds: float = 0.25
    #: who this engine is, written beside the store's service lock (for a second one's message)
    owner: str = ""
    #: how the vector arms' lists are searched (exact, or an approximate HNSW graph)
    index: IndexConfig = field(default_factory=IndexConfig)
    #: the newest events of a user each request reads from the store
    history_limit: int = HISTORY_LIMIT
    #: how often the engine reads the store's catalogue change log, to apply the changes other
    #: engines on the store made (every worker serves a change within about this long)
    follow_seconds: float = 0.25
    #: take the store's service lock (``promptrec serve`` takes it once for all its workers,
    #: whose engines do not)
    claim_service: bool = True
    #: a catalogue change edits the served snapshot (the cost of one item) until this share of
    #: its rows are retired versions of changed or removed items; the next change then
    #: rebuilds from the store, which compacts them away (the cost of the catalogue)
    max_retired_share: float = 0.25

    def check(self) -> None:
        """Raise a ConfigError for arms that cannot be served (before anything is built)."""
        if not self.arms:
            raise ConfigError("give at least one arm")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"arm names must differ: {names}")
        for arm in self.arms:
            if arm.source == REGISTRY:
                if self.registry is None:
                    raise ConfigError(f"arm '{arm.name}' serves the registry: give --models DIR")
            elif arm.source not in SCORERS and not Path(arm.source).is_dir():
                raise ConfigError(
                    f"arm '{arm.name}': '{arm.source}' is neither a strategy {list(SCORERS)}, "
                    "a model folder, nor 'registry'"
                )

    def to_json(self) -> str:
        """These settings as JSON (:meth:`from_json` reads them back): how ``promptrec serve
        --workers N`` hands them to its worker processes."""
        return json.dumps(dataclasses.asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> EngineConfig:
        values = json.loads(text)
        values["arms"] = [ArmSpec(**a) for a in values["arms"]]
        values["index"] = IndexConfig(**values["index"])
        values["registry"] = Path(values["registry"]) if values["registry"] else None
        return cls(**values)


class Engine:
    """Serve recommendations from a :class:`Store`, with A/B arms and a model registry.

    The engine takes the store's service lock (:meth:`Store.claim_service`): a second engine
    on the same store, in this process or another, is refused until this one is closed.
    """

    def __init__(self, store: Store, config: EngineConfig | None = None) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.config.check()
        self.registry = ModelRegistry(self.config.registry) if self.config.registry else None
        owner = self.config.owner or (
            f"a promptrec engine {id(self):x} (pid {os.getpid()} on {_host()})"
        )
        if self.config.claim_service:
            store.claim_service(owner)
        try:
            self._setup()
        except BaseException:
            if self.config.claim_service:
                store.release_service()
            raise

    def _setup(self) -> None:
        store = self.store
        self.salt = self.config.salt or self._stored_secret("ab_salt")
        self.log_key = self._stored_secret("log_key").encode()
        self.histories = StoredHistories(store, self.config.history_limit)
        self._encoders: dict[str, Any] = {}
        self._models: dict[str, Any] = {}  # loaded model folders, by resolved path
        self._registry_version: str | None = None  # the version served
        self._registry_error: dict[str, Any] | None = None  # the pointer's, if it failed to load
        self._registry_stamp = self.registry.stamp() if self.registry else 0.0
        # one build at a time (catalogue changes, swaps): each reads the store inside it
        self._build_lock = threading.Lock()
        # one model swap at a time (poller, activate, rollback): each reads the pointer and
        # builds inside it, so a slower swap never lands on top of a newer one
        self._swap_lock = threading.Lock()
        self._item_template = self.config.item_template
        self._snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.pruned = {
            "impressions": 0,
            "attributions": 0,
            "idempotency": 0,
            "catalogue_changes": 0,
        }
        # the catalogue change log: how far this engine has applied it, and the stored form
        # of the changes it made or applied since its last rebuild (a change logged again is
        # one it already serves)
        self._catalogue_seen = 0
        self._applied: dict[str, str | None] = {}
        self.rebuild()
        self.impressions = ImpressionLog(
            store, self.config.flush_seconds, keep_seconds=self.config.keep_served_seconds
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
        self._janitor.join(timeout=5)
        self._follower.join(timeout=5)
        if self._poller is not None:
            self._poller.join(timeout=5)
        if self.config.claim_service:
            self.store.release_service()

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Apply the retention settings once (the background sweep runs it every
        ``prune_seconds``); returns what went."""
        now = time.time() if now is None else now
        cfg = self.config
        self.impressions.flush()
        removed = self.store.prune(
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
        return self._catalogue_seen

    def follow_catalogue(self) -> int:
        """Serve the catalogue changes logged in the store since the last call: those other
        engines on the store made (each of this engine's own is served already). Each changed
        item is served as the store holds it now, so engines that apply the log converge
        whatever its order. Returns how many items changed here."""
        try:
            changes = self.store.catalogue_changes(self._catalogue_seen)
        except LookupError:  # this engine fell more than CHANGES_KEPT behind: read it all
            log.warning("catalogue changes were pruned before this engine read them: rebuilding")
            self.rebuild()
            return 0
        if not changes:
            return 0
        served = 0
        with self._build_lock:
            for item_id in dict.fromkeys(item for _, item in changes):
                text = self.store.item_text(item_id)
                if item_id in self._applied and self._applied[item_id] == text:
                    continue  # served already (this engine's own change, or applied before)
                started = time.perf_counter()
                snap = self.snapshot
                if text is None and item_id not in snap.data.item_index:
                    self._applied[item_id] = None
                    continue
                fields = None if text is None else json.loads(text)
                new, version = self._changed(item_id, fields, committed=True)
                self._publish(new, version, started)
                self._applied[item_id] = text
                served += 1
            self._catalogue_seen = max(self._catalogue_seen, changes[-1][0])
        return served

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
            if wanted != self._registry_version:
                try:
                    self.rebuild(version=wanted)
                except Exception as exc:  # a bad model must not stop the service
                    self._registry_error = {
                        "version": wanted,
                        "error": str(exc),
                        "at": time.time(),
                    }
                    log.exception(
                        "model swap to %s failed; still serving %s", wanted, self._registry_version
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
        assert self._snapshot is not None
        return self._snapshot

    def _space(self) -> TextSpace:
        """A new text space for one snapshot (the encoder, read-only, is shared)."""
        name = self.config.encoder
        if name not in self._encoders:
            self._encoders[name] = load_encoder(name, cache_queries=False)
        return TextSpace(self._encoders[name], self._item_template)

    def _catalogue_template(self, data: Dataset) -> str:
        """The item template, fixed per catalogue: the one the store recorded when it was first
        served (picked then from its columns). An item with an unusual field never changes how
        every other item reads (and so never re-encodes the catalogue)."""
        from promptrec.prompts.items import ItemPrompter

        picked = ItemPrompter(None).resolve(data.items.columns)
        self.store.set_meta("item_template", picked, overwrite=False)
        return self.store.meta("item_template") or picked

    def _model(self, path: Path) -> Any:
        from promptrec.train.trained import load_model

        key = str(path.resolve())
        if key not in self._models:
            model = load_model(path)
            encoder = getattr(getattr(model, "space", None), "encoder", None)
            if isinstance(encoder, CachedEncoder):
                encoder.cache_queries = False  # what users type is not kept on disk
            self._models[key] = model
        # this snapshot's own copy: fitting it leaves the other snapshots' as they are
        return self._models[key].detached()

    def _serve_arm(self, arm: ArmSpec, data: Dataset, version: str | None) -> ServedArm:
        if arm.source in SCORERS:
            scorer = make_scorer(arm.source, self._space())
            rec = Recommender(scorer=scorer, index=self.config.index).fit(data)
            return ServedArm(arm.name, rec, "zero-shot", arm.source)
        path = self.registry.path(version) if arm.source == REGISTRY else Path(arm.source)  # type: ignore[union-attr]
        scorer = self._model(path)
        rec = Recommender(scorer=scorer, index=self.config.index).fit(data)
        return ServedArm(arm.name, rec, path.name, scorer.name)

    def _build(self, data: Dataset, version: str | None) -> tuple[Snapshot, str | None]:
        """A snapshot of ``data`` (not yet served) and the registry version it serves."""
        if data.n_items == 0:
            raise DataError("the store has no items: ingest a catalogue first", file=None)
        if self._item_template is None:
            self._item_template = self._catalogue_template(data)
        if self.registry is not None:
            # a catalogue change keeps the version served; only a swap changes it
            version = version or self._registry_version or self.registry.active
        arms = {a.name: self._serve_arm(a, data, version) for a in self.config.arms}
        # what the first request would otherwise compute: the filters' per-item labels, the
        # items' display titles, the id map
        item_facets(data)
        for arm in arms.values():
            arm.recommender._labels()
        data.item_index  # noqa: B018 (a cached property: built now)
        return Snapshot(data, arms, time.time(), dict(self.store.skipped)), version

    def _publish(self, snap: Snapshot, version: str | None, started: float) -> Snapshot:
        self._snapshot = snap  # the atomic swap: one reference assignment
        if self.registry is not None:
            self._registry_version = version
        keep = {str(self.registry.path(version).resolve())} if version else set()
        folders = [Path(a.source) for a in self.config.arms if a.source not in SCORERS]
        keep |= {str(f.resolve()) for f in folders if f.is_dir()}
        for key in list(self._models):  # drop models no arm serves any more
            if key not in keep:
                del self._models[key]
        log.info(
            "serving %d items, %d events, arms %s (built in %.3fs)",
            snap.data.n_live,
            len(snap.data.events),
            {a.name: f"{a.strategy}@{a.model_version}" for a in snap.arms.values()},
            time.perf_counter() - started,
        )
        return snap

    def rebuild(self, *, version: str | None = None) -> Snapshot:
        """Build a snapshot from the store (and the registry's active model, or ``version``)
        and swap it in."""
        with self._build_lock:
            started = time.perf_counter()
            seen = self.store.catalogue_version()  # every change up to it is in what is read
            snap, version = self._build(self.store.dataset(), version)
            self._catalogue_seen, self._applied = max(self._catalogue_seen, seen), {}
            return self._publish(snap, version, started)

    def _change_catalogue(self, item_id: str, fields: dict[str, Any] | None) -> bool:
        """Build the snapshot with the change, then commit it, then serve it: a change that
        cannot be served is never committed, and one that failed to commit is never served.
        Returns whether the item was new (an upsert) or existed (a delete)."""
        if fields is None and item_id not in self.snapshot.data.item_index:
            # not served: unknown, or a stored row that cannot be served (deleting it is how
            # such a row is cleared; the rebuild updates the count of skipped rows)
            removed = self.store.delete_item(item_id)
            if removed:
                self.rebuild()
            return removed
        with self._build_lock:
            started = time.perf_counter()
            new, version = self._changed(item_id, fields, committed=False)
            if fields is None:
                changed = self.store.delete_item(item_id)
            else:
                changed = self.store.upsert_item(item_id, fields)
            self._applied[item_id] = None if fields is None else stored_text(item_id, fields)
            self._publish(new, version, started)
            return changed

    def _changed(
        self, item_id: str, fields: dict[str, Any] | None, *, committed: bool
    ) -> tuple[Snapshot, str | None]:
        """The served snapshot with one item added, replaced (``fields``) or removed (None),
        not yet published, and the registry version it serves: edited in place
        (:meth:`_edited`), or rebuilt from the store, where a change not yet ``committed`` is
        applied to what is read."""
        snap = self.snapshot
        if self._edits_in_place(snap):
            return self._edited(snap, item_id, fields), self._registry_version
        pending = None if committed else {item_id: fields}
        return self._build(self.store.dataset(pending=pending), self._registry_version)

    def _edits_in_place(self, snap: Snapshot) -> bool:
        """Whether a change can edit the served snapshot (:meth:`_edited`) rather than rebuild
        from the store: not while the store holds rows that cannot be served (a change may
        repair one: the rebuild recounts them), nor once ``max_retired_share`` of the
        catalogue's rows are retired ones (the rebuild compacts them away)."""
        retired = snap.data.n_items - snap.data.n_live
        share = self.config.max_retired_share
        return not snap.skipped.get("items") and retired < share * snap.data.n_items

    def _edited(self, snap: Snapshot, item_id: str, fields: dict[str, Any] | None) -> Snapshot:
        """``snap`` with one item added, replaced (``fields``) or removed (None), at the cost
        of that item: it is rendered, encoded (by every arm's model) and added to the indexes
        alone; the rest is shared with ``snap``, which keeps serving meanwhile."""
        rows = self.store.items_frame({item_id: fields}) if fields is not None else None
        data, added = snap.data.edited(
            rows if rows is not None else snap.data.items.iloc[:0],
            deleted=[item_id] if fields is None else [],
        )
        if data.n_live == 0:
            raise DataError("the store has no items: ingest a catalogue first", file=None)
        edited_facets(snap.data, data, added)
        arms = {
            name: replace(arm, recommender=arm.recommender.edited(data, added))
            for name, arm in snap.arms.items()
        }
        return Snapshot(data, arms, time.time(), dict(snap.skipped))

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
        if query is not None:
            history = history.with_query(query)
        [rec] = arm.recommender.recommend_histories(
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
            request_id, arm.name, arm.model_version, arm.strategy, rec, history.query, cold
        )

    def add_events(
        self,
        events: Sequence[Event],
        searches: Sequence[tuple[str, str, float]] = (),
        request_ids: Sequence[str | None] = (),
        *,
        idempotency_key: str | None = None,
    ) -> EventsAdded:
        """Commit events (and searches) to the store, then make them live.

        ``request_ids[row]`` names the served list an event answers. A click, cart or
        purchase is attributed to that list when it was served to the event's user and shows
        the item; without a request id, or with one that names no such list (a list lost in a
        crash, pruned, or mistyped), to the user's latest list with that item within an hour.
        Such events are stored all the same, never refused.

        Raises:
            DataError: invalid events or an item not in the store (nothing is written then).
        """
        attributions: dict[int, str] = {}
        unknown = 0
        now = time.time()
        lists: dict[tuple[str, str], Impression | None] = {}  # one lookup per quoted list
        for row, (user, item, _, kind, _, _) in enumerate(events):
            rid = request_ids[row] if row < len(request_ids) else None
            if rid is not None:
                if (rid, user) not in lists:
                    lists[rid, user] = self.impressions.find(rid, str(user))
                imp = lists[rid, user]
                if imp is not None and imp.user_id == str(user):
                    if kind in FEEDBACK_EVENTS and str(item) in imp.items:
                        attributions[row] = rid
                    continue
                unknown += 1
            if kind in FEEDBACK_EVENTS:
                imp = self.impressions.latest_with(str(user), str(item), now)
                if imp is not None:
                    attributions[row] = imp.request_id
        self.impressions.flush()  # attributions refer to stored lists
        result = self.store.add_events(
            events, searches=searches, attributions=attributions, idempotency_key=idempotency_key
        )
        attributed = sum(1 for row in result.added_rows if row in attributions)
        return EventsAdded(result, attributed, unknown)

    def upsert_item(self, item_id: str, fields: dict[str, Any]) -> bool:
        """Store an item and make it recommendable (its vector from its text) before returning;
        True when it is new. Nothing is stored unless it can be served.

        Raises:
            DataError: a field the store cannot keep (nothing is stored then).
        """
        return self._change_catalogue(str(item_id), fields)

    def delete_item(self, item_id: str) -> bool:
        """Remove an item (and its events) from the store and the lists; False if unknown."""
        return self._change_catalogue(str(item_id), None)

    def forget_user(self, user_id: str) -> dict[str, int] | None:
        """Forget a user everywhere (store, live history, recent lists); None if unknown."""
        # no batch of served lists may be on its way to the store meanwhile: it could write
        # this user's lists back after they were deleted
        with self.impressions.flushing():
            self.impressions.forget(user_id)
            counts = self.store.delete_user(user_id)
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
            "events_at_build": len(snap.data.events),
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
                "active": self._registry_version,
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
