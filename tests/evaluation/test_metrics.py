"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptrec.evaluation.metrics import average_popularity, coverage, ranking_metrics


def test_metrics_by_hand() -> None:
    ranks = np.array([1, 2, 11, 3])
    m = ranking_metrics(ranks, ks=(10, 20))
    assert m["Recall@10"] == pytest.approx(3 / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert m["Recall@20"] == pytest.approx(1.0)
    assert m["NDCG@20"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(12) + 1 / math.log2(4)) / 4
    )
    assert m["MRR@20"] == pytest.approx((1 + 1 / 2 + 1 / 11 + 1 / 3) / 4)


def test_a_miss_scores_zero_and_k_must_be_positive() -> None:
    assert ranking_metrics(np.array([100]), ks=(10,)) == {
        "Recall@10": 0.0,
        "NDCG@10": 0.0,
        "MRR@10": 0.0,
    }
    with pytest.raises(ValueError):
        ranking_metrics(np.array([1]), ks=(0,))


def test_average_popularity_is_the_mean_count_of_what_was_shown() -> None:
    tops = np.array([[0, 1], [1, -1]])  # padding ignored
    counts = np.array([10.0, 4.0, 100.0])
    assert average_popularity(tops, counts) == pytest.approx((10 + 4 + 4) / 3)
    assert average_popularity(np.full((2, 2), -1), counts) == 0.0


def test_coverage_counts_distinct_items() -> None:
    tops = np.array([[0, 1, 2], [2, 3, -1]])
    assert coverage(tops, 10) == pytest.approx(0.4)
