"""User prompts: a user's behaviour (and an optional live query) as text, one class per strategy.

Every strategy renders a Jinja2 template (shipped in ``templates/user_<name>.j2``, replaceable
with ``template=``) and keeps within the encoder's token budget by dropping whole *oldest*
history entries, never cutting an item in half; :class:`UserPrompt` says how many were dropped.

Strategies:

* ``sectioned``: one section per behaviour ("Your purchase history: ...", "Items you rated:
  ...", "Your searches: ..."), newest first inside each, then the live query.
* ``recent``: the newest items first, one list.
* ``profile``: the user's top categories/brands/genres with counts, then recent items.
* ``query``: the live query (or the latest search) first, earlier searches and recent items as
  context.

The reference that every strategy is measured against, ``mean-of-items``, builds no prompt: see
:mod:`promptrec.scorers`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from promptrec.data.dataset import UserHistory
from promptrec.data.rows import Column
from promptrec.errors import ConfigError
from promptrec.prompts.items import ItemPrompter, category_levels, field_values
from promptrec.prompts.language import Language, localized
from promptrec.prompts.templates import load_template, render

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class UserPrompt:
    """A rendered user prompt.

    Attributes:
        text: the prompt.
        n_items: history entries in the prompt.
        n_dropped: oldest history entries left out to fit the token budget.
        n_tokens: the prompt's length in the encoder's tokens.
    """

    text: str
    n_items: int
    n_dropped: int
    n_tokens: int


NO_GENRES: list[str] = []  # shared by every item without genres (never changed in place)


@dataclass(frozen=True)
class PromptCatalog:
    """What user prompts need to know about items, computed once per catalogue: per item, its
    label, most specific category, brand and genres (columns that a catalogue change extends
    at the cost of the new items)."""

    labels: Column  # of str
    categories: Column  # of str | None
    brands: Column  # of str | None
    genres: Column  # of list[str]
    language: Language = "en"  # the language of the prompts (see :mod:`promptrec.prompts.language`)

    FIELDS: ClassVar[tuple[str, ...]] = ("labels", "categories", "brands", "genres")

    @classmethod
    def from_items(cls, items: pd.DataFrame, language: Language = "en") -> PromptCatalog:
        labels = ItemPrompter.labels(items)
        categories = [(category_levels(c) or [None])[-1] for c in field_values(items, "category")]
        brands = field_values(items, "brand")
        genres = [
            [g.strip() for g in text.split(",")] if text else NO_GENRES
            for text in field_values(items, "genres")
        ]
        return cls(Column(labels), Column(categories), Column(brands), Column(genres), language)

    def extended(self, items: pd.DataFrame) -> PromptCatalog:
        """This catalogue followed by ``items`` (new rows; this one is unchanged)."""
        more = PromptCatalog.from_items(items)
        return PromptCatalog(
            self.labels.extended(more.labels.values),
            self.categories.extended(more.categories.values),
            self.brands.extended(more.brands.values),
            self.genres.extended(more.genres.values),
            self.language,
        )


# event type -> (section key); order of SECTIONS is the order in the prompt
_EVENT_SECTION = {
    "search": "searched",
    "purchase": "purchased",
    "buy": "purchased",
    "order": "purchased",
    "transaction": "purchased",
    "cart": "cart",
    "add_to_cart": "cart",
    "addtocart": "cart",
    "rating": "rated",
    "rate": "rated",
    "review": "rated",
    "view": "browsed",
    "click": "browsed",
    "browse": "browsed",
    "detail": "browsed",
}
SECTIONS = {
    "searched": "Your searches",
    "purchased": "Your purchase history",
    "cart": "Items you added to your cart",
    "rated": "Items you rated",
    "browsed": "Items you browsed",
    "interacted": "Items you interacted with",
}
#: the sections' headings, and how a rating reads, in each language
HEADINGS: dict[str, dict[str, str]] = {
    "en": SECTIONS,
    "zh": {
        "searched": "您的搜索",
        "purchased": "您的购买记录",
        "cart": "您加入购物车的商品",
        "rated": "您评价过的商品",
        "browsed": "您浏览过的商品",
        "interacted": "您互动过的商品",
    },
}
RATED = {"en": "{label} (rated {value})", "zh": "{label}（评分 {value}）"}


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class PromptStrategy(ABC):
    """Base class: subclasses give a template name and the template's context."""

    name: ClassVar[str]

    def __init__(self, template: str | None = None, max_items: int = 50) -> None:
        if max_items < 1:
            raise ConfigError(f"max_items must be at least 1, got {max_items}")
        self.template_name = template or f"user_{self.name}"
        self.template = load_template(self.template_name)
        self.max_items = max_items

    def template_for(self, language: Language) -> Any:
        """The template in ``language`` (the shipped ones have a file per language)."""
        if language == "en":
            return self.template
        return load_template(localized(self.template_name, language))

    def __getstate__(self) -> dict[str, Any]:
        # a compiled template does not pickle: a copy (on a Ray worker) loads it again by name
        return {k: v for k, v in self.__dict__.items() if k != "template"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.template = load_template(self.template_name)

    @abstractmethod
    def context(self, history: UserHistory, catalog: PromptCatalog) -> dict[str, Any]:
        """The template variables for this (already shortened) history."""

    def render(self, history: UserHistory, catalog: PromptCatalog) -> str:
        template = self.template_for(catalog.language)
        return render(template, **self.context(history, catalog))

    def build(
        self,
        history: UserHistory,
        catalog: PromptCatalog,
        count_tokens: TokenCounter,
        max_tokens: int,
    ) -> UserPrompt:
        """The prompt with as many of the newest entries as fit in ``max_tokens``."""
        total = len(history)
        hi = min(total, self.max_items)
        text = self.render(history.last(hi), catalog)
        n_tok = count_tokens(text)
        if n_tok <= max_tokens or hi == 0:
            return UserPrompt(text, hi, total - hi, n_tok)
        lo = 0  # invariant: lo entries fit (0 always "fits": the best we can do), hi do not
        best = self.render(history.last(0), catalog)
        best_tok = count_tokens(best)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            cand = self.render(history.last(mid), catalog)
            cand_tok = count_tokens(cand)
            if cand_tok <= max_tokens:
                lo, best, best_tok = mid, cand, cand_tok
            else:
                hi = mid
        return UserPrompt(best, lo, total - lo, best_tok)

    @staticmethod
    def _labels_newest_first(history: UserHistory, catalog: PromptCatalog) -> list[str]:
        return [catalog.labels[i] for i in history.items[::-1]]


class SectionedPrompt(PromptStrategy):
    """One section per behaviour type ("Your purchase history: ..."), newest first in each."""

    name = "sectioned"

    def context(self, history: UserHistory, catalog: PromptCatalog) -> dict[str, Any]:
        grouped: dict[str, list[str]] = {key: [] for key in SECTIONS}
        seen_queries: set[str] = set()
        for pos in range(len(history) - 1, -1, -1):
            item = int(history.items[pos])
            kind = history.events[pos] if history.events else "interaction"
            section = _EVENT_SECTION.get(kind, "interacted")
            query = history.queries[pos] if history.queries else None
            if query and query not in seen_queries:
                seen_queries.add(query)
                grouped["searched"].append(query)
            if section == "searched":
                continue  # the search itself is listed above; the item is what it led to
            label = catalog.labels[item]
            value = history.values[pos] if len(history.values) else np.nan
            if section == "rated" and not np.isnan(value):
                label = RATED[catalog.language].format(label=label, value=_format_value(value))
            grouped[section].append(label)
        headings = HEADINGS[catalog.language]
        sections = [
            {"key": key, "heading": headings[key], "entries": entries}
            for key, entries in grouped.items()
            if entries
        ]
        return {"sections": sections, "query": history.query}


class RecentPrompt(PromptStrategy):
    """The newest items first, as one list."""

    name = "recent"

    def context(self, history: UserHistory, catalog: PromptCatalog) -> dict[str, Any]:
        return {"entries": self._labels_newest_first(history, catalog), "query": history.query}


class ProfilePrompt(PromptStrategy):
    """Top categories, brands and genres with counts, then the recent items."""

    name = "profile"
    top: ClassVar[int] = 3
    recent: ClassVar[int] = 10

    def context(self, history: UserHistory, catalog: PromptCatalog) -> dict[str, Any]:
        items = [int(i) for i in history.items]
        facets = []
        for facet_name, values in (
            ("categories", [catalog.categories[i] for i in items]),
            ("brands", [catalog.brands[i] for i in items]),
            ("genres", [g for i in items for g in catalog.genres[i]]),
        ):
            counts = Counter(v for v in values if v)
            if counts:
                facets.append({"name": facet_name, "counts": counts.most_common(self.top)})
        entries = self._labels_newest_first(history, catalog)[: self.recent]
        return {"facets": facets, "entries": entries, "query": history.query}


class QueryPrompt(PromptStrategy):
    """The live query (else the latest search) first; searches and recent items as context."""

    name = "query"

    def context(self, history: UserHistory, catalog: PromptCatalog) -> dict[str, Any]:
        searches: list[str] = []
        for q in reversed(history.queries):
            if q and q not in searches:
                searches.append(q)
        query = history.query
        if query is None and searches:
            query, searches = searches[0], searches[1:]
        return {
            "query": query,
            "searches": searches,
            "entries": self._labels_newest_first(history, catalog),
        }


STRATEGIES: dict[str, type[PromptStrategy]] = {
    cls.name: cls for cls in (SectionedPrompt, RecentPrompt, ProfilePrompt, QueryPrompt)
}


def get_strategy(name: str, **kwargs: Any) -> PromptStrategy:
    """A prompt strategy by name (``sectioned``, ``recent``, ``profile``, ``query``)."""
    try:
        return STRATEGIES[name](**kwargs)
    except KeyError:
        raise ConfigError(
            f"unknown prompt strategy '{name}': choose from {sorted(STRATEGIES)}"
        ) from None


def build_prompts(
    strategy: PromptStrategy,
    histories: Sequence[UserHistory],
    catalog: PromptCatalog,
    count_tokens: TokenCounter,
    max_tokens: int,
) -> list[UserPrompt]:
    return [strategy.build(h, catalog, count_tokens, max_tokens) for h in histories]
