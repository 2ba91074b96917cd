"""Personal data never reaches a prompt; log pseudonyms are stable and keyed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.privacy import pseudonym, redact
from promptrec.prompts.items import ItemPrompter
from promptrec.prompts.users import PromptCatalog, get_strategy


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mail jane.doe+shop@example.co.uk now", "mail [email] now"),
        ("call +1 (555) 123-4567 today", "call [phone] today"),
        ("or 0044 20 7946 0958", "or [phone]"),
        ("or 555.123.4567", "or [phone]"),
        ("ring 5551234567", "ring [phone]"),
        ("ship to 221B Baker Street, London", "ship to [address], London"),
        ("at 1600 Pennsylvania Ave NW", "at [address]"),
        ("au 12 rue de Rivoli", "au [address]"),
    ],
)
def test_redact_removes_contact_details(text, expected) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Shampoo 12 oz (355 ml), pack of 2, $12.99",
        "Released 2014-05-12, model B00004TUBL",
        "SPF 50, 3.4 oz / 100 ml",
        "Top 10 gifts of 2019",
    ],
)
def test_redact_keeps_product_facts(text) -> None:
    assert redact(text) == text


def test_item_texts_and_user_prompts_are_redacted() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "title": ["Rose soap", "Gift box"],
            "description": ["Questions? write to seller@shop.com", "Call 555-123-4567"],
            "category": ["Bath", "Gifts"],
        }
    )
    texts = ItemPrompter().texts(items)
    assert "[email]" in texts[0] and "seller@shop.com" not in texts[0]
    assert "[phone]" in texts[1] and "555-123-4567" not in texts[1]
    data = Dataset(items, pd.DataFrame({"user_id": [], "item_id": [], "timestamp": []}))
    history = UserHistory(
        "u",
        np.array([0]),
        ("search",),
        np.array([np.nan]),
        np.array([1.0]),
        ("soap for mum at 12 Elm Street",),
        "gift for jane@example.com",
    )
    for name in ("sectioned", "recent", "profile", "query"):
        text = get_strategy(name).render(history, PromptCatalog.from_items(data.items))
        assert "jane@example.com" not in text and "Elm Street" not in text, name


def test_pseudonyms_are_stable_keyed_and_not_the_id() -> None:
    a = pseudonym("user-42", b"key-1")
    assert a == pseudonym("user-42", b"key-1") and len(a) == 12
    assert a != pseudonym("user-42", b"key-2") and a != pseudonym("user-43", b"key-1")
    assert "42" not in a or a != "user-42"
