"""An offline number and a served list come from the same code: the evaluator's top 10 for a
user, a live query and filters equals what ``GET /recommend`` serves for them."""

from __future__ import annotations

import numpy as np
import pytest

from promptrec.data.split import Split
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.retrieval.filters import Filters
from promptrec.scorers import TextSpace, make_scorer
from promptrec.scorers.query import QueryAwareScorer, QueryMix

from .conftest import KEY

CASES = {
    "history alone": (None, Filters()),
    "a live query": ("nail polish", Filters()),
    "a query and filters": ("shampoo", Filters(categories=["Hair Care"], price_max=30.0)),
    "filters alone": (None, Filters(price_min=5.0, price_max=20.0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_evaluators_lists_are_the_services(case, store, make_client):
    query, filters = CASES[case]
    engine, client = make_client(store)
    with client:
        # the served catalogue, with the log the service let go once built
        data = engine.snapshot.data.with_events(store.dataset().events)
        users = data.user_ids[:25] + ["someone-new"]  # the last one: a cold start
        served = [_served(client, user, query, filters) for user in users]
    engine.close()

    # the evaluator, on the same log, with the scorer the service ranks for a vector strategy:
    # mean-of-items with its query mix's weights
    histories = [h.with_query(query) for h in data.histories(users)]
    assert len(histories[-1]) == 0
    mix = QueryMix()
    scorer = QueryAwareScorer(
        make_scorer("mean-of-items", TextSpace()),
        query_weight=mix.query_weight,
        lexical_weight=mix.lexical_weight,
    )
    split = Split("test", data, histories, np.zeros(len(users), dtype=np.int64))
    result = evaluate_scorer(scorer, split, filters=filters, progress=False)
    offline = [[data.item_ids[i] for i in row if i >= 0] for row in result.top10]

    assert served == offline
    assert sum(map(len, served)) > 5 * len(users)  # the lists are not (almost) empty


def _served(client, user: str, query: str | None, filters: Filters) -> list[str]:
    """The item ids ``GET /recommend`` serves ``user`` for ``query`` and ``filters``."""
    params: dict[str, object] = {"user_id": user, "k": 10}
    if query:
        params["q"] = query
    if filters.categories:
        params["category"] = ",".join(filters.categories)
    for bound in ("price_min", "price_max"):
        if getattr(filters, bound) is not None:
            params[bound] = getattr(filters, bound)
    answer = client.get("/recommend", params=params, headers={"X-API-Key": KEY})
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]
