"""Retrieval: top-K over item vectors or score matrices, filters, and the index contract."""

from promptrec.retrieval.filters import Filters
from promptrec.retrieval.index import ExactIndex, VectorIndex
from promptrec.retrieval.topk import target_ranks, top_k

__all__ = ["ExactIndex", "Filters", "VectorIndex", "target_ranks", "top_k"]
