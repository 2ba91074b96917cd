"""Text scorers: items and users in one vector space of a language model.

* :class:`MeanOfItemsScorer`, the reference: the user vector is a recency-weighted mean of the
  history items' text vectors; no user prompt.
* :class:`PromptScorer`: the user vector is the encoding of a user prompt built by a
  :class:`~promptrec.prompts.users.PromptStrategy`.

Both rank items by the inner product of normalised vectors (cosine).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.rows import AppendOnlyRows, Column
from promptrec.encoders import Encoder, load_encoder, normalise
from promptrec.errors import ConfigError
from promptrec.prompts.items import ItemPrompter
from promptrec.prompts.language import Language
from promptrec.prompts.users import PromptCatalog, PromptStrategy, UserPrompt, get_strategy
from promptrec.scorers.popularity import edited_counts, item_counts
from promptrec.scorers.terms import Terms
from promptrec.scorers.vector import VectorScorer


class TextSpace:
    """Item texts and their vectors for one catalogue, shared by every text scorer.

    Args:
        encoder: an :class:`Encoder` or a spec for :func:`load_encoder` (None: the default).
        item_template: the item template (domain name or .j2 path; None picks by columns).
    """

    def __init__(
        self,
        encoder: Encoder | str | None = None,
        item_template: str | None = None,
        language: Language | None = None,
    ) -> None:
        self.encoder = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
        self.prompter = ItemPrompter(item_template, language)
        self._items: object | None = None

    #: catalogues of at least this many items are kept on disk row by row
    #: (:mod:`promptrec.scorers.space_cache`): a restart renders and encodes only the rows that
    #: changed since (None: never)
    keep_on_disk_from: int | None = 50_000

    def fitted_on(self, data: Dataset) -> bool:
        """Whether this space holds ``data``'s catalogue (the same frame)."""
        return self._items is data.items

    def fit(self, data: Dataset, *, progress: bool = False) -> TextSpace:
        """Encode the catalogue (a no-op when it is the same catalogue frame as before)."""
        if self.fitted_on(data):
            return self
        self.language = self.prompter.language_of(data.items)
        self.template_name = self.prompter.resolve(data.items.columns, self.language)
        n = len(data.items)
        self.content_key = None
        if self.keep_on_disk_from is not None and n >= self.keep_on_disk_from:
            self._fit_kept(data.items, progress)
        else:
            self._serve(_own_rows(n, self.encoder.dim), n)
            texts = self.prompter.texts(data.items, self.template_name)
            self.vectors[:] = self._encode(texts, progress)
            self.texts = Column(texts)  # each item's text, as encoded
            self.catalog = PromptCatalog.from_items(data.items, self.language)
        self._items = data.items
        return self

    #: what identifies :attr:`vectors`' content without reading them (a hash of the encoder,
    #: the template and each row's key: every row's vector follows from those), where the
    #: space was kept on disk; None otherwise, or once edited
    content_key: str | None = None

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return self.encoder.encode(texts, kind="document", show_progress=progress)

    def _fit_kept(self, items: pd.DataFrame, progress: bool) -> None:
        """:meth:`fit` through the saved copy: its rows reused, the others computed, and the
        copy replaced when any were; the copy's own map is the buffer whenever the copy holds
        exactly this catalogue's rows (:mod:`promptrec.scorers.space_cache`)."""
        from promptrec.scorers.space_cache import SpaceCache, row_keys

        cache = SpaceCache(self.encoder.name, self.template_name, items.dtypes)
        keys = row_keys(items)
        # every row's vector follows from its key in this copy, however it is obtained below
        digest = hashlib.sha1(cache.folder.name.encode())
        digest.update(np.ascontiguousarray(keys))
        self.content_key = digest.hexdigest()
        n = len(items)
        with cache.locked():
            saved = cache.read()
            if saved is not None and saved.vectors.shape[1:] != (self.encoder.dim,):
                saved = None
            shared = saved.shared_rows(keys) if saved is not None else None
            if shared is not None:
                self._serve(shared, n)
                texts = saved.texts  # type: ignore[union-attr]
                columns = {name: getattr(saved, name) for name in PromptCatalog.FIELDS}
            else:
                texts, columns = self._fill_kept(items, keys, saved, cache, progress)
        self.texts = Column(texts)
        catalog = {name: Column(columns[name]) for name in columns}
        self.catalog = PromptCatalog(**catalog, language=self.language)

    def _fill_kept(
        self, items: pd.DataFrame, keys: np.ndarray, saved: Any, cache: Any, progress: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """This catalogue's rows in a buffer of this process's own: those ``saved`` holds
        copied from it, the others rendered and encoded; then the copy is saved again (and
        served, mapped) when any row was computed. Returns the texts and the label columns."""
        n = len(items)
        self._serve(_own_rows(n, self.encoder.dim), n)
        at = saved.positions(keys) if saved is not None else np.full(n, -1)
        new = np.flatnonzero(at < 0)
        old = np.flatnonzero(at >= 0)
        texts = np.empty(n, dtype=object)
        columns = {name: np.empty(n, dtype=object) for name in PromptCatalog.FIELDS}
        if saved is not None:
            saved.gather_vectors(at, self.vectors)
            texts[old] = saved.texts[at[old]]
            for name in PromptCatalog.FIELDS:
                columns[name][old] = getattr(saved, name)[at[old]]
        if len(new):
            rows = items.iloc[new]
            texts[new] = fresh = self.prompter.texts(rows, self.template_name)
            self.vectors[new] = self._encode(fresh, progress)
            more = PromptCatalog.from_items(rows, self.language)
            for name in PromptCatalog.FIELDS:
                columns[name][new] = getattr(more, name).values  # object arrays
            written = cache.write(keys, texts, self.vectors, **columns)
            if written is not None:  # the copy just written: serve its map, shared
                self._serve(written, n)
        return texts, columns

    def _serve(self, rows: np.ndarray, n: int) -> None:
        """Serve the first ``n`` of ``rows`` (the rest: room for rows appended later)."""
        self._rows = AppendOnlyRows(rows, length=n)
        self.vectors = self._rows.view(n)

    def edited(self, data: Dataset, added: np.ndarray) -> TextSpace:
        """A copy for ``data`` (this space's catalogue edited by :meth:`Dataset.edited`): only
        the appended rows are rendered and encoded, with this catalogue's template."""
        rows = data.rows(added)
        texts = [self.prompter.text(r, self.template_name) for r in rows.to_dict("records")]
        clone = copy.copy(self)
        clone.texts = self.texts.extended(texts)
        vectors = self.encoder.encode(texts, kind="document") if texts else self.vectors[:0]
        clone._rows, clone.vectors = self._rows.extended(len(self.vectors), vectors)
        clone.content_key = None  # the appended rows are not kept on disk
        clone.catalog = self.catalog.extended(rows)
        clone._items = data.items
        return clone


def _own_rows(n: int, dim: int) -> np.ndarray:
    """A buffer of ``n`` rows and the catalogue's room after them, in this process's memory."""
    return np.empty((n + AppendOnlyRows.spare_for(n), dim), dtype=np.float32)


class _TextScorer(VectorScorer):
    uses_text = True

    def __init__(self, space: TextSpace | None = None, *, query_weight: float = 1.0) -> None:
        super().__init__()
        self.space = space or TextSpace()
        self.query_weight = query_weight

    def fit(self, data: Dataset) -> _TextScorer:
        self.space.fit(data)
        self.popularity = item_counts(data)
        self.data = data
        return self

    def edited(self, data: Dataset, added: np.ndarray) -> _TextScorer:
        assert self.data is not None, "fit first"
        clone = copy.copy(self)
        clone.space = self.space.edited(data, added)
        clone._popularity = edited_counts(self._popularity, self.data, data, added)
        clone.data = data
        return clone

    @property
    def item_vectors(self) -> np.ndarray:
        return self.space.vectors

    @property
    def item_vectors_key(self) -> str | None:
        return self.space.content_key


class MeanOfItemsScorer(_TextScorer):
    """The reference text recommender: a recency-weighted mean of history item vectors.

    The newest item has weight 1, the one before ``decay``, then ``decay**2``... A live query is
    added as ``query_weight`` times its (query-encoded) vector.

    Args:
        decay: recency decay in (0, 1]; 1 is a plain mean.
        max_items: newest history items used.
    """

    name = "mean-of-items"

    def __init__(
        self,
        space: TextSpace | None = None,
        *,
        decay: float = 0.8,
        max_items: int = 50,
        query_weight: float = 1.0,
    ) -> None:
        super().__init__(space, query_weight=query_weight)
        if not 0 < decay <= 1:
            raise ConfigError(f"decay must be in (0, 1], got {decay}")
        self.decay = decay
        self.max_items = max_items

    def user_vectors(self, histories: Sequence[UserHistory]) -> np.ndarray:
        vecs = np.zeros((len(histories), self.item_vectors.shape[1]), dtype=np.float32)
        for row, h in enumerate(histories):
            items = h.items[-self.max_items :]
            if len(items):
                weights = self.decay ** np.arange(len(items) - 1, -1, -1, dtype=np.float32)
                vecs[row] = weights @ self.item_vectors[items]
        vecs = normalise(vecs) * np.linalg.norm(vecs, axis=1, keepdims=True).astype(bool)
        queries = [(row, h.query) for row, h in enumerate(histories) if h.query]
        if queries:
            rows = [r for r, _ in queries]
            qv = self.space.encoder.encode([q for _, q in queries], kind="query")
            vecs[rows] = normalise(vecs[rows] + self.query_weight * qv)
        return vecs

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "decay": self.decay, "max_items": self.max_items}


class MultiInterestScorer(MeanOfItemsScorer):
    """Several vectors per user, one per interest cluster; an item scores by the best match.

    The history's item vectors are grouped by spherical k-means into at most ``interests``
    clusters (fewer for short histories); each cluster's vector is its recency-weighted mean,
    and an item's score is its highest cosine to any of them, minus ``cluster_penalty`` times
    how small that cluster is, so that one stray item does not dominate.
    """

    name = "multi-interest"
    ranks_by_vectors = False  # an item scores by its best cluster, not one inner product

    def __init__(
        self,
        space: TextSpace | None = None,
        *,
        interests: int = 3,
        min_items_per_interest: int = 3,
        decay: float = 0.8,
        max_items: int = 50,
        iterations: int = 5,
        cluster_penalty: float = 0.05,
    ) -> None:
        super().__init__(space, decay=decay, max_items=max_items)
        self.interests = interests
        self.min_items_per_interest = min_items_per_interest
        self.iterations = iterations
        self.cluster_penalty = cluster_penalty

    def _centroids(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vecs = self.item_vectors[items]
        weights = self.decay ** np.arange(len(items) - 1, -1, -1, dtype=np.float32)
        k = max(1, min(self.interests, len(items) // self.min_items_per_interest))
        # deterministic init: the newest item, then the items least similar to chosen ones
        chosen = [len(items) - 1]
        for _ in range(k - 1):
            sims = (vecs @ vecs[chosen].T).max(axis=1)
            chosen.append(int(np.argmin(sims)))
        cent = vecs[chosen]
        for _ in range(self.iterations):
            assign = np.argmax(vecs @ cent.T, axis=1)
            cent = np.stack(
                [
                    weights[assign == c] @ vecs[assign == c] if (assign == c).any() else cent[c]
                    for c in range(k)
                ]
            )
            cent = normalise(cent)
        assign = np.argmax(vecs @ cent.T, axis=1)
        share = np.bincount(assign, weights=weights, minlength=k) / weights.sum()
        return cent, share

    def terms(self, histories: Sequence[UserHistory]) -> Terms:
        self._check_fitted()
        return Terms.of_scores(self._score(histories))

    def _score(self, histories: Sequence[UserHistory]) -> np.ndarray:
        out = np.empty((len(histories), self.item_vectors.shape[0]), dtype=np.float32)
        # cold users and live queries: the mean-of-items path
        plain = super().terms(histories).scores()
        for row, h in enumerate(histories):
            items = h.items[-self.max_items :]
            if len(items) < 2 * self.min_items_per_interest or h.query:
                out[row] = plain[row]
                continue
            cent, share = self._centroids(items)
            sims = cent @ self.item_vectors.T - self.cluster_penalty * (1 - share)[:, None]
            out[row] = sims.max(axis=0)
        return out

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "name": self.name,
            "interests": self.interests,
            "min_items_per_interest": self.min_items_per_interest,
        }


class PromptScorer(_TextScorer):
    """Users are encoded from a prompt built by a prompt strategy.

    Args:
        strategy: a :class:`PromptStrategy` or its name (``sectioned``, ``recent``, ``profile``,
            ``query``).
        max_tokens: the prompt's token budget; None uses the encoder's limit.
    """

    # Prompts are encoded a batch of users at a time; the encoder sorts each batch by length, so
    # larger batches pad less (2048 encodes 15% faster than 256 on amazon-beauty prompts).
    batch_size = 2048

    def __init__(
        self,
        strategy: PromptStrategy | str = "sectioned",
        space: TextSpace | None = None,
        *,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__(space)
        self.strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
        self.name = self.strategy.name  # type: ignore[misc]
        budget = self.space.encoder.max_tokens
        self.max_tokens = budget if max_tokens is None else min(max_tokens, budget)

    def prompts(self, histories: Sequence[UserHistory]) -> list[UserPrompt]:
        self._check_fitted()
        count = self.space.encoder.count_tokens
        catalog = self.space.catalog
        return [self.strategy.build(h, catalog, count, self.max_tokens) for h in histories]

    def user_vectors(self, histories: Sequence[UserHistory]) -> np.ndarray:
        prompts = self.prompts(histories)
        vecs = self.space.encoder.encode([p.text for p in prompts], kind="query")
        empty = np.array([len(h) == 0 and not h.query for h in histories])
        vecs[empty] = 0.0
        return vecs

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.strategy.template_name,
            "max_tokens": self.max_tokens,
            "max_items": self.strategy.max_items,
        }
