"""The personalized product search protocol: recommendations for a user who types a query.

As in Ai et al., "Learning a Hierarchical Embedding Model for Personalized Product Search"
(SIGIR 2017): each leave-one-out target of ``shared/EVALUATION.md`` comes with a query made
from the target item's own category path (protocol ``category``: the deepest category's words,
lower-cased, "Beauty > Makeup > Nails > Nail Polish" gives "nail polish"; ``category-path``: the
whole path's words, "beauty makeup nails nail polish"); the history is what precedes the target;
the whole catalogue is ranked, history items excluded. Targets whose item has no category are
skipped and counted.

One run reports, on the same targets:

* ``bm25``: BM25 over the item texts, reading the query alone (the search baseline);
* ``query-only``: dense retrieval of the query with the same encoder (no history);
* ``history-only``: the default zero-shot recommender, query not read;
* ``mean-of-items+query``: promptrec with query and history (:class:`QueryAwareScorer`), its
  two weights chosen on the validation targets;
* for each trained model: the model without the query, and with it (its weights likewise
  chosen on validation).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import Split, leave_last_out
from promptrec.encoders import Encoder
from promptrec.errors import ConfigError
from promptrec.evaluation.evaluator import EvaluationResult, StrategyResult, evaluate_scorer
from promptrec.evaluation.metrics import ndcg_at
from promptrec.prompts.items import category_levels, field_values
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers import MeanOfItemsScorer, Scorer, TextSpace
from promptrec.scorers.lexical import BM25Scorer
from promptrec.scorers.query import QueryAwareScorer
from promptrec.scorers.terms import Terms
from promptrec.scorers.vector import VectorScorer

log = logging.getLogger("promptrec")

#: the weights of the query's vector and of its BM25 match tried on validation
QUERY_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0)
LEXICAL_WEIGHTS = (0.0, 0.2, 0.4, 0.8, 1.6)


def category_queries(data: Dataset) -> list[str | None]:
    """Per item, its deepest category's words, lower-cased (None: the item has no category)."""
    return [
        levels[-1].lower() if levels else None
        for levels in map(category_levels, field_values(data.items, "category"))
    ]


def category_path_queries(data: Dataset) -> list[str | None]:
    """Per item, its whole category path's words, broadest first, lower-cased ("Beauty >
    Makeup > Nails > Nail Polish" gives "beauty makeup nails nail polish"; None: no category)."""
    return [
        " ".join(levels).lower() if levels else None
        for levels in map(category_levels, field_values(data.items, "category"))
    ]


#: the query protocols: per item, the query a target of it comes with, and its description
PROTOCOLS: dict[str, tuple[Callable[[Dataset], list[str | None]], str]] = {
    "category": (category_queries, "the target item's deepest category, lower-cased"),
    "category-path": (
        category_path_queries,
        "the target item's whole category path, its levels' words lower-cased",
    ),
}


def with_queries(split: Split, queries: Sequence[str | None]) -> tuple[Split, int]:
    """The split's users whose target has a query, each history carrying that query as its
    live query; and how many users were skipped (a target without a category)."""
    keep = [i for i, t in enumerate(split.targets) if queries[int(t)] is not None]
    histories = [split.histories[i].with_query(queries[int(split.targets[i])]) for i in keep]
    chosen = Split(split.name, split.fit, histories, split.targets[keep])
    return chosen, len(split.histories) - len(keep)


class QueryView(Scorer):
    """A scorer that sees part of each history: ``"query"`` (the live query alone, no items)
    or ``"history"`` (the items alone, no query). Exclusions still use the whole history."""

    def __init__(self, inner: Scorer, sees: Literal["query", "history"], name: str) -> None:
        super().__init__()
        self.inner, self.sees, self.name = inner, sees, name  # type: ignore[misc]
        self.batch_size = inner.batch_size

    def fit(self, data: Dataset) -> QueryView:
        self.inner.fit(data)
        self.data = data
        return self

    def terms(self, histories: Sequence[UserHistory]) -> Terms:
        if self.sees == "history":
            return self.inner.terms([h.with_query(None) for h in histories])
        empty = np.zeros(0, dtype=np.int64)
        return self.inner.terms([UserHistory(h.user_id, empty, query=h.query) for h in histories])

    def config(self) -> dict[str, Any]:
        return {**self.inner.config(), "sees": self.sees}


def choose_query_weights(
    scorer: QueryAwareScorer,
    split: Split,
    *,
    query_weights: Sequence[float] = QUERY_WEIGHTS,
    lexical_weights: Sequence[float] = LEXICAL_WEIGHTS,
    progress: bool = False,
) -> dict[str, float]:
    """Set ``scorer``'s two weights to the pair with the best NDCG@10 on ``split`` (validation
    targets with their queries); returns each pair's NDCG@10 (``"query_weight/lexical_weight"``).
    """
    scorer.fit(split.fit)
    pairs = list(itertools.product(query_weights, lexical_weights))
    ranks = {pair: np.empty(len(split.histories), dtype=np.int64) for pair in pairs}
    bar = tqdm(total=len(split.histories), disable=not progress, desc="query weights")
    with bar:
        for start in range(0, len(split.histories), scorer.batch_size):
            batch = split.histories[start : start + scorer.batch_size]
            targets = split.targets[start : start + len(batch)]
            exclude = [h.items for h in batch]
            matches = scorer.lexical.matches([h.query for h in batch])
            for query_weight in query_weights:
                scorer.query_weight = query_weight
                inner = scorer.inner.terms(batch)
                for lexical_weight in lexical_weights:
                    terms = inner.plus(matches * np.float32(lexical_weight))
                    ranks[(query_weight, lexical_weight)][start : start + len(batch)] = (
                        target_ranks(terms.scores(), targets, exclude)
                    )
            bar.update(len(batch))
    table = {f"{q}/{w}": ndcg_at(ranks[(q, w)], 10) for q, w in pairs}
    scorer.query_weight, scorer.lexical_weight = max(pairs, key=lambda p: ndcg_at(ranks[p], 10))
    log.info(
        "query weights for %s: query %s, lexical %s (validation NDCG@10 %s)",
        scorer.name,
        scorer.query_weight,
        scorer.lexical_weight,
        {k: round(v, 4) for k, v in table.items()},
    )
    return table


def evaluate_queries(
    data: Dataset,
    *,
    encoder: Encoder | str | None = None,
    item_template: str | None = None,
    validation_users: int | None = None,
    seed: int = 0,
    progress: bool = True,
    models: dict[str, VectorScorer] | None = None,
    protocol: str = "category",
) -> EvaluationResult:
    """The protocol on ``data``: the weights chosen on (a sample of) the validation targets,
    every method scored on both splits (trained models on test only: they were stopped, and
    refitted, on the validation targets). ``protocol``: which query each target comes with
    (:data:`PROTOCOLS`)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown query protocol '{protocol}' (use {', '.join(PROTOCOLS)})")
    make_queries, described = PROTOCOLS[protocol]
    all_splits = leave_last_out(data)
    queries = make_queries(data)
    validation, skipped_validation = with_queries(
        all_splits["validation"].sample(validation_users, seed), queries
    )
    test, skipped_test = with_queries(all_splits["test"], queries)
    space = TextSpace(encoder, item_template).fit(data, progress=progress)
    fused = QueryAwareScorer(MeanOfItemsScorer(space))
    weights = {fused.name: choose_query_weights(fused, validation, progress=progress)}
    chosen_models = {}
    for name, model in (models or {}).items():
        model_fused = QueryAwareScorer(model)
        weights[name] = choose_query_weights(model_fused, validation, progress=progress)
        chosen_models[name] = model_fused
    results: dict[str, dict[str, StrategyResult]] = {"validation": {}, "test": {}}
    for split in (validation, test):
        methods: list[tuple[str, Scorer]] = [
            ("bm25", BM25Scorer(space)),
            ("query-only", QueryView(MeanOfItemsScorer(space), "query", "query-only")),
            ("history-only", QueryView(MeanOfItemsScorer(space), "history", "history-only")),
            (fused.name, fused),
        ]
        if split is test:
            for name, model_fused in chosen_models.items():
                methods.append((name, QueryView(model_fused.inner, "history", name)))
                methods.append((f"{name}+query", model_fused))
        for name, scorer in methods:
            res = evaluate_scorer(scorer, split, progress=progress)
            res.name = name
            log.info("%s %s NDCG@10=%.4f", split.name, name, res.metrics["NDCG@10"])
            results[split.name][name] = res
    settings = {
        "protocol": f"personalized product search ({protocol}): {described} as the query",
        "queries": described,
        "skipped (target without a category)": {
            "validation": skipped_validation,
            "test": skipped_test,
        },
        "weights on validation (query/lexical: NDCG@10)": weights,
        "chosen": {
            name: {"query_weight": s.query_weight, "lexical_weight": s.lexical_weight}
            for name, s in [(fused.name, fused), *chosen_models.items()]
        },
        "encoder": space.encoder.name,
        "item_template": space.template_name,
        "validation_users": validation_users,
        "seed": seed,
        "models": sorted(models or {}),
    }
    n_users = {"validation": len(validation.histories), "test": len(test.histories)}
    return EvaluationResult(data.name, data.n_items, n_users, results, settings)
