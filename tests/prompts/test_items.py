"""Item prompts: domain templates picked from catalogue fields, custom templates."""

from __future__ import annotations

import pandas as pd
import pytest

from promptrec.errors import ConfigError
from promptrec.prompts.items import ItemPrompter, detect_domain, normalise_fields


@pytest.mark.parametrize(
    ("columns", "domain"),
    [
        (["item_id", "title", "brand", "categories", "price"], "product"),
        (["item_id", "title", "genres", "year"], "film"),
        (["item_id", "headline", "topic", "abstract"], "article"),
        (["item_id", "advertiser", "ad_copy", "landing_category"], "ad"),
        (["item_id", "name", "colour"], "generic"),
    ],
)
def test_domain_is_picked_from_fields(columns: list[str], domain: str) -> None:
    assert detect_domain(columns) == domain


def test_product_text_from_real_amazon_rows(beauty_slice) -> None:
    items = beauty_slice.items.head(50)
    texts = ItemPrompter().texts(items)
    first = items.iloc[0]
    assert texts[0].startswith(first["title"])
    assert f"Brand: {first['brand']}" in texts[0]
    assert " > ".join(first["categories"]) in texts[0]
    assert f"Price: {first['price']:.2f}" in texts[0]
    # an item without a brand renders without a dangling "Brand:" label
    no_brand = [t for t, b in zip(texts, items["brand"], strict=True) if b is None]
    assert all("Brand:" not in t for t in no_brand)


def test_film_text_from_movielens(ml100k) -> None:
    text = ItemPrompter().texts(ml100k.items.head(1))[0]
    assert text == "Toy Story (1995). Genres: Animation, Children's, Comedy"


def test_article_and_ad_templates() -> None:
    articles = pd.DataFrame(
        [
            {
                "item_id": "a1",
                "headline": "Rates rise again",
                "topic": "economy",
                "abstract": "The central bank raised rates.",
            }
        ]
    )
    assert ItemPrompter().texts(articles) == [
        "Rates rise again. Topic: economy. The central bank raised rates."
    ]
    ads = pd.DataFrame(
        [
            {
                "item_id": "x",
                "advertiser": "Acme",
                "title": "50% off boots",
                "ad_copy": "Winter sale.",
                "landing_category": "Shoes",
            }
        ]
    )
    assert ItemPrompter().texts(ads) == ["Acme: 50% off boots. Winter sale.. Category: Shoes"]


def test_generic_template_lists_fields() -> None:
    items = pd.DataFrame([{"item_id": "1", "name": "Blue mug", "colour": "blue"}])
    assert ItemPrompter().texts(items) == ["name: Blue mug. colour: blue"]


def test_user_template_file_replaces_the_shipped_one(tmp_path) -> None:
    path = tmp_path / "mine.j2"
    path.write_text("{{ title | upper }} by {{ brand }}")
    items = pd.DataFrame([{"item_id": "1", "title": "Lip balm", "brand": "Acme"}])
    assert ItemPrompter(str(path)).texts(items) == ["LIP BALM by Acme"]


def test_bad_template_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "bad.j2"
    path.write_text("{% if title %}unclosed")
    items = pd.DataFrame([{"item_id": "1", "title": "x"}])
    with pytest.raises(ConfigError, match="bad.j2"):
        ItemPrompter(str(path)).texts(items)
    with pytest.raises(ConfigError, match="not found"):
        ItemPrompter("item_nonexistent").texts(items)


def test_field_aliases() -> None:
    f = normalise_fields(
        {"name": "Pen", "manufacturer": "Bic", "category": "Office > Pens", "price": "1.5"}
    )
    assert (f["title"], f["brand"], f["category"], f["price"]) == (
        "Pen",
        "Bic",
        "Office > Pens",
        1.5,
    )
