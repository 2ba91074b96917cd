"""Retrieval filters: category, price range, allow and deny lists, as one item mask."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptrec.data.dataset import Dataset
from promptrec.data.rows import Column
from promptrec.prompts.items import category_levels, field_values


class Filters(BaseModel):
    """Which items may be recommended.

    Attributes:
        categories: keep items in any of these categories (case-insensitive; matches any level
            of a category path, or a genre).
        price_min / price_max: keep items priced in this range (items without a price are
            dropped when either bound is set).
        allow: keep only these item ids.
        deny: never these item ids.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: Sequence[str] | None = None
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)
    allow: Sequence[str] | None = None
    deny: Sequence[str] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> Filters:
        if (
            self.price_min is not None
            and self.price_max is not None
            and self.price_min > self.price_max
        ):
            raise ValueError(f"price_min {self.price_min} is above price_max {self.price_max}")
        return self

    @property
    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (self.categories, self.price_min, self.price_max, self.allow, self.deny)
        )

    def mask(self, data: Dataset) -> np.ndarray | None:
        """A ``[n_items]`` bool mask of eligible items, or None when nothing is filtered."""
        if self.is_empty:
            return None
        facets = item_facets(data)
        keep = np.ones(data.n_items, dtype=bool)
        if self.categories is not None:
            chosen = np.zeros(data.n_items, dtype=bool)
            for label in {c.strip().lower() for c in self.categories}:
                chosen[facets.items_labelled(label)] = True
            keep &= chosen
        if self.price_min is not None or self.price_max is not None:
            price = facets.prices
            lo = -np.inf if self.price_min is None else self.price_min
            hi = np.inf if self.price_max is None else self.price_max
            keep &= ~np.isnan(price) & (price >= lo) & (price <= hi)
        if self.allow is not None:
            allowed = np.zeros(data.n_items, dtype=bool)
            idx = [data.item_index[a] for a in map(str, self.allow) if a in data.item_index]
            allowed[idx] = True
            keep &= allowed
        if self.deny is not None:
            idx = [data.item_index[d] for d in map(str, self.deny) if d in data.item_index]
            keep[idx] = False
        return keep


class _Facets:
    """Per item: its lower-cased category labels and its price (columns a catalogue change
    extends at the cost of the new items), and the items of each label."""

    def __init__(self, categories: list[set[str]], prices: np.ndarray) -> None:
        self._prices = Column(prices)
        self.all_categories: frozenset[str] = frozenset().union(*categories)
        # label -> the items that have it: a filter costs its matches, not the catalogue
        members: dict[str, list[int]] = {}
        for item, labels in enumerate(categories):
            for label in labels:
                members.setdefault(label, []).append(item)
        self._by_label = {
            label: Column(np.array(items, dtype=np.int64)) for label, items in members.items()
        }

    @property
    def prices(self) -> np.ndarray:
        """``[n_items]``: NaN where an item has no price."""
        return self._prices.values

    @classmethod
    def of(cls, items: pd.DataFrame) -> _Facets:
        categories: list[set[str]] = []
        for path, genres in zip(
            field_values(items, "category"), field_values(items, "genres"), strict=True
        ):
            labels: set[str] = set()
            if path:
                labels.update(level.lower() for level in category_levels(path))
                labels.add(path.lower())
            if genres:
                labels.update(g.strip().lower() for g in genres.split(","))
            categories.append(labels)
        prices = np.array(
            [np.nan if p is None else p for p in field_values(items, "price")], dtype=np.float64
        )
        return cls(categories, prices.reshape(len(items)))

    def extended(self, items: pd.DataFrame) -> _Facets:
        """These facets followed by those of ``items`` (new rows): the cost of the new rows
        and of the labels they carry, not of the catalogue."""
        more = _Facets.of(items)
        offset = len(self.prices)
        clone = copy.copy(self)
        clone._prices = self._prices.extended(more.prices)
        clone.all_categories = self.all_categories | more.all_categories
        clone._by_label = dict(self._by_label)
        for label, rows in more._by_label.items():
            before = self._by_label.get(label)
            shifted = rows.values + offset
            clone._by_label[label] = Column(shifted) if before is None else before.extended(shifted)
        return clone

    def items_labelled(self, label: str) -> np.ndarray:
        """Indices of the items with this (lower-cased) category label."""
        rows = self._by_label.get(label)
        return np.zeros(0, dtype=np.int64) if rows is None else rows.values


_FACETS: dict[int, tuple[object, _Facets]] = {}


def _remember(data: Dataset, facets: _Facets) -> _Facets:
    while len(_FACETS) >= 8:  # a long-running service rebuilds catalogues: keep the newest
        del _FACETS[next(iter(_FACETS))]
    _FACETS[id(data.items)] = (data.items, facets)
    return facets


def item_facets(data: Dataset) -> _Facets:
    """Lower-cased category labels and prices per item (cached per catalogue frame)."""
    cached = _FACETS.get(id(data.items))
    if cached is not None and cached[0] is data.items:
        return cached[1]
    return _remember(data, _Facets.of(data.items))


def edited_facets(old: Dataset, data: Dataset, added: np.ndarray) -> _Facets:
    """:func:`item_facets` of ``data``, ``old`` edited by :meth:`Dataset.edited`, from
    ``old``'s facets and the appended rows alone."""
    return _remember(data, item_facets(old).extended(data.rows(added)))
