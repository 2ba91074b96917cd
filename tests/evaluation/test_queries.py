"""The personalized product search protocol and the query-aware ranking, on amazon-beauty."""

from __future__ import annotations

import numpy as np
import pytest

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import leave_last_out
from promptrec.evaluation.queries import (
    LEXICAL_WEIGHTS,
    QUERY_WEIGHTS,
    category_path_queries,
    category_queries,
    evaluate_queries,
    with_queries,
)
from promptrec.scorers import MeanOfItemsScorer, TextSpace
from promptrec.scorers.lexical import BM25Scorer, LexicalIndex, tokenize
from promptrec.scorers.query import QueryAwareScorer


def test_the_query_is_the_deepest_category(beauty_slice) -> None:
    queries = category_queries(beauty_slice)
    paths = beauty_slice.items["categories"].tolist()
    for path, query in zip(paths[:50], queries[:50], strict=True):
        assert query == path[-1].lower()
    assert "nail polish" in queries
    items = beauty_slice.items.copy()
    items["categories"] = [None] * 3 + items["categories"].tolist()[3:]
    data = Dataset(items, beauty_slice.events, "no-category")
    queries = category_queries(data)
    assert queries[:3] == [None] * 3 and all(q for q in queries[3:])
    # a user whose target has no category is skipped and counted
    split = leave_last_out(data)["test"]
    chosen, skipped = with_queries(split, queries)
    missing = sum(1 for t in split.targets if t < 3)
    assert skipped == missing and len(chosen.histories) == len(split.histories) - missing
    for history, target in zip(chosen.histories, chosen.targets, strict=True):
        assert history.query == queries[target]


def test_the_path_query_is_every_level_of_the_category_path(beauty_slice) -> None:
    paths = beauty_slice.items["categories"].tolist()
    queries = category_path_queries(beauty_slice)
    for path, query in zip(paths[:50], queries[:50], strict=True):
        assert query == " ".join(path).lower()
    assert "beauty makeup nails nail polish" in queries
    items = beauty_slice.items.copy()
    items["categories"] = ["Beauty>Skin Care> Face ", " ", *items["categories"].tolist()[2:]]
    queries = category_path_queries(Dataset(items, beauty_slice.events, "edited"))
    assert queries[:2] == ["beauty skin care face", None]  # either separator; blank is none
    assert category_queries(Dataset(items, beauty_slice.events, "edited"))[:2] == ["face", None]


def test_words_and_chinese_characters() -> None:
    words = tokenize("OPI Nail-Lacquer, 0.5 Fl Oz")
    assert words == ["opi", "nail", "lacquer", "0", "5", "fl", "oz"]
    # no spaces in Chinese: characters and their pairs, so a word matches inside a longer one
    words = tokenize("去屑洗发水 500ml")
    assert {"洗发", "发水", "洗"} <= set(words) and "500ml" in words


@pytest.fixture(scope="module")
def space(beauty_slice) -> TextSpace:
    return TextSpace().fit(beauty_slice)


def _hair_care_history(data: Dataset) -> UserHistory:
    titles = data.items["title"].str.lower()
    hair = np.flatnonzero(titles.str.contains("shampoo|conditioner").to_numpy())[:8]
    assert len(hair) == 8
    return UserHistory("shopper", hair.astype(np.int64))


def test_the_lexical_index_scores_as_bm25s_does_and_grows_item_by_item(beauty_slice, space):
    """Lucene's BM25 as ``bm25s`` computes it, from postings: an index grown item by item,
    with retired items, scores every query as one built afresh over the live items."""
    import bm25s

    texts = list(space.texts.values)
    reference = bm25s.BM25(method="lucene")
    reference.index([tokenize(t) for t in texts], show_progress=False)
    index = LexicalIndex()
    index.add(texts)
    everything = np.ones(len(texts), dtype=bool)
    for query in ("nail polish", "red nail polish", "shampoo for dry hair", "opi"):
        words = [w for w in tokenize(query) if w in reference.vocab_dict]
        want = reference.get_scores(words)
        assert np.allclose(index.scores(query, everything), want, rtol=1e-4, atol=1e-5)
    # grown one item at a time, some retired: the scores of a fresh index of the live ones
    grown = LexicalIndex()
    grown.add(texts[:100])
    for text in texts[100:]:
        grown.add([text])
    live = everything.copy()
    live[::7] = False
    fresh = LexicalIndex()
    fresh.add([t for t, keep in zip(texts, live, strict=True) if keep])
    for query in ("nail polish", "argan oil"):
        assert np.allclose(grown.scores(query, live)[live], fresh.scores(query, live[live]))
        assert not grown.scores(query, live)[~live].any()
    # an earlier catalogue state (a prefix of the rows) keeps its own scores
    first = LexicalIndex()
    first.add(texts[:100])
    assert np.allclose(
        grown.scores("nail", everything[:100]), first.scores("nail", everything[:100])
    )


def test_bm25_reads_the_query_alone(beauty_slice, space) -> None:
    bm25 = BM25Scorer(space).fit(beauty_slice)
    history = _hair_care_history(beauty_slice)
    [scores] = bm25.score([history.with_query("nail polish")])
    top = np.argsort(-scores)[:10]
    assert all("nail" in space.texts.values[i].lower() for i in top)
    # no query: the most popular items, whatever the history
    [plain] = bm25.score([history])
    assert np.array_equal(np.argsort(-plain)[:10], np.argsort(-bm25.popularity)[:10])


def test_a_query_outside_the_history_is_answered_first(beauty_slice, space) -> None:
    """A shopper whose history is hair care types "red nail polish": the list's first items
    answer the query, where the history's pull alone fills it with shampoos."""
    history = _hair_care_history(beauty_slice).with_query("red nail polish")
    inner_only = QueryAwareScorer(MeanOfItemsScorer(space), lexical_weight=0.0).fit(beauty_slice)
    fused = QueryAwareScorer(MeanOfItemsScorer(space), lexical_weight=0.4).fit(beauty_slice)

    def nails(scorer) -> int:
        [scores] = scorer.score([history])
        scores[history.items] = -np.inf
        return sum("nail" in space.texts.values[i].lower() for i in np.argsort(-scores)[:10])

    assert nails(fused) == 10
    assert nails(inner_only) < 10  # the vector sum alone lets the history outvote the query
    # no query: the inner scorer's list, unchanged
    plain = history.with_query(None)
    assert np.allclose(fused.score([plain]), fused.inner.score([plain]))


def test_the_protocol_reports_every_method_on_the_same_targets(beauty_slice) -> None:
    result = evaluate_queries(beauty_slice, validation_users=200, progress=False)
    names = {"bm25", "query-only", "history-only", "mean-of-items+query"}
    assert set(result.splits["test"]) == names == set(result.splits["validation"])
    chosen = result.settings["chosen"]["mean-of-items+query"]
    assert chosen["query_weight"] in QUERY_WEIGHTS and chosen["lexical_weight"] in LEXICAL_WEIGHTS
    table = result.settings["weights on validation (query/lexical: NDCG@10)"]
    best = max(table["mean-of-items+query"].values())
    fused = result.splits["validation"]["mean-of-items+query"].metrics["NDCG@10"]
    assert fused == pytest.approx(best, abs=1e-9)  # the chosen pair's validation score
    test = {name: r.metrics["NDCG@10"] for name, r in result.splits["test"].items()}
    # the query carries the signal: each method that reads it beats the history alone
    assert min(test["bm25"], test["query-only"], test["mean-of-items+query"]) > test["history-only"]
    assert test["mean-of-items+query"] >= max(test["bm25"], test["query-only"])
    assert result.n_users["test"] + result.settings["skipped (target without a category)"][
        "test"
    ] == len(beauty_slice.user_ids)


def test_the_lexical_term_names_the_best_matches_alone(beauty_slice, space) -> None:
    """Capped at ``max_matches``, the lexical term names the best-scoring items of those that
    hold a word of the query, with their scores as uncapped."""
    full = BM25Scorer(space, max_matches=10**9).fit(beauty_slice)
    capped = BM25Scorer(space, max_matches=20).fit(beauty_slice)
    queries = ["nail polish", None, "hair oil"]
    every, best = full.matches(queries), capped.matches(queries)
    assert best[1].nnz == 0
    for row in (0, 2):
        whole = every[row].toarray().ravel()
        named = best[row].indices
        assert every[row].nnz > 40 and len(named) == 20
        others = np.setdiff1d(every[row].indices, named)
        assert whole[named].min() >= whole[others].max()
        assert np.array_equal(best[row].toarray().ravel()[named], whole[named])
