"""Nothing at or after a target may reach a prompt, a vector or a popularity count.

A *canary* item, with a unique title, is appended as every user's last interaction, so it is
every evaluated user's test target. It must not appear in the test split's fit log, in any
prompt, in popularity counts or in ItemKNN similarities, and it must rank exactly as if the
canary events did not exist at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset
from promptrec.data.split import leave_last_out
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.scorers import PromptScorer, TextSpace, make_scorer

CANARY = "CANARY-ITEM-ZQX"
N_USERS = 40


@pytest.fixture(scope="module")
def canary_data(beauty_slice) -> tuple[Dataset, Dataset]:
    users = beauty_slice.user_ids[:N_USERS]
    events = beauty_slice.events[beauty_slice.events["user_id"].isin(users)]
    items = beauty_slice.items[beauty_slice.items["item_id"].isin(set(events["item_id"]))]
    base = Dataset(
        pd.concat([items, pd.DataFrame([{"item_id": CANARY, "title": CANARY}])]), events, "base"
    )
    last = events.groupby("user_id")["timestamp"].max()
    canary_rows = pd.DataFrame(
        {
            "user_id": last.index,
            "item_id": CANARY,
            "timestamp": last.to_numpy() + 1,
            "event": "interaction",
            "value": np.nan,
            "query": None,
        }
    )
    with_canary = Dataset(base.items, pd.concat([events, canary_rows]), "canary")
    return base, with_canary


def test_canary_is_every_test_target_and_absent_from_fit(canary_data) -> None:
    _, data = canary_data
    splits = leave_last_out(data)
    canary = data.item_index[CANARY]
    test = splits["test"]
    assert (test.targets == canary).all()
    assert CANARY not in set(test.fit.events["item_id"])
    assert all(canary not in h.items for h in test.histories)
    val = splits["validation"]
    assert CANARY not in set(val.fit.events["item_id"])
    # validation histories hold everything but the last two interactions of each user
    sizes = data.events.groupby("user_id").size()
    assert all(len(h) == sizes[h.user_id] - 2 for h in val.histories)
    assert all(len(h) == sizes[h.user_id] - 1 for h in test.histories)


@pytest.mark.parametrize("name", ["popularity", "itemknn", "mean-of-items"])
def test_scores_ignore_the_targets(name: str, canary_data, encoder) -> None:
    base, data = canary_data
    space = TextSpace(encoder).fit(data)
    test = leave_last_out(data)["test"]
    scorer = make_scorer(name, space).fit(test.fit)
    scores = scorer.score(test.histories)
    canary = data.item_index[CANARY]
    if name == "popularity":
        assert scores[:, canary].max() == 0  # no count for a target
    if name == "itemknn":
        assert scores[:, canary].max() == 0  # no co-occurrence with a target
    # the same users scored on the log without the canary: identical scores
    reference = make_scorer(name, space).fit(base)
    ref_scores = reference.score(test.histories)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy", ["sectioned", "recent", "profile", "query"])
def test_prompts_never_contain_the_target(strategy: str, canary_data, encoder) -> None:
    _, data = canary_data
    space = TextSpace(encoder).fit(data)
    splits = leave_last_out(data)
    for split in splits.values():
        scorer = PromptScorer(strategy, space).fit(split.fit)
        prompts = scorer.prompts(split.histories)
        assert all(CANARY not in p.text for p in prompts)
    # and validation prompts never mention the validation target's own title
    val = splits["validation"]
    scorer = PromptScorer(strategy, space).fit(val.fit)
    for h, target, p in zip(val.histories, val.targets, scorer.prompts(val.histories), strict=True):
        if target not in h.items:  # the same item earlier in the history may be named
            assert space.catalog.labels[target] not in p.text


def test_evaluation_is_unchanged_by_events_after_the_target(canary_data) -> None:
    """Appending more events after each user's test target changes no validation number."""
    base, data = canary_data
    later = data.events.groupby("user_id").tail(1).copy()
    later["timestamp"] += 10
    later["item_id"] = base.item_ids[0]
    # evaluating validation on base vs base+later-events: the later events become the new
    # test targets and shift validation to the old test item, so compare the *test* split of
    # `data` with the *validation* split of data+later instead (same histories, same fit rule)
    extended = Dataset(data.items, pd.concat([data.events, later]), "extended")
    a = evaluate_scorer(make_scorer("popularity"), leave_last_out(data)["test"], progress=False)
    b = evaluate_scorer(
        make_scorer("popularity"), leave_last_out(extended)["validation"], progress=False
    )
    assert a.ranks.tolist() == b.ranks.tolist()
