"""Milvus behind the retrieval contract, on the embedded milvus-lite: the same answers as
exact search, history and filters kept, items added and removed one at a time, and a
collection found again after a restart."""

from __future__ import annotations

import numpy as np
import pytest

from promptrec.errors import ConfigError
from promptrec.recommender import Recommender
from promptrec.retrieval import Filters
from promptrec.retrieval.index import ExactIndex, IndexConfig, build_index, load_index
from promptrec.retrieval.milvus import MilvusIndex

from .test_index import product_like, recall


@pytest.fixture
def config(tmp_path) -> IndexConfig:
    return IndexConfig(kind="milvus", milvus_uri=str(tmp_path / "milvus.db"))


def test_milvus_agrees_with_exact_search_with_history_and_filters(config) -> None:
    vectors = product_like(4000, dim=32)
    rng = np.random.default_rng(3)
    queries = vectors[rng.integers(0, 4000, 40)] + 0.2 * rng.normal(size=(40, 32))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    milvus = build_index(vectors, config)
    assert isinstance(milvus, MilvusIndex) and len(milvus) == 4000
    exact = ExactIndex(vectors)
    near, _ = exact.search(queries, 20)
    exclude = [row[:12] for row in near]  # the nearest items are the user's history
    for allowed in (None, rng.random(4000) < 0.5, rng.random(4000) < 0.01):
        want, want_scores = exact.search(queries, 10, exclude=exclude, allowed=allowed)
        got, got_scores = milvus.search(queries, 10, exclude=exclude, allowed=allowed)
        for row, keys in enumerate(got):
            keys = keys[keys >= 0]
            assert not set(keys) & set(exclude[row])
            if allowed is not None:
                assert allowed[keys].all()
        assert recall(got, want) >= 0.95
        assert np.allclose(
            np.sort(got_scores[got >= 0]), np.sort(want_scores[want >= 0]), atol=1e-3
        ) or (recall(got, want) < 1)


def test_milvus_items_come_and_go_and_outlive_the_process(config, tmp_path) -> None:
    vectors = product_like(500, dim=16)
    index = MilvusIndex(vectors[:300], config)
    keys = index.add(vectors[300:302])
    assert list(keys) == [300, 301]
    found, scores = index.search(vectors[300:302], 1)
    assert list(found[:, 0]) == [300, 301] and np.allclose(scores[:, 0], 1.0, atol=1e-4)
    index.remove([301, 5])
    found, _ = index.search(np.stack([vectors[301], vectors[5]]), 5)
    assert not {301, 5} & set(found.ravel())
    saved = index.save(tmp_path / "saved")
    again = load_index(saved)  # a new client on the same file, as a restart would have
    assert isinstance(again, MilvusIndex) and len(again) == 300 and again.size == 302
    assert np.array_equal(again.search(vectors[:20], 5)[0], index.search(vectors[:20], 5)[0])
    with pytest.raises(ConfigError, match="needs a URI"):
        IndexConfig(kind="milvus")


def test_recommendations_through_milvus(beauty_slice, config) -> None:
    exact = Recommender("mean-of-items", index=IndexConfig(kind="exact")).fit(beauty_slice)
    milvus = Recommender("mean-of-items", index=config).fit(beauty_slice)
    users = list(beauty_slice.user_ids[:30])
    for filters in (None, Filters(categories=["Nails"])):
        want = exact.recommend(users, 10, filters=filters)
        got = milvus.recommend(users, 10, filters=filters)
        overlap = [
            len(set(a.item_ids) & set(b.item_ids)) / 10 for a, b in zip(got, want, strict=True)
        ]
        assert np.mean(overlap) >= 0.95


def test_a_catalogue_state_has_one_collection_reused_until_no_one_serves_it(
    beauty_slice, config
) -> None:
    import gc

    from promptrec.retrieval.milvus import open_client

    first = Recommender("mean-of-items", index=config).fit(beauty_slice)
    name = first.index.collection
    second = Recommender("mean-of-items", index=config).fit(beauty_slice)  # a restart, say
    assert second.index.collection == name
    client = open_client(config.milvus_uri)
    assert client.get_collection_stats(name)["row_count"] == beauty_slice.n_items
    del first
    gc.collect()
    assert client.has_collection(name)  # still served by the second
    del second
    gc.collect()
    assert not client.has_collection(name)  # the catalogue state is gone: so is its copy


def test_workers_applying_one_change_to_a_shared_collection_leave_one_row(config) -> None:
    """Every worker of a service applies each catalogue change to the collection they share:
    the same key and vector twice is one row."""
    from promptrec.retrieval.milvus import open_client

    vectors = product_like(200, dim=16)
    first = MilvusIndex(vectors[:150], config, collection="shared")
    second = MilvusIndex(config=config, collection="shared", dim=16)
    second._alive = np.ones(150, dtype=bool)
    for worker in (first, second):
        assert list(worker.add(vectors[150:152])) == [150, 151]
    client = open_client(config.milvus_uri)
    client.flush("shared")
    assert client.get_collection_stats("shared")["row_count"] == 152
    found, _ = second.search(vectors[150:152], 2)
    assert list(found[:, 0]) == [150, 151] and list(found[:, 1]) != [150, 151]
