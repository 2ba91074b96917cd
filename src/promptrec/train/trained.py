"""A trained model behind the scorer contract, and its directory format.

A model directory holds:

* ``config.json``: format version, promptrec version, the training config, the network's
  shape, the encoder and item template, the catalogue fingerprint, validation history;
* ``weights.safetensors``: the network;
* ``item_ids.json``: the training catalogue's item ids (index order of the id embeddings) and
  which items have an id embedding;
* ``item_template.j2``: the item template used (so text is rendered the same way later);
* ``cooccurrence/``: a model that adds the item co-occurrence term: its neighbour table,
  counted once on the training log (in the training catalogue's order), memory-mapped when
  loaded, so that the workers of a service share one copy and no bind counts it again; new
  events enter it at the next training (a warm start: ``promptrec.train.warm``).

``recommend``, ``evaluate`` and the service load it with :meth:`TrainedScorer.load`; a
catalogue that shares too few items with the training one (another shop: a full-mode model
reads text and goes there), or a directory written by an incompatible version, is a
:class:`~promptrec.errors.ModelError`.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.rows import AppendOnlyRows
from promptrec.encoders import Encoder, load_encoder, normalise
from promptrec.errors import ModelError
from promptrec.prompts.templates import TEMPLATE_DIR
from promptrec.retrieval.neighbours import cached_nearest_rows
from promptrec.scorers.itemknn import ItemKNNScorer, load_table, save_table
from promptrec.scorers.popularity import edited_counts, item_counts
from promptrec.scorers.text import TextSpace
from promptrec.scorers.vector import VectorScorer
from promptrec.train.config import ScoringConfig, TrainConfig
from promptrec.train.folder import (
    FORMAT_VERSION,
    catalogue_fingerprint,
    log_fingerprint,
    read_model_config,
)
from promptrec.train.model import TwoTowerModel
from promptrec.train.sequences import last_items
from promptrec.version import __version__

log = logging.getLogger("promptrec")
MIN_ITEM_OVERLAP = 0.5
#: the key of :attr:`TrainedScorer.text_centre` beside the network's weights
TEXT_CENTRE = "new_items.text_centre"
#: the folder of the co-occurrence table in a model directory
COOCCURRENCE_TABLE = "cooccurrence"


class TrainedScorer(VectorScorer):
    """Scores with a trained :class:`TwoTowerModel`.

    :meth:`fit` does not train (see :class:`~promptrec.train.trainer.Trainer`): it binds the
    model to a catalogue (text vectors for every item, id embeddings matched by item id, so new
    items get text-only vectors) and a log (popularity for cold users).
    """

    name = "trained"

    def __init__(
        self,
        model: TwoTowerModel,
        config: TrainConfig,
        train_item_ids: Sequence[str],
        id_mask: np.ndarray,
        space: TextSpace | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.config_ = config
        self.train_item_ids = [str(i) for i in train_item_ids]
        self.train_id_mask = np.asarray(id_mask, dtype=bool)
        self.space = space or TextSpace(config.encoder, config.item_template)
        self.info = info or {}
        #: the settings chosen after training (see :class:`ScoringConfig`); :meth:`fit`
        #: applies a change
        self.scoring = ScoringConfig()
        #: a live query's vector (through the item tower) is added to the user's at this weight
        self.query_weight = 1.0
        self._bound: object | None = None
        self._bound_new_items: tuple[int, float, float] = (0, 1.0, 0.0)
        self._text_centre: np.ndarray | None = None  # see text_centre
        #: the text vectors and id embeddings ids are borrowed from (set when bound)
        self._donors: tuple[np.ndarray, torch.Tensor] | None = None
        self._cooccurrence: ItemKNNScorer | None = None
        #: the co-occurrence neighbour table, in the training catalogue's order: counted on the
        #: training log at the first bind (or loaded with the model) and kept for every bind
        self._cooccurrence_table: sp.csr_matrix | None = None
        self._table_events: int | None = None  # the events the table was counted on

    def __copy__(self) -> TrainedScorer:
        """A shallow copy with its own :attr:`scoring` (a change to the copy's settings leaves
        this scorer's alone)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.scoring = self.scoring.model_copy()
        return clone

    @property
    def learned_queries(self) -> bool:
        """Whether the model was trained on queries (it has a query tower): a live query then
        counts as it learned (:attr:`QueryMix.learned_query_weight`)."""
        return self.model.queries is not None

    # ------------------------------------------------------------------ binding to data
    def fit(self, data: Dataset) -> TrainedScorer:
        self.space.fit(data)
        if self._bound is not data.items or self._bound_new_items != self._new_item_settings:
            self._bind_catalogue(data)
        self.popularity = item_counts(data)
        self._cooccurrence = self._fitted_cooccurrence(data)
        self.data = data
        return self

    def _fitted_cooccurrence(self, data: Dataset) -> ItemKNNScorer | None:
        """The co-occurrence term bound to ``data``: from the model's table (counted on its
        training log), laid out by ``data``'s catalogue; counted on ``data``'s log only when
        there is no table yet, and kept as the table when ``data`` is the training catalogue
        (as the trainer's own first bind is). A model without a table bound to another
        catalogue (one saved before tables were) counts it at each bind, as it did."""
        if self.scoring.cooccurrence_weight <= 0:
            return None
        decay = self.scoring.cooccurrence_decay
        knn = self._cooccurrence
        if knn is not None and knn.data is data:
            return knn.with_decay(decay)
        table = self._cooccurrence_table
        if table is None:
            knn = ItemKNNScorer().fit(data)
            if self._is_training_catalogue(data):
                self._cooccurrence_table = knn.similarity
                self._table_events = len(data.events)
            return knn.with_decay(decay)
        if self._table_events is not None and self._table_events != len(data.events):
            log.info(
                "the co-occurrence term reads the table counted on the %d events of the "
                "training log (this log has %d): new events enter it at the next training "
                "(promptrec train --init-from)",
                self._table_events,
                len(data.events),
            )
        return ItemKNNScorer.from_table(table, self.train_rows(data.item_ids), data, decay)

    @property
    def cooccurrence_table(self) -> sp.csr_matrix | None:
        """The co-occurrence neighbour table in the training catalogue's order (None: not
        counted yet, or the term is off): memory-mapped when loaded from a model folder."""
        return self._cooccurrence_table

    def forget_cooccurrence(self) -> None:
        """Drop the co-occurrence table: the next bind counts it on its log (this scorer's
        own state; a copy made before keeps its table)."""
        self._cooccurrence_table = None
        self._table_events = None
        self._cooccurrence = None

    def _is_training_catalogue(self, data: Dataset) -> bool:
        ids = data.item_ids
        return len(ids) == len(self.train_item_ids) and all(
            str(a) == b for a, b in zip(ids, self.train_item_ids, strict=True)
        )

    def _bind_catalogue(self, data: Dataset) -> None:
        known = self.train_rows(data.item_ids) >= 0
        overlap = known.sum() / max(len(self.train_item_ids), 1)
        if overlap < MIN_ITEM_OVERLAP:
            raise ModelError(
                f"this model was trained on another catalogue: only {known.sum()} of its "
                f"{len(self.train_item_ids)} items are in the given catalogue "
                f"({data.n_items} items). A fast-mode model's item tower is learned on its "
                "own shop's items and scores another shop little better than chance (trained "
                "on amazon-beauty, on amazon-games: NDCG@10 0.0008, 0.0064 without id "
                "embeddings, against 0.029 zero-shot); "
                "train a model on this catalogue, or use a full-mode model (--mode full, it "
                "reads text) or a zero-shot strategy here"
            )
        if (~known).any():
            log.info(
                "%d items are new to the model: their vectors come from text alone",
                int((~known).sum()),
            )
        self._donors = None
        if self.scoring.borrowed_ids and self.model.items.ids is not None:
            self._donors = self._id_donors(data)
        inputs, scored = self._item_rows(data.item_ids, self.space.vectors)
        spare, n = AppendOnlyRows.spare_for(len(inputs)), len(inputs)
        self._inputs = AppendOnlyRows(inputs, spare=spare)
        self._scored = AppendOnlyRows(scored, spare=spare)
        self.input_vectors_ = torch.from_numpy(self._inputs.view(n))  # what the user tower reads
        self.item_vectors_ = torch.from_numpy(self._scored.view(n))  # what is scored
        self._bound = data.items
        self._bound_new_items = self._new_item_settings

    @property
    def _new_item_settings(self) -> tuple[int, float, float]:
        s = self.scoring
        return (s.borrowed_ids, s.new_item_scale, s.new_item_text_weight)

    @property
    def text_centre(self) -> np.ndarray:
        """``[text_dim]`` float32: new items' text match is centred on it. The mean unit text
        vector of the first catalogue the model is bound to (a trained model's training
        catalogue), then fixed: saved with the model, kept through catalogue changes, so that
        an item scores the same whichever way it entered."""
        if self._text_centre is None:
            vectors = self.space.vectors
            total = np.zeros(vectors.shape[1], dtype=np.float64)
            for start in range(0, len(vectors), 65_536):
                total += normalise(vectors[start : start + 65_536]).sum(axis=0)
            self._text_centre = (total / max(len(vectors), 1)).astype(np.float32)
        return self._text_centre

    def centred_text(self, text: np.ndarray) -> np.ndarray:
        """Items' side of new items' text match: their unit text vectors minus
        :attr:`text_centre` (``[n, text_dim]`` float32)."""
        return normalise(text) - self.text_centre

    def history_text(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """Per user, the unit-length mean of the unit text vectors of the items in the history
        (``[n, text_dim]`` float32; zeros for an empty history): the user's side of new items'
        text match (:attr:`ScoringConfig.new_item_text_weight`)."""
        vectors = self.space.vectors
        out = np.zeros((len(histories), vectors.shape[1]), dtype=np.float32)
        for row, h in enumerate(histories):
            if len(h.items):
                out[row] = normalise(vectors[h.items]).mean(axis=0)
        return normalise(out)

    def train_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Per item id, its row among the training items (their id embeddings), -1 when the
        model was not trained with it."""
        position = self._train_position
        return np.array([position.get(str(i), -1) for i in item_ids], dtype=np.int64)

    def has_id(self, item_ids: Sequence[str]) -> np.ndarray:
        """Per item id, whether the model has an id embedding for it (trained with it, and
        often enough); the others are new to the model."""
        return self._has_id(self.train_rows(item_ids))

    def _has_id(self, rows: np.ndarray) -> np.ndarray:
        known = rows >= 0
        out = np.zeros(len(rows), dtype=bool)
        out[known] = self.train_id_mask[rows[known]]
        return out

    def _item_rows(
        self, item_ids: Sequence[str], text: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The item tower's vectors for these items (``[n, dim]`` float32 each): as the user
        tower reads them, and as they are scored. Items the model was trained with add their
        id embedding; others come from their text alone (and borrowed ids), and are scored at
        :attr:`new_item_scale`, plus their text match (:attr:`new_item_text_weight`) in
        dimensions of their own: the centred unit text vector, zeros for items with an id."""
        rows = self.train_rows(item_ids)
        id_mask = self._has_id(rows)
        with torch.no_grad():
            vecs = self.model.items.project_query(torch.from_numpy(np.asarray(text)))
            if self.model.items.ids is not None:
                ids = self.model.items.ids.weight[torch.from_numpy(np.maximum(rows, 0))]
                vecs = vecs + ids * torch.from_numpy(id_mask)[:, None].float()
                if self._donors is not None and (~id_mask).any():
                    lacking = np.flatnonzero(~id_mask)
                    vecs[lacking] += self._borrowed(np.asarray(text)[lacking])
            scored = self.model.scoring(vecs)
            if self.scoring.new_item_scale != 1.0 and self.model.items.ids is not None:
                scored[torch.from_numpy(~id_mask)] *= self.scoring.new_item_scale
        scored_rows = scored.numpy()
        if self.scoring.new_item_text_weight > 0:
            text = np.asarray(text)
            match = np.zeros((len(text), text.shape[1]), dtype=np.float32)
            lacking = np.flatnonzero(~id_mask)
            match[lacking] = self.centred_text(text[lacking])
            scored_rows = np.hstack([scored_rows, match])
        return (
            np.ascontiguousarray(vecs.numpy(), dtype=np.float32),
            np.ascontiguousarray(scored_rows, dtype=np.float32),
        )

    def _id_donors(self, data: Dataset) -> tuple[np.ndarray, torch.Tensor] | None:
        """The text vectors and id embeddings of the catalogue's items that have one."""
        rows = self.train_rows(data.item_ids)
        has = self._has_id(rows)
        if not has.any():
            return None
        text = np.ascontiguousarray(self.space.vectors[has], dtype=np.float32)
        return text, self.model.items.ids.weight[torch.from_numpy(rows[has])].detach()

    def _borrowed(self, text: np.ndarray) -> torch.Tensor:
        """Per text vector, the mean id embedding of its ``borrowed_ids`` nearest donors."""
        assert self._donors is not None
        donor_text, donor_ids = self._donors
        # exact on a shop's scale; at a million items an inverted-file search kept on disk
        # (retrieval): a start over the same catalogue reads it back
        k = self.scoring.borrowed_ids
        nearest = torch.from_numpy(cached_nearest_rows(text, donor_text, k))
        found = (nearest >= 0).to(donor_ids.dtype)  # -1: fewer found (approximate search)
        total = (donor_ids[nearest.clamp_min(0)] * found[..., None]).sum(dim=1)
        return total / found.sum(dim=1, keepdim=True).clamp_min(1.0)

    @cached_property
    def _train_position(self) -> dict[str, int]:
        return {iid: i for i, iid in enumerate(self.train_item_ids)}

    def edited(self, data: Dataset, added: np.ndarray) -> TrainedScorer:
        """A copy for ``data`` (see :meth:`Scorer.edited`): the appended rows go through the
        item tower, the rest are shared. Settings changed since the last :meth:`fit` bind the
        whole catalogue again, as :meth:`fit` would (the rows must share one setting)."""
        assert self.data is not None, "fit first"
        if self._bound_new_items != self._new_item_settings:
            return self.detached().fit(data)  # type: ignore[return-value]
        clone = copy.copy(self)
        clone.space = self.space.edited(data, added)
        inputs, scored = self._item_rows(data.item_ids[added], clone.space.vectors[added])
        n = len(self.input_vectors_)
        clone._inputs, view_in = self._inputs.extended(n, inputs)
        clone._scored, view_scored = self._scored.extended(n, scored)
        clone.input_vectors_ = torch.from_numpy(view_in)
        clone.item_vectors_ = torch.from_numpy(view_scored)
        clone._popularity = edited_counts(self._popularity, self.data, data, added)
        if self._cooccurrence is not None:
            clone._cooccurrence = self._cooccurrence.edited(data, added)
        clone._bound = data.items
        clone.data = data
        return clone

    @property
    def item_vectors(self) -> np.ndarray:
        return self.item_vectors_.numpy()

    # ------------------------------------------------------------------ scoring
    def user_vectors(self, histories: Sequence[UserHistory]) -> np.ndarray:
        users = self.model_user_vectors(histories)
        weight = np.float32(self._bound_new_items[2])  # as the item vectors were bound
        if weight <= 0:
            return users
        return np.hstack([users, weight * self.history_text(histories)])

    def model_user_vectors(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """The network's user vectors (with a live query's), without the dimensions of new
        items' text match (``[n, dim]`` float32)."""
        return self._user_tensors(histories).numpy()

    def _user_tensors(self, histories: Sequence[UserHistory]) -> torch.Tensor:
        seqs = torch.from_numpy(last_items(histories, self.model.users.max_len))
        with torch.no_grad():
            users = self.model.scoring(self.model.user_vectors(self.input_vectors_, seqs))
            queries = [(row, h.query) for row, h in enumerate(histories) if h.query]
            if queries:
                qv = self.space.encoder.encode([q for _, q in queries], kind="query")
                projected = self.model.query_vectors(torch.from_numpy(qv))
                rows = torch.tensor([r for r, _ in queries])
                users[rows] = users[rows] + self.query_weight * projected
        return users

    def sparse_scores(self, histories: Sequence[UserHistory]) -> sp.csr_matrix | None:
        """The co-occurrence term at its weight (:attr:`ScoringConfig.cooccurrence_weight`)."""
        if self._cooccurrence is None:
            return None
        return self._cooccurrence.scaled_scores(histories) * np.float32(
            self.scoring.cooccurrence_weight
        )

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.config_.model_dump(),
            **self.info.get("summary", {}),
            "cooccurrence": self._cooccurrence_config(),
            "new_items": self._new_items_config(),
        }

    def _cooccurrence_config(self) -> dict[str, float]:
        out: dict[str, float] = {
            "weight": self.scoring.cooccurrence_weight,
            "decay": self.scoring.cooccurrence_decay,
        }
        if self._table_events is not None:
            out["table_events"] = self._table_events
        return out

    def _new_items_config(self) -> dict[str, float]:
        return {
            "borrowed_ids": self.scoring.borrowed_ids,
            "scale": self.scoring.new_item_scale,
            "text_weight": self.scoring.new_item_text_weight,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, data: Dataset | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        template = self.space.template_name if hasattr(self.space, "template_name") else None
        config = {
            "format_version": FORMAT_VERSION,
            "promptrec_version": __version__,
            "kind": "two-tower-fast",
            "train_config": self.config_.model_dump(),
            "model": self.model.config(),
            "encoder": self.space.encoder.name,
            "item_template": template,
            "fingerprint": catalogue_fingerprint(data) if data is not None else None,
            "train_log": log_fingerprint(data) if data is not None else None,
            "cooccurrence": self._cooccurrence_config(),
            "new_items": self._new_items_config(),
            **self.info,
        }
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        if self._text_centre is not None:
            state[TEXT_CENTRE] = torch.from_numpy(self._text_centre)
        save_file(state, str(out / "weights.safetensors"))
        if self._cooccurrence_table is not None:
            save_table(self._cooccurrence_table, out / COOCCURRENCE_TABLE)
        elif (out / COOCCURRENCE_TABLE).is_dir():  # an older model's, in the folder written over
            shutil.rmtree(out / COOCCURRENCE_TABLE)
        (out / "item_ids.json").write_text(
            json.dumps({"item_ids": self.train_item_ids, "has_id": self.train_id_mask.tolist()})
        )
        if template:
            src = Path(template) if Path(template).exists() else TEMPLATE_DIR / f"{template}.j2"
            if src.exists():
                (out / "item_template.j2").write_text(src.read_text())
        return out

    @classmethod
    def load(cls, directory: str | Path, encoder: Encoder | None = None) -> TrainedScorer:
        from safetensors.torch import load_file

        path = Path(directory)
        config = read_model_config(path)
        train_config = TrainConfig(**config["train_config"])
        model = TwoTowerModel(**config["model"])
        try:
            state = load_file(str(path / "weights.safetensors"))
            centre = state.pop(TEXT_CENTRE, None)
            model.load_state_dict(state)
        except (RuntimeError, OSError) as exc:
            raise ModelError(f"{path}: weights do not match the model config: {exc}") from exc
        ids = json.loads((path / "item_ids.json").read_text())
        template = path / "item_template.j2"
        enc = encoder or load_encoder(train_config.encoder)
        if enc.name != config["encoder"]:
            raise ModelError(f"{path}: trained with encoder {config['encoder']}, given {enc.name}")
        space = TextSpace(enc, str(template) if template.exists() else train_config.item_template)
        info = {
            k: config[k]
            for k in (
                "validation",
                "summary",
                "train_log",
                "cooccurrence_choice",
                "new_item_choice",
            )
            if k in config
        }
        scorer = cls(model, train_config, ids["item_ids"], np.array(ids["has_id"]), space, info)
        if centre is not None:
            scorer._text_centre = centre.numpy()
        if (path / COOCCURRENCE_TABLE).is_dir():
            table = load_table(path / COOCCURRENCE_TABLE)
            if table.shape[0] != len(scorer.train_item_ids):
                raise ModelError(
                    f"{path}: its co-occurrence table has {table.shape[0]} rows for "
                    f"{len(scorer.train_item_ids)} items"
                )
            scorer._cooccurrence_table = table
            scorer._table_events = (config.get("cooccurrence") or {}).get("table_events")
        mix = config.get("cooccurrence") or {}  # models written before it: none
        new_items = config.get("new_items") or {}  # models written before: text alone, as is
        scorer.scoring = ScoringConfig(
            cooccurrence_weight=mix.get("weight", 0.0),
            cooccurrence_decay=mix.get("decay", 1.0),
            borrowed_ids=new_items.get("borrowed_ids", 0),
            new_item_scale=new_items.get("scale", 1.0),
            new_item_text_weight=new_items.get("text_weight", 0.0),
        )
        return scorer
