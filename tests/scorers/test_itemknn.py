"""ItemKNN on real amazon-beauty users: recency weighting, scaled rows, catalogue edits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import UserHistory
from promptrec.errors import ConfigError
from promptrec.scorers import ItemKNNScorer


def _history(items: list[int]) -> UserHistory:
    return UserHistory("u", np.array(items, dtype=np.int64), np.arange(len(items), dtype=float))


def test_recency_weights_the_newest_item_most(beauty_slice) -> None:
    """A history's score is the sum of its items' similarity rows, the newest at 1, the one
    before at ``decay``...; an item seen twice counts once, at its newest position."""
    knn = ItemKNNScorer(decay=0.5).fit(beauty_slice)
    sim = knn.similarity.toarray()  # [history item, target]
    busy = np.argsort(-np.asarray((knn.similarity != 0).sum(axis=1)).ravel())[:3]
    a, b, c = (int(i) for i in busy)
    got = knn.score([_history([a, b, a, c])])[0]
    want = 1.0 * sim[c] + 0.5 * sim[a] + 0.25 * sim[b]  # a's newest: age 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # decay 1: every distinct item counts once (RecBole's binary history)
    flat = ItemKNNScorer().fit(beauty_slice).score([_history([a, b, a, c])])[0]
    np.testing.assert_allclose(flat, sim[a] + sim[b] + sim[c], rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="decay"):
        ItemKNNScorer(decay=0)


def test_scaled_scores_put_each_users_best_item_at_one(beauty_slice) -> None:
    knn = ItemKNNScorer(decay=0.7).fit(beauty_slice)
    hist = beauty_slice.histories()[:40]
    dense = knn.score(hist)
    scaled = knn.scaled_scores(hist).toarray()
    has = dense.max(axis=1) > 0
    assert has.sum() > 30
    np.testing.assert_allclose(scaled.max(axis=1)[has], 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        scaled[has], dense[has] / dense[has].max(axis=1, keepdims=True), rtol=1e-5
    )
    assert not scaled[~has].any()


def test_an_edited_catalogue_scores_as_a_fit_on_it(beauty_slice) -> None:
    """A new item co-occurs with nothing; a replaced item keeps its co-occurrences on its new
    row; a removed one loses them: as a fit on the edited catalogue has it."""
    knn = ItemKNNScorer(k=1000).fit(beauty_slice)  # k above any row's neighbours: no cut
    counts = np.asarray((knn.similarity != 0).sum(axis=0)).ravel()
    changed, removed = (str(beauty_slice.item_ids[i]) for i in np.argsort(-counts)[:2])
    rows = pd.DataFrame(
        [
            {"item_id": "new-1", "title": "Red nail polish", "price": 5.0},
            {"item_id": changed, "title": "Rose water toner"},
        ]
    )
    edited, added = beauty_slice.edited(rows, deleted=[removed])
    fast = knn.edited(edited, added)
    full = ItemKNNScorer(k=1000).fit(edited)
    hist = edited.histories()[:80]
    np.testing.assert_allclose(fast.score(hist), full.score(hist), rtol=1e-5, atol=1e-7)
    new_row, changed_row = int(added[0]), int(added[1])
    assert not fast.score(hist)[:, new_row].any()
    assert fast.score(hist)[:, changed_row].any()
    # the original keeps serving its own catalogue
    assert knn.score(beauty_slice.histories()[:5]).shape[1] == beauty_slice.n_items
