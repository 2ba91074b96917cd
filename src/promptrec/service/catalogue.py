"""The served catalogue: the snapshot requests read, swapped atomically, and the catalogue
changes that make new ones.

A change made here is built first, then committed to the store, then served: a change that
cannot be served is never committed, and one that failed to commit is never served. Changes
other engines on the store made are read from the store's change log
(:meth:`LiveCatalogue.follow`, four times a second) and applied the same way, each changed item
as the store holds it now, so engines that apply the log converge whatever its order.

A change edits the served snapshot in place (the cost of one item) until a share of its rows
are retired versions of changed or removed items; the next change then rebuilds from the store,
which compacts them away (the cost of the catalogue).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from promptrec.data.dataset import Dataset
from promptrec.service.registry import ModelRegistry
from promptrec.service.snapshots import Snapshot, SnapshotBuilder
from promptrec.service.state import ServiceState
from promptrec.store import Store, stored_text

log = logging.getLogger("promptrec.service")


class LiveCatalogue:
    """The snapshot an engine serves, and every way it changes (thread-safe: one build at a
    time, each reading the store inside it).

    Args:
        store: the store, the one source of truth for the catalogue.
        state: the service's state on it (where changes are logged).
        builder: builds and edits snapshots.
        registry: the model registry, when an arm serves it.
        max_retired_share: the share of retired rows past which a change rebuilds.
    """

    def __init__(
        self,
        store: Store,
        state: ServiceState,
        builder: SnapshotBuilder,
        registry: ModelRegistry | None = None,
        max_retired_share: float = 0.25,
    ) -> None:
        self.store = store
        self.state = state
        self.builder = builder
        self.registry = registry
        self.max_retired_share = max_retired_share
        self.served_version: str | None = None  # the registry version served
        self._snapshot: Snapshot | None = None
        self._build_lock = threading.Lock()
        # the change log: how far this engine has applied it, and the stored form of the
        # changes it made or applied since its last rebuild (a change logged again is one it
        # already serves)
        self._seen = 0
        self._applied: dict[str, str | None] = {}

    @property
    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None, "rebuild first"
        return self._snapshot

    @property
    def version(self) -> int:
        """The newest change of the store's catalogue log this engine serves."""
        return self._seen

    def rebuild(self, *, version: str | None = None) -> Snapshot:
        """Build a snapshot from the store (and the registry's active model, or ``version``)
        and swap it in."""
        with self._build_lock:
            started = time.perf_counter()
            seen = self.state.catalogue_version()  # every change up to it is in what is read
            snap, version = self._build(self.store.dataset(), version)
            self._seen, self._applied = max(self._seen, seen), {}
            return self._publish(snap, version, started)

    def change(self, item_id: str, fields: dict[str, Any] | None) -> bool:
        """Add or replace an item (``fields``) or remove it (None): built, committed, served.
        Returns whether the item was new (an upsert) or existed (a delete)."""
        if fields is None and item_id not in self.snapshot.data.item_index:
            # not served: unknown, or a stored row that cannot be served (deleting it is how
            # such a row is cleared; the rebuild updates the count of skipped rows)
            removed = self.state.delete_item(item_id)
            if removed:
                self.rebuild()
            return removed
        with self._build_lock:
            started = time.perf_counter()
            new, version = self._changed(item_id, fields, committed=False)
            if fields is None:
                changed = self.state.delete_item(item_id)
            else:
                changed = self.state.upsert_item(item_id, fields)
            self._applied[item_id] = None if fields is None else stored_text(item_id, fields)
            self._publish(new, version, started)
            return changed

    def follow(self) -> int:
        """Serve the changes logged in the store since the last call: those other engines on
        the store made (each of this engine's own is served already). Returns how many items
        changed here."""
        try:
            changes = self.state.catalogue_changes(self._seen)
        except LookupError:  # this engine fell behind the log's retention: read it all
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
                if text is None and item_id not in self.snapshot.data.item_index:
                    self._applied[item_id] = None
                    continue
                fields = None if text is None else json.loads(text)
                new, version = self._changed(item_id, fields, committed=True)
                self._publish(new, version, started)
                self._applied[item_id] = text
                served += 1
            self._seen = max(self._seen, changes[-1][0])
        return served

    def _build(self, data: Dataset, version: str | None) -> tuple[Snapshot, str | None]:
        """A snapshot of ``data`` (not yet served) and the registry version it serves."""
        if self.registry is not None:
            # a catalogue change keeps the version served; only a swap changes it
            version = version or self.served_version or self.registry.active
        return self.builder.build(data, version), version

    def _changed(
        self, item_id: str, fields: dict[str, Any] | None, *, committed: bool
    ) -> tuple[Snapshot, str | None]:
        """The served snapshot with one item changed, not yet published, and the registry
        version it serves: edited in place, or rebuilt from the store, where a change not yet
        ``committed`` is applied to what is read."""
        snap = self.snapshot
        if self._edits_in_place(snap):
            return self.builder.edited(snap, item_id, fields), self.served_version
        pending = None if committed else {item_id: fields}
        return self._build(self.store.dataset(pending=pending), self.served_version)

    def _edits_in_place(self, snap: Snapshot) -> bool:
        """Whether a change can edit the served snapshot rather than rebuild from the store:
        not while the store holds rows that cannot be served (a change may repair one: the
        rebuild recounts them), nor once ``max_retired_share`` of the catalogue's rows are
        retired ones (the rebuild compacts them away)."""
        retired = snap.data.n_items - snap.data.n_live
        share = self.max_retired_share
        return not snap.skipped.get("items") and retired < share * snap.data.n_items

    def _publish(self, snap: Snapshot, version: str | None, started: float) -> Snapshot:
        self._snapshot = snap  # the atomic swap: one reference assignment
        if self.registry is not None:
            self.served_version = version
        self.builder.keep_models(version)
        log.info(
            "serving %d items, %d events, arms %s (built in %.3fs)",
            snap.data.n_live,
            snap.data.n_events,
            {a.name: f"{a.strategy}@{a.model_version}" for a in snap.arms.values()},
            time.perf_counter() - started,
        )
        return snap
