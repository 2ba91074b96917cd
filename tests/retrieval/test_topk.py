"""Top-K with exclusions, the allow mask, and target ranks."""

from __future__ import annotations

import numpy as np

from promptrec.retrieval import ExactIndex, target_ranks, top_k


def test_top_k_orders_and_excludes() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    idx, best = top_k(scores.copy(), 2, exclude=[np.array([1]), np.array([], dtype=int)])
    assert idx.tolist() == [[3, 2], [0, 1]]
    np.testing.assert_allclose(best, [[0.7, 0.5], [0.4, 0.3]])


def test_top_k_allowed_mask_and_padding() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], dtype=np.float32)
    allowed = np.array([True, False, True, False])
    idx, best = top_k(scores.copy(), 3, allowed=allowed)
    assert idx.tolist() == [[2, 0, -1]]  # only two eligible items: padded with -1
    assert np.isneginf(best[0, 2])
    idx, _ = top_k(scores.copy(), 10)  # k larger than the catalogue
    assert idx.shape == (1, 10) and idx[0, :4].tolist() == [1, 3, 2, 0]


def test_target_ranks_count_ties_against_the_target() -> None:
    scores = np.array([[0.5, 0.5, 0.1], [0.9, 0.1, 0.3]], dtype=np.float32)
    ranks = target_ranks(scores, np.array([1, 2]))
    assert ranks.tolist() == [2, 2]
    # excluding the better item lifts the target; an excluded target is never found
    assert target_ranks(scores, np.array([2, 2]), [np.array([]), np.array([0])]).tolist() == [3, 1]
    assert target_ranks(scores, np.array([0, 0]), [np.array([0]), np.array([])])[0] == 4


def test_exact_index_is_inner_product() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    idx, best = ExactIndex(items).search(q, 5)
    expected = np.argsort(-(q @ items.T), axis=1)[:, :5]
    assert (idx == expected).all()
