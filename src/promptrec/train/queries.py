"""Queries as training signal: the live query a training prompt may carry.

A shopper who types a query and has a history gets a list that should answer both; a model
learns how the two combine only if it reads queries while it trains. A training pair (the
history before a target, the target) carries, with probability ``query_share``:

* the log's own search that led to the target, where the log has one (``query`` column);
* otherwise a query made from the target item's own text, one of: its deepest category
  ("nail polish"), its category path's words ("makeup nails nail polish"), a genre, or two to
  four consecutive words of its title ("sacred stones").

The query is rendered inside the prompt by the prompt strategy's template, as a live query is
when the model serves.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from promptrec.data.dataset import UserHistory
from promptrec.prompts.items import ItemPrompter, field_values

_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


class TrainingQueries:
    """What a training prompt's query may be, per item (see the module docstring).

    Args:
        items: the catalogue.
    """

    def __init__(self, items: pd.DataFrame) -> None:
        self.titles = ItemPrompter.labels(items)
        self.made: list[list[str]] = [
            _made(title, path, genres)
            for title, path, genres in zip(
                self.titles,
                field_values(items, "category"),
                field_values(items, "genres"),
                strict=True,
            )
        ]

    def for_target(self, history: UserHistory, cut: int, rng: np.random.Generator) -> str | None:
        """A query for the pair (``history`` before ``cut``, its item at ``cut``): the log's
        search that led to it, else one made from the item (None: nothing to make one of)."""
        logged = history.queries[cut] if cut < len(history.queries) else None
        if logged and logged.strip():
            return logged.strip()
        made = self.made[int(history.items[cut])]
        if not made:
            return None
        kind = made[int(rng.integers(len(made)))]
        if kind != _TITLE:
            return kind
        words = _WORD.findall(self.titles[int(history.items[cut])])
        if not words:
            return None
        size = int(rng.integers(2, 5))
        start = int(rng.integers(0, max(len(words) - size, 0) + 1))
        return " ".join(words[start : start + size]).lower()


_TITLE = "\x00title"  # stands for "words of the title" among an item's kinds of query


def _made(title: str, path: object, genres: object) -> list[str]:
    """The kinds of query an item offers: category forms, genres, and its title's words."""
    kinds: list[str] = []
    if path:
        levels = [p.strip().lower() for p in str(path).split(">") if p.strip()]
        if levels:
            kinds.append(levels[-1])
            if len(levels) > 2:
                kinds.append(" ".join(levels[1:]))  # without the shop's root ("beauty")
    if genres:
        kinds += [g.strip().lower() for g in str(genres).split(",") if g.strip()]
    if _WORD.findall(title):
        kinds.append(_TITLE)
    return kinds
