"""What requests read, and how it is built: one immutable :class:`Snapshot` of the catalogue
and of every A/B arm's fitted recommender.

A snapshot owns what it reads: each build fits its own copies of the scorers and their text
spaces (sharing only the read-only encoder and model weights), so nothing a request uses
changes after the snapshot is published. :class:`SnapshotBuilder` builds one from the store's
data (the cost of the catalogue) or edits one with a single item added, changed or removed (the
cost of that item: it is rendered, encoded by every arm's model and added to the indexes
alone; the rest is shared with the snapshot it came from).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from promptrec.data.dataset import Dataset
from promptrec.encoders import CachedEncoder, load_encoder
from promptrec.errors import DataError
from promptrec.recommender import Recommender
from promptrec.retrieval.filters import edited_facets, item_facets
from promptrec.scorers import SCORERS, TextSpace, make_scorer
from promptrec.service.config import REGISTRY, ArmSpec, EngineConfig
from promptrec.service.registry import ModelRegistry
from promptrec.store import Store
from promptrec.store.items import new_items_frame


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


class SnapshotBuilder:
    """Builds an engine's snapshots (see the module docstring).

    Args:
        store: the store (the catalogue's item template is recorded in it).
        config: the engine's settings (arms, encoder, item template, index).
        registry: the model registry, for arms that serve it.
    """

    def __init__(
        self, store: Store, config: EngineConfig, registry: ModelRegistry | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.registry = registry
        self._encoders: dict[str, Any] = {}
        self._models: dict[str, Any] = {}  # loaded model folders, by resolved path
        self._item_template = config.item_template

    def build(self, data: Dataset, version: str | None) -> Snapshot:
        """A snapshot of ``data`` (not yet served), its registry arms serving ``version``."""
        if data.n_items == 0:
            raise DataError("the store has no items: ingest a catalogue first", file=None)
        if self._item_template is None:
            self._item_template = self._catalogue_template(data)
        arms = {a.name: self._serve_arm(a, data, version) for a in self.config.arms}
        # what the first request would otherwise compute: the filters' per-item labels, the
        # items' display titles, the id map
        item_facets(data)
        for arm in arms.values():
            arm.recommender.labels  # noqa: B018 (made now)
        data.item_index  # noqa: B018 (a cached property: built now)
        # requests read users' histories from the store, and a catalogue change edits the
        # arms at the cost of its item: nothing reads the build's log again (at 5 million
        # events it held half a gigabyte a worker)
        data.release_log()
        return Snapshot(data, arms, time.time(), dict(self.store.skipped))

    def edited(self, snap: Snapshot, item_id: str, fields: dict[str, Any] | None) -> Snapshot:
        """``snap`` with one item added, replaced (``fields``) or removed (None), at the cost
        of that item; ``snap`` keeps serving meanwhile."""
        rows = new_items_frame({item_id: fields}) if fields is not None else None
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

    def keep_models(self, version: str | None) -> None:
        """Drop the loaded models no arm serves any more (once ``version`` is served)."""
        keep = {str(self.registry.path(version).resolve())} if self.registry and version else set()
        folders = [Path(a.source) for a in self.config.arms if a.source not in SCORERS]
        keep |= {str(f.resolve()) for f in folders if f.is_dir()}
        for key in list(self._models):
            if key not in keep:
                del self._models[key]

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

        prompter = ItemPrompter(None)
        picked = prompter.resolve(data.items.columns, prompter.language_of(data.items))
        self.store.set_meta("item_template", picked, overwrite=False)
        return self.store.meta("item_template") or picked

    def _model(self, path: Path) -> Any:
        from promptrec.train.load import load_model

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
