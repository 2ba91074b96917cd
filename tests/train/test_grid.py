"""The settings grid ranks over candidates: the same targets' ranks (up to 10) and top 10s as
the whole score matrix of every setting, at the cost of the candidates."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from promptrec.data.split import leave_last_out
from promptrec.retrieval.topk import target_ranks, top_k
from promptrec.scorers import ItemKNNScorer, MeanOfItemsScorer
from promptrec.train import grid
from promptrec.train.grid import grid_ranks


def test_the_grid_ranks_as_the_whole_score_matrix(beauty_slice, monkeypatch) -> None:
    """Real scores (mean-of-items) shared by every setting, a tenth of the items rescored by
    each setting, ItemKNN's scaled scores added at three weights, some items left out of every
    list: each setting's ranks (exact up to 10) and top 10s equal those of its dense scores."""
    monkeypatch.setattr(grid, "BATCH_CELLS", 40 * beauty_slice.n_items)  # several batches
    split = leave_last_out(beauty_slice)["validation"]
    data = split.fit
    model = MeanOfItemsScorer().fit(data)
    knn = ItemKNNScorer(decay=0.7).fit(data)
    rng = np.random.default_rng(0)
    varied = np.sort(rng.choice(data.n_items, data.n_items // 10, replace=False))
    left_out = rng.choice(data.n_items, 30, replace=False)
    left_out[:3] = split.targets[:3]  # some targets are never in a list
    settings = [(scale, w) for scale in (0.8, 1.0, 1.5) for w in (0.0, 0.2, 1.0)]

    def settings_scores(hist):
        fixed = model.score(hist)
        extra = sp.csr_matrix(knn.scaled_scores(hist), dtype=np.float32)
        return fixed, [
            ((scale, w), fixed[:, varied] * np.float32(scale), extra * np.float32(w) if w else None)
            for scale, w in settings
        ]

    got = grid_ranks(split, settings_scores, varied=varied, left_out=left_out)
    seen = [np.concatenate([h.items, left_out]) for h in split.histories]
    fixed = model.score(split.histories)
    extra = knn.scaled_scores(split.histories).toarray()
    compared_in_lists = 0
    for scale, w in settings:
        dense = fixed.copy()
        dense[:, varied] *= np.float32(scale)
        dense += np.float32(w) * extra
        want_ranks = target_ranks(dense, split.targets, seen)
        want_top, _ = top_k(dense.copy(), 10, exclude=seen)
        ranks, tops = got[(scale, w)]
        assert np.array_equal(np.minimum(ranks, 11), np.minimum(want_ranks, 11))
        assert np.array_equal(ranks == len(fixed[0]) + 1, want_ranks == len(fixed[0]) + 1)
        assert np.array_equal(tops, want_top)
        compared_in_lists += int((want_ranks <= 10).sum())
    assert compared_in_lists > 50  # targets found in the lists, not only misses compared
