"""Queries as training signal: the live query a training prompt may carry.

A shopper who types a query and has a history gets a list that should answer both; a model
learns how the two combine only if it reads queries while it trains. A training pair (the
history before a target, the target) carries, with probability ``query_share``:

* the log's own search that led to the target, where the log has one (``query`` column);
* otherwise a query made from the target item's own text, one of: its deepest category
  ("nail polish"), its category path's words ("makeup nails nail polish"), a genre, or two to
  four consecutive words of its title ("sacred stones").

In full mode the query is rendered inside the prompt by the prompt strategy's template, as a
live query is when the model serves. In fast mode (:class:`QueryBank`) such a pair is trained
twice, on the history alone and with the query's text vector, through the model's query tower,
added to the user vector, as a live query's is when served.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.prompts.items import ItemPrompter, category_levels, field_values

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
        return self.title_words(int(history.items[cut]), rng)

    def title_words(self, item: int, rng: np.random.Generator) -> str | None:
        """Two to four consecutive words of ``item``'s title, lower-cased (None: no words)."""
        words = _WORD.findall(self.titles[item])
        if not words:
            return None
        size = int(rng.integers(2, 5))
        start = int(rng.integers(0, max(len(words) - size, 0) + 1))
        return " ".join(words[start : start + size]).lower()

    def options(self, item: int, rng: np.random.Generator, title_windows: int) -> list[str]:
        """The queries ``item`` offers, with ``title_windows`` drawn windows of its title's
        words in place of "words of the title" (0: none of them)."""
        out = []
        for kind in self.made[item]:
            if kind != _TITLE:
                out.append(kind)
                continue
            for _ in range(title_windows):
                words = self.title_words(item, rng)
                if words is not None:
                    out.append(words)
        return list(dict.fromkeys(out))


class QueryBank:
    """Fast mode's training queries as text vectors, each encoded once by the frozen encoder
    (in fast mode the language model does not change, so a query's vector does not either).

    Per item, the queries it offers (:meth:`TrainingQueries.options`: its category forms,
    genres and ``title_windows`` windows of its title's words; in a catalogue of more than
    ``max_titled`` items, a seeded ``max_titled`` of them offer title windows, the rest their
    categories alone); per event of the log, the search that led to it (the ``max_logged`` most
    frequent searches; others count as none). :meth:`draw` picks a training position's query.

    Args:
        data: the training log and catalogue.
        encode: texts -> ``[n, dim]`` float32 vectors (the encoder, as it reads queries).
        histories: the histories whose events :attr:`logged` follows (``data.histories()``).
    """

    def __init__(
        self,
        data: Dataset,
        encode: Callable[[list[str]], np.ndarray],
        histories: Sequence[UserHistory],
        *,
        title_windows: int = 2,
        max_titled: int = 100_000,
        max_logged: int = 200_000,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        made = TrainingQueries(data.items)
        titled = np.ones(data.n_items, dtype=bool)
        if data.n_items > max_titled:
            titled[:] = False
            titled[rng.choice(data.n_items, max_titled, replace=False)] = True
        strings: dict[str, int] = {}
        indptr = np.zeros(data.n_items + 1, dtype=np.int64)
        rows: list[int] = []
        for item in range(data.n_items):
            for query in made.options(item, rng, title_windows if titled[item] else 0):
                rows.append(strings.setdefault(query, len(strings)))
            indptr[item + 1] = len(rows)
        searched = Counter(
            q.strip() for h in histories for q in h.queries if q is not None and q.strip()
        )
        for query, _ in searched.most_common(max_logged):
            strings.setdefault(query, len(strings))
        self.strings = list(strings)
        self.logged = [
            np.array(
                [strings.get(q.strip(), -1) if q else -1 for q in h.queries]
                if len(h.queries) == len(h.items)
                else np.full(len(h.items), -1),
                dtype=np.int64,
            )
            for h in histories
        ]
        vectors = encode(self.strings) if self.strings else np.zeros((0, 1), np.float32)
        self.vectors = torch.from_numpy(np.asarray(vectors, dtype=np.float32)).half()
        self.indptr = torch.from_numpy(indptr)
        self.options = torch.tensor(rows, dtype=torch.int64)

    def to(self, device: str) -> QueryBank:
        self.vectors = self.vectors.to(device)
        self.indptr = self.indptr.to(device)
        self.options = self.options.to(device)
        return self

    def draw(
        self, targets: torch.Tensor, logged: torch.Tensor, share: float, gen: torch.Generator
    ) -> torch.Tensor:
        """Per training position (its target item, its logged search's row or -1), the row
        of its query, or -1 (no query): with probability ``share``, the logged search, else
        one of the target's own queries drawn uniformly."""
        n = targets.shape[0]
        device = targets.device
        asked = torch.rand(n, generator=gen, device=device) < share
        start, count = self.indptr[targets], self.indptr[targets + 1] - self.indptr[targets]
        offset = (torch.rand(n, generator=gen, device=device) * count).long()
        pick = (start + torch.minimum(offset, (count - 1).clamp_min(0))).clamp_max(
            max(len(self.options) - 1, 0)
        )
        made = (
            torch.where(count > 0, self.options[pick], -1)
            if len(self.options)
            else torch.full_like(targets, -1)
        )
        chosen = torch.where(logged >= 0, logged, made)
        return torch.where(asked, chosen, -1)


_TITLE = "\x00title"  # stands for "words of the title" among an item's kinds of query


def _made(title: str, path: object, genres: object) -> list[str]:
    """The kinds of query an item offers: category forms, genres, and its title's words."""
    kinds: list[str] = []
    if path:
        levels = [level.lower() for level in category_levels(path)]
        if levels:
            kinds.append(levels[-1])
            if len(levels) > 2:
                kinds.append(" ".join(levels[1:]))  # without the shop's root ("beauty")
    if genres:
        kinds += [g.strip().lower() for g in str(genres).split(",") if g.strip()]
    if _WORD.findall(title):
        kinds.append(_TITLE)
    return kinds
