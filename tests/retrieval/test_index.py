"""The retrieval contract: exact and approximate (HNSW) indexes agree, exclusions and filters
keep their exact meaning on both, items come and go one at a time, and indexes persist."""

from __future__ import annotations

import time

import numpy as np
import pytest

from promptrec.recommender import Recommender
from promptrec.retrieval import Filters
from promptrec.retrieval.index import (
    DEFAULT_EF_SEARCH,
    ExactIndex,
    HNSWIndex,
    IndexConfig,
    build_index,
    cached_index,
    load_index,
)

HNSW = IndexConfig(kind="hnsw")


def product_like(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Vectors with the structure of text embeddings: each item is the normalised sum of a few
    words' vectors, words drawn from a Zipf-like vocabulary (items that share words are near)."""
    rng = np.random.default_rng(seed)
    words = rng.normal(size=(3000, dim)).astype(np.float32)
    weights = 1 / np.arange(1, 3001) ** 0.8
    picks = rng.choice(3000, size=(n, 5), p=weights / weights.sum())
    vectors = words[picks].sum(axis=1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)])
    )


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return product_like(30_000)


@pytest.fixture(scope="module")
def queries(vectors) -> np.ndarray:
    rng = np.random.default_rng(1)
    q = vectors[rng.integers(0, len(vectors), 200)] + 0.3 * rng.normal(size=(200, 64))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def hnsw(vectors) -> HNSWIndex:
    return HNSWIndex(vectors, HNSW)


def test_hnsw_recall_against_exact(vectors, queries, hnsw) -> None:
    assert hnsw.compressed  # 8-bit codes by default
    exact, exact_scores = ExactIndex(vectors).search(queries, 10)
    found, scores = hnsw.search(queries, 10, exact=vectors)
    assert recall(found, exact) >= 0.95
    # scores are the true inner products of the keys found, best first
    true = np.einsum("qd,qkd->qk", queries, vectors[found])
    assert np.allclose(scores, true, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # without the exact vectors: the codes' scores, close but not exact
    coded, coded_scores = hnsw.search(queries, 10)
    true = np.einsum("qd,qkd->qk", queries, vectors[coded])
    assert 1e-5 < np.abs(coded_scores - true).max() < 0.02
    assert recall(coded, exact) >= 0.9


def test_codes_take_a_quarter_of_the_memory_and_lose_no_recall(vectors, queries, hnsw) -> None:
    import faiss

    flat = HNSWIndex(vectors, IndexConfig(kind="hnsw", quantize=False))
    assert not flat.compressed
    size = {i: faiss.serialize_index(i._index).nbytes for i in (flat, hnsw)}
    vector_bytes = vectors.nbytes
    assert size[flat] - size[hnsw] > 0.7 * vector_bytes  # 4 bytes a value against 1
    exact, _ = ExactIndex(vectors).search(queries, 10)
    found_flat, _ = flat.search(queries, 10)
    found_coded, _ = hnsw.search(queries, 10, exact=vectors)
    assert recall(found_coded, exact) >= recall(found_flat, exact) - 0.01


def test_exclusions_and_filters_keep_their_exact_meaning(vectors, queries, hnsw) -> None:
    rng = np.random.default_rng(2)
    exact = ExactIndex(vectors)
    # each user's history: 30 of the items nearest to them (the hardest to leave out)
    near, _ = exact.search(queries, 40)
    exclude = [row[rng.permutation(40)[:30]] for row in near]
    hnsw.config = IndexConfig(kind="hnsw", exact_below=50)  # filters searched on the graph
    calls = []
    search_graph = hnsw.candidates
    hnsw.candidates = lambda *a, **kw: calls.append(kw.get("only")) or search_graph(*a, **kw)
    for share in (0.5, 0.05, 0.002):  # broad, selective, and narrow enough for exact search
        allowed = rng.random(len(vectors)) < share
        want, _ = exact.search(queries, 10, exclude=exclude, allowed=allowed)
        calls.clear()
        got, got_scores = hnsw.search(queries, 10, exclude=exclude, allowed=allowed)
        if allowed.sum() > 50:
            # the graph searched among the allowed items, history left out: one call a query
            # (no widening until enough candidates pass)
            assert len(calls) == len(queries)
            assert all(only is not None and not (only & ~allowed).any() for only in calls)
        else:
            assert not calls  # exact over the few allowed items
        for row, keys in enumerate(got):
            keys = keys[keys >= 0]
            assert allowed[keys].all() and not set(keys) & set(exclude[row])
            assert len(keys) == min(
                10, int(allowed.sum()) - np.isin(exclude[row], np.flatnonzero(allowed)).sum()
            )
        assert recall(got, want) >= 0.95, share


def test_items_are_added_and_removed_one_at_a_time(vectors) -> None:
    for index in (ExactIndex(vectors[:1000]), HNSWIndex(vectors[:1000], HNSW)):
        new = vectors[5000:5003]
        keys = index.add(new)
        assert list(keys) == [1000, 1001, 1002] and len(index) == 1003
        by_key = np.concatenate([vectors[:1000], new])  # the exact vectors, by key
        found, scores = index.search(new, 1, exact=by_key)
        assert list(found[:, 0]) == [1000, 1001, 1002]
        assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
        index.remove([1001, 3])
        found, _ = index.search(np.stack([vectors[5001], vectors[3]]), 5)
        assert not {1001, 3} & set(found.ravel())
        assert len(index) == 1001 and index.size == 1003
        assert list(index.add(vectors[6000:6001])) == [1003]  # keys are never reused
        with pytest.raises(KeyError):
            index.remove([5000])


def test_indexes_persist_and_the_graph_is_built_once(vectors, queries, tmp_path) -> None:
    index = HNSWIndex(vectors[:5000], HNSW)
    index.remove([7])
    for saved in (index, ExactIndex(vectors[:5000])):
        back = load_index(saved.save(tmp_path / type(saved).__name__))
        assert type(back) is type(saved) and len(back) == len(saved)
        assert np.array_equal(back.search(queries, 10)[0], saved.search(queries, 10)[0])
    started = time.perf_counter()
    first = cached_index(vectors, HNSW, cache_dir=tmp_path / "cache")
    built = time.perf_counter() - started
    started = time.perf_counter()
    again = cached_index(vectors, HNSW, cache_dir=tmp_path / "cache")
    loaded = time.perf_counter() - started
    assert isinstance(again, HNSWIndex) and loaded < built / 3
    assert np.array_equal(first.search(queries, 10)[0], again.search(queries, 10)[0])
    assert isinstance(build_index(vectors[:100]), ExactIndex)  # auto: small is exact
    assert isinstance(build_index(vectors[:2000], IndexConfig(auto_threshold=1000)), HNSWIndex)


def test_a_graph_is_kept_by_the_callers_key_of_its_vectors(vectors, queries, tmp_path) -> None:
    """A caller that knows what its vectors are (a text space kept on disk) names the graph by
    that key: the vectors are not read to find it; under another key they are."""
    cache = tmp_path / "cache"
    first = cached_index(vectors[:3000], HNSW, cache_dir=cache, key="catalogue-a")
    unread = np.zeros_like(vectors[:3000])  # same shape, other content: found by the key alone
    again = cached_index(unread, HNSW, cache_dir=cache, key="catalogue-a")
    assert np.array_equal(first.search(queries, 10)[0], again.search(queries, 10)[0])
    exact = ExactIndex(vectors[:3000]).search(queries, 10)[0]
    other = cached_index(unread, HNSW, cache_dir=cache, key="catalogue-b")
    assert (other.search(queries, 10)[0] == exact).mean() < 0.5  # its own graph, of zeros


def test_the_beam_width_is_calibrated_to_the_target_recall(vectors, queries, tmp_path) -> None:
    """Without an ``ef_search``, a graph's beam is the narrowest that finds the target share of
    the exact top-10 for sample users (their histories excluded), measured once and saved with
    the graph; a stricter target needs a wider one."""
    rng = np.random.default_rng(3)
    histories = [rng.choice(len(vectors), 5, replace=False) for _ in range(len(queries))]
    asked = []

    def users():
        asked.append(len(queries))
        return queries, histories

    cache = tmp_path / "cache"
    index = cached_index(vectors, HNSW, cache_dir=cache, users=users)
    chosen = index.calibration
    assert asked == [200] and chosen["target"] == 0.95 and chosen["users"] == 200
    assert chosen["recall@10"] >= 0.95 and index.ef_search == chosen["ef_search"]
    # on users it was not calibrated on, the recall holds
    other = vectors[rng.integers(0, len(vectors), 300)] + 0.3 * rng.normal(size=(300, 64))
    other = (other / np.linalg.norm(other, axis=1, keepdims=True)).astype(np.float32)
    exact, _ = ExactIndex(vectors).search(other, 10)
    assert recall(index.search(other, 10, exact=vectors)[0], exact) >= 0.94
    # a restart loads the width with the graph; an explicit one overrides it, same graph
    again = cached_index(vectors, HNSW, cache_dir=cache, users=lambda: pytest.fail("asked"))
    assert again.calibration == chosen
    fixed = cached_index(vectors, IndexConfig(kind="hnsw", ef_search=40), cache_dir=cache)
    assert fixed.ef_search == 40 and len(list(cache.glob("*/index.json"))) == 1
    # a stricter target needs a wider beam; the beam is never narrower than the default
    index.config = IndexConfig(kind="hnsw", target_recall=0.995)
    strict = index.calibrate(queries, histories, exact=vectors)
    assert strict["ef_search"] > chosen["ef_search"] and strict["recall@10"] >= 0.995
    index.config = IndexConfig(kind="hnsw", target_recall=0.5)
    assert index.calibrate(queries, histories, exact=vectors)["ef_search"] == DEFAULT_EF_SEARCH
    # a graph built without users searches with the default width
    assert HNSWIndex(vectors[:2000], HNSW).ef_search == DEFAULT_EF_SEARCH


def test_a_loaded_graph_takes_new_items_without_copying_its_arrays(vectors, tmp_path) -> None:
    """A graph read from disk is given room to grow: the first catalogue change after a start
    does not copy the whole graph (0.35 s at a million items)."""
    import faiss

    index = load_index(HNSWIndex(vectors[:5000], HNSW).save(tmp_path / "graph"))

    def addresses() -> tuple[int, int]:
        storage = faiss.downcast_index(index._index.storage)
        return int(index._index.hnsw.neighbors.data()), int(storage.codes.data())

    before = addresses()
    keys = index.add(vectors[5000:5100])
    assert addresses() == before
    assert list(index.search(vectors[keys], 1, exact=vectors[:5100])[0][:, 0]) == list(keys)


def test_a_changed_catalogue_reuses_the_saved_graph(vectors, queries, tmp_path) -> None:
    """A restart after catalogue changes (removals, changed and new items, rows that moved)
    adds only the changed rows to the saved graph, and searches it like a fresh one."""
    cache = tmp_path / "cache"
    cached_index(vectors[:8000], HNSW, cache_dir=cache)
    rng = np.random.default_rng(5)
    kept = np.delete(np.arange(8000), rng.choice(8000, 300, replace=False))  # removed items
    changed = vectors[kept].copy()
    changed[:40] = vectors[20_000:20_040]  # changed items: new vectors at the same rows
    now = np.concatenate([vectors[25_000:25_060], changed])  # new items first: every row moved
    grown = cached_index(now, HNSW, cache_dir=cache)
    assert isinstance(grown, HNSWIndex) and grown._key_node is not None
    assert grown._index.ntotal == 8000 + 60 + 40  # the saved nodes, and one per changed row
    assert len(grown) == grown.size == len(now)
    exact, _ = ExactIndex(now).search(queries, 10)
    found, scores = grown.search(queries, 10, exact=now)
    assert recall(found, exact) >= 0.95 and found.min() >= 0 and found.max() < len(now)
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, now[found]), atol=1e-5)
    # a key's own vector finds the key (new, changed and moved rows alike)
    rows = np.array([0, 59, 60, 99, 100, len(now) - 1])
    assert list(grown.search(now[rows], 1, exact=now)[0][:, 0]) == list(rows)
    # the grown graph is saved under the new catalogue and replaces the one it came from
    assert len(list(cache.glob("*/index.json"))) == 1
    again = cached_index(now, HNSW, cache_dir=cache)
    assert np.array_equal(again._key_node, grown._key_node)
    assert np.array_equal(again.search(queries, 10, exact=now)[0], found)
    # a new item after a removal is found (the selector of live nodes grows with the graph)
    again.remove([0])
    [key] = again.add(vectors[29_000:29_001])
    assert (
        again.search(
            vectors[29_000:29_001], 1, exact=np.concatenate([now, vectors[29_000:29_001]])
        )[0][0, 0]
        == key
    )
    # a catalogue mostly new is built afresh, not grown from a graph of dead nodes
    fresh = cached_index(vectors[10_000:13_000], HNSW, cache_dir=cache)
    assert fresh._key_node is None and fresh._index.ntotal == 3000


def test_recommendations_through_the_approximate_index(beauty_slice) -> None:
    """The same lists as exact ranking on real MiniLM vectors, filters and seen items kept."""
    exact = Recommender("mean-of-items", index=IndexConfig(kind="exact")).fit(beauty_slice)
    approx = Recommender("mean-of-items", index=HNSW).fit(beauty_slice)
    users = list(beauty_slice.user_ids[:60]) + ["nobody"]
    nails = Filters(categories=["Nails"])
    for filters in (None, nails, Filters(price_max=10)):
        want = exact.recommend(users, 10, filters=filters)
        got = approx.recommend(users, 10, filters=filters)
        overlap = [
            len(set(a.item_ids) & set(b.item_ids)) / 10 for a, b in zip(got, want, strict=True)
        ]
        assert np.mean(overlap) >= 0.95, filters
        for rec in got:
            seen = set(beauty_slice.item_ids[approx.history(rec.user_id).items])
            assert not seen & set(rec.item_ids)
    assert got[-1].item_ids == want[-1].item_ids  # a cold user: the most popular items
    everyone = {r.user_id: r.item_ids for r in approx.recommend(approx.user_ids, 10)}
    assert len(everyone) == len(beauty_slice.user_ids)


def test_index_settings_are_checked_and_read_back() -> None:
    from promptrec.errors import ConfigError

    for bad, message in (
        ({"kind": "fast"}, "index kind must be auto, exact, hnsw or milvus, not 'fast'"),
        ({"kind": "milvus"}, "a Milvus index needs a URI"),
        ({"m": 0}, "index setting m must be at least 1"),
        ({"ef_search": 0}, "index setting ef_search must be at least 1"),
        ({"target_recall": 1.5}, r"target_recall must be in \(0, 1\], not 1.5"),
    ):
        with pytest.raises(ConfigError, match=message):
            IndexConfig(**bad)
    config = IndexConfig(kind="hnsw", ef_search=40)
    assert IndexConfig(**config.model_dump()) == config  # as saved with an index
    assert config.model_copy(update={"ef_search": 80}).ef_search == 80
    assert "ef_search" not in config.built() and config.built()["kind"] == "hnsw"
    with pytest.raises(ValueError):  # frozen
        config.ef_search = 80  # type: ignore[misc]
