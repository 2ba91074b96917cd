"""User prompts: sections per behaviour, strategies, and the token budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import UserHistory
from promptrec.errors import ConfigError
from promptrec.prompts.users import STRATEGIES, PromptCatalog, get_strategy

ITEMS = pd.DataFrame(
    [
        {
            "item_id": "0",
            "title": "Red lipstick",
            "brand": "Acme",
            "categories": ["Beauty", "Lips"],
        },
        {
            "item_id": "1",
            "title": "Blue nail polish",
            "brand": "Nailco",
            "categories": ["Beauty", "Nails"],
        },
        {
            "item_id": "2",
            "title": "Pink nail polish",
            "brand": "Nailco",
            "categories": ["Beauty", "Nails"],
        },
        {"item_id": "3", "title": "Hair dryer", "brand": "Blow", "categories": ["Beauty", "Hair"]},
    ]
)
CATALOG = PromptCatalog.from_items(ITEMS)


def history(items, events, values=None, queries=None, query=None) -> UserHistory:
    n = len(items)
    return UserHistory(
        "u1",
        np.asarray(items),
        tuple(events),
        np.asarray(values if values is not None else [np.nan] * n, dtype=float),
        np.arange(n, dtype=float),
        tuple(queries or [None] * n),
        query,
    )


def words(text: str) -> int:
    return len(text.split())


def test_sectioned_groups_behaviour_into_sections() -> None:
    h = history(
        [0, 1, 2, 3],
        ["view", "purchase", "rating", "view"],
        values=[np.nan, np.nan, 4.0, np.nan],
        queries=[None, "nail polish", None, None],
        query="gift for mum",
    )
    text = get_strategy("sectioned").build(h, CATALOG, words, 1000).text
    assert "Your purchase history: Blue nail polish." in text
    assert "Items you rated: Pink nail polish (rated 4)." in text
    assert "Items you browsed: Hair dryer; Red lipstick." in text  # newest first
    assert "Your searches: nail polish." in text
    assert text.endswith("Looking for: gift for mum.")
    assert text.index("Your searches") < text.index("Your purchase history")


def test_plain_interactions_get_one_section() -> None:
    h = history([0, 1], ["interaction", "interaction"])
    text = get_strategy("sectioned").build(h, CATALOG, words, 1000).text
    assert text == "Items you interacted with: Blue nail polish; Red lipstick."


def test_profile_counts_categories_and_brands() -> None:
    h = history([1, 2, 0], ["view"] * 3)
    text = get_strategy("profile").build(h, CATALOG, words, 1000).text
    assert "Top categories: Nails (2), Lips (1)." in text
    assert "Top brands: Nailco (2), Acme (1)." in text


def test_query_strategy_puts_the_query_first() -> None:
    h = history([0, 1], ["view", "view"], queries=["lipstick", "polish"], query=None)
    text = get_strategy("query").build(h, CATALOG, words, 1000).text
    assert text.startswith("Search: polish. Earlier searches: lipstick.")
    live = get_strategy("query").build(h.with_query("hair dryer"), CATALOG, words, 1000).text
    assert live.startswith("Search: hair dryer. Earlier searches: polish; lipstick.")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_budget_drops_whole_oldest_items(name: str, encoder) -> None:
    """With the model's own tokenizer: within budget, newest kept, no label cut in half."""
    many = pd.DataFrame(
        [
            {
                "item_id": str(i),
                "title": f"Product number {i} deluxe edition",
                "brand": f"B{i}",
                "categories": ["Shop", f"Cat{i % 3}"],
            }
            for i in range(40)
        ]
    )
    catalog = PromptCatalog.from_items(many)
    h = history(list(range(40)), ["view"] * 40)
    strategy = get_strategy(name)
    full = strategy.build(h, catalog, encoder.count_tokens, 10_000)
    assert full.n_dropped == 0 and full.n_items == 40
    budget = full.n_tokens // 3
    p = strategy.build(h, catalog, encoder.count_tokens, budget)
    assert p.n_tokens <= budget
    assert p.n_tokens == encoder.count_tokens(p.text)
    assert 0 < p.n_items < 40 and p.n_items + p.n_dropped == 40
    assert "Product number 39 deluxe edition" in p.text  # newest kept
    assert "Product number 0 deluxe edition" not in p.text  # oldest dropped
    # every item mention is a whole label: "Product number N" is always followed by its tail
    assert p.text.count("Product number") == p.text.count("deluxe edition")
    # one more item would not have fitted
    longer = strategy.render(h.last(p.n_items + 1), catalog)
    assert encoder.count_tokens(longer) > budget


def test_unknown_strategy_and_bad_settings() -> None:
    with pytest.raises(ConfigError, match="unknown prompt strategy 'fancy'"):
        get_strategy("fancy")
    with pytest.raises(ConfigError, match="max_items"):
        get_strategy("recent", max_items=0)
