"""The nearest rows of many queries: exact on a shop's scale, an inverted-file search above it
(new items' borrowed ids at a million items)."""

from __future__ import annotations

import numpy as np

from promptrec.retrieval import neighbours
from promptrec.retrieval.neighbours import nearest_rows
from promptrec.retrieval.topk import top_k


def text_vectors(beauty, encoder) -> np.ndarray:
    """amazon-beauty titles of 3,000 products, as the default encoder embeds them."""
    titles = beauty.items["title"].fillna("").astype(str).tolist()[:3000]
    return np.asarray(encoder.encode(titles), dtype=np.float32)


def test_exact_below_the_threshold_is_the_brute_force_top_k(beauty, encoder) -> None:
    vectors = text_vectors(beauty, encoder)
    queries, rows = vectors[:700], vectors[700:]
    want, _ = top_k(queries @ rows.T, 5)
    np.testing.assert_array_equal(nearest_rows(queries, rows, 5), want)
    assert nearest_rows(queries, rows[:3], 5).shape == (700, 3)  # k above the rows: all of them


def test_the_inverted_file_search_finds_nearly_all_true_neighbours(
    beauty, encoder, monkeypatch
) -> None:
    """Above the threshold (lowered here), most of each query's true ten nearest real product
    titles are found, best first, and the search is repeatable."""
    vectors = text_vectors(beauty, encoder)
    queries, rows = vectors[:500], vectors[500:]
    want, _ = top_k(queries @ rows.T, 10)
    monkeypatch.setattr(neighbours, "EXACT_UP_TO", 0)
    monkeypatch.setattr(neighbours, "PROBED", 4)  # of 64 groups: an approximate search
    assert neighbours.lists(len(rows)) == 64
    got = nearest_rows(queries, rows, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert 0.75 < recall < 1.0  # approximate, and close
    complete = (got >= 0).all(axis=1)
    assert complete.mean() > 0.95  # -1 only where the probed groups held fewer than ten
    sims = np.take_along_axis(queries[complete] @ rows.T, got[complete], axis=1)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_array_equal(nearest_rows(queries, rows, 10), got)


def test_a_search_kept_on_disk_is_read_back_and_grown_by_new_queries(
    beauty, encoder, monkeypatch, tmp_path
) -> None:
    """The inverted-file search (forced) kept on disk: the same call reads it back without
    searching; new queries are searched alone, exactly; another set of rows searches again."""
    vectors = text_vectors(beauty, encoder)
    queries, rows = vectors[:500], vectors[500:]
    monkeypatch.setattr(neighbours, "EXACT_UP_TO", 0)
    monkeypatch.setattr(neighbours, "PROBED", 4)
    first = neighbours.cached_nearest_rows(queries, rows, 3, cache_dir=tmp_path, cached_from=1)
    np.testing.assert_array_equal(first, nearest_rows(queries, rows, 3))
    assert len(list(tmp_path.glob("*.npz"))) == 1

    searched: list[int] = []
    search = neighbours.nearest_rows

    def counted(q, r, k, **kwargs):
        searched.append(len(q))
        return search(q, r, k, **kwargs)

    monkeypatch.setattr(neighbours, "nearest_rows", counted)
    again = neighbours.cached_nearest_rows(queries, rows, 3, cache_dir=tmp_path, cached_from=1)
    np.testing.assert_array_equal(again, first)
    assert searched == []  # read back

    # two items added, one changed text (another vector), order shuffled: three searched
    monkeypatch.setattr(neighbours, "EXACT_UP_TO", 10**12)
    grown = np.vstack([queries[::-1], vectors[2990:2992]])
    grown[0] = vectors[2995]
    got = neighbours.cached_nearest_rows(grown, rows, 3, cache_dir=tmp_path, cached_from=1)
    assert searched == [3]
    np.testing.assert_array_equal(got[1:500], first[::-1][1:])
    want, _ = top_k(grown[[0, 500, 501]] @ rows.T, 3)
    np.testing.assert_array_equal(got[[0, 500, 501]], want)

    neighbours.cached_nearest_rows(grown, rows[:-1], 3, cache_dir=tmp_path, cached_from=1)
    assert searched[-1] == len(grown)  # other rows: everything searched again
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_a_small_search_keeps_nothing_on_disk(beauty, encoder, tmp_path) -> None:
    vectors = text_vectors(beauty, encoder)
    got = neighbours.cached_nearest_rows(vectors[:100], vectors[100:], 3, cache_dir=tmp_path)
    np.testing.assert_array_equal(got, nearest_rows(vectors[:100], vectors[100:], 3))
    assert not list(tmp_path.iterdir())
