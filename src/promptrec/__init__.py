"""promptrec: product recommendation with language models and prompt strategies.

The public API, in the order a user meets it::

    from promptrec import load_dataset, Recommender
    data = load_dataset("path/to/movielens-100k")      # or catalog + events files
    rec = Recommender(strategy="mean-of-items").fit(data)
    recs = rec.recommend(["42"], n=10, explain=True)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from promptrec.version import __version__

_LAZY = {
    "Dataset": "promptrec.data.dataset",
    "load_dataset": "promptrec.data.loaders",
    "read_catalog": "promptrec.data.readers",
    "read_events": "promptrec.data.readers",
    "leave_last_out": "promptrec.data.split",
    "Store": "promptrec.store",
    "Recommender": "promptrec.recommender",
    "Recommendation": "promptrec.recommender",
    "Filters": "promptrec.retrieval.filters",
    "load_encoder": "promptrec.encoders",
    "evaluate": "promptrec.evaluation.evaluator",
    "PromptrecError": "promptrec.errors",
    "DataError": "promptrec.errors",
    "ConfigError": "promptrec.errors",
    "ModelError": "promptrec.errors",
}

__all__ = [
    "ConfigError",
    "DataError",
    "Dataset",
    "Filters",
    "ModelError",
    "PromptrecError",
    "Recommendation",
    "Recommender",
    "Store",
    "__version__",
    "evaluate",
    "leave_last_out",
    "load_dataset",
    "load_encoder",
    "read_catalog",
    "read_events",
]

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.data.dataset import Dataset
    from promptrec.data.loaders import load_dataset
    from promptrec.data.readers import read_catalog, read_events
    from promptrec.data.split import leave_last_out
    from promptrec.encoders import load_encoder
    from promptrec.errors import ConfigError, DataError, ModelError, PromptrecError
    from promptrec.evaluation.evaluator import evaluate
    from promptrec.recommender import Recommendation, Recommender
    from promptrec.retrieval.filters import Filters
    from promptrec.store import Store


def __getattr__(name: str) -> Any:  # lazy imports keep `promptrec --help` fast
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'promptrec' has no attribute {name!r}")
