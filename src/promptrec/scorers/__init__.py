"""Scorers: every recommender component behind one contract (:class:`Scorer`).

The registry is explicit: ``SCORERS`` names every built-in; :func:`make_scorer` builds one.
"""

from __future__ import annotations

from typing import Any

from promptrec.errors import ConfigError
from promptrec.prompts.users import STRATEGIES
from promptrec.scorers.base import NotFittedError, Scorer
from promptrec.scorers.itemknn import ItemKNNScorer
from promptrec.scorers.popularity import PopularityScorer
from promptrec.scorers.text import (
    MeanOfItemsScorer,
    MultiInterestScorer,
    PromptScorer,
    TextSpace,
)
from promptrec.scorers.vector import VectorScorer

BASELINES = ("popularity", "itemknn", "mean-of-items")
SCORERS = (*BASELINES, *STRATEGIES, "multi-interest")

__all__ = [
    "BASELINES",
    "ItemKNNScorer",
    "MeanOfItemsScorer",
    "MultiInterestScorer",
    "NotFittedError",
    "PopularityScorer",
    "PromptScorer",
    "SCORERS",
    "Scorer",
    "TextSpace",
    "VectorScorer",
    "make_scorer",
]


def make_scorer(
    name: str, space: TextSpace | None = None, *, max_tokens: int | None = None, **options: Any
) -> Scorer:
    """A built-in scorer by name; text scorers share ``space`` (built on demand).

    ``max_tokens`` is the user prompt budget of the prompt strategies (others have no prompt).
    """
    if name == "popularity":
        return PopularityScorer()
    if name == "itemknn":
        return ItemKNNScorer(**options)
    if name == "mean-of-items":
        return MeanOfItemsScorer(space or TextSpace(), **options)
    if name == "multi-interest":
        return MultiInterestScorer(space or TextSpace(), **options)
    if name in STRATEGIES:
        return PromptScorer(name, space or TextSpace(), max_tokens=max_tokens, **options)
    raise ConfigError(f"unknown strategy '{name}': choose from {list(SCORERS)}")
