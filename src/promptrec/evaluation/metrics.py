"""Ranking metrics from the 1-based rank of each user's single target.

With one target per user: Recall@K = HitRate@K = [rank <= K]; NDCG@K = 1/log2(rank + 1) when
rank <= K (the ideal DCG is 1); MRR@K = 1/rank when rank <= K. All are averaged over users.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

METRICS = ("Recall", "NDCG", "MRR")


def recall_at(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks <= k)) if len(ranks) else 0.0


def ndcg_at(ranks: np.ndarray, k: int) -> float:
    if not len(ranks):
        return 0.0
    gains = np.where(ranks <= k, 1.0 / np.log2(ranks.astype(np.float64) + 1.0), 0.0)
    return float(gains.mean())


def mrr_at(ranks: np.ndarray, k: int) -> float:
    if not len(ranks):
        return 0.0
    return float(np.where(ranks <= k, 1.0 / ranks.astype(np.float64), 0.0).mean())


_FUNCS = {"Recall": recall_at, "NDCG": ndcg_at, "MRR": mrr_at}


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int] = (10, 20)) -> dict[str, float]:
    """``{"Recall@10": ..., "NDCG@10": ..., "MRR@10": ..., "Recall@20": ...}``."""
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"K must be at least 1, got {k}")
        for name in METRICS:
            out[f"{name}@{k}"] = _FUNCS[name](ranks, k)
    return out


def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue appearing in any of the lists (``top_items``: ``[users, k]``)."""
    found = np.unique(top_items[top_items >= 0])
    return float(len(found) / n_items) if n_items else 0.0


def average_popularity(top_items: np.ndarray, counts: np.ndarray) -> float:
    """Mean interaction count (in the fitted log) of the recommended items (``top_items``:
    ``[users, k]``, ``-1`` padding ignored): how much the lists lean on what is already
    popular (RecBole's AveragePopularity)."""
    shown = top_items[top_items >= 0]
    return float(np.asarray(counts, dtype=np.float64)[shown].mean()) if len(shown) else 0.0
