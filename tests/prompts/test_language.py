"""Chinese shops: a catalogue of Chinese titles gets Chinese item texts and user prompts, picked
from its titles, unless a template names its language."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.encoders.hashing import HashingEncoder
from promptrec.prompts.items import ItemPrompter
from promptrec.prompts.language import detect_language, localized
from promptrec.prompts.templates import TEMPLATE_DIR
from promptrec.prompts.users import STRATEGIES, PromptCatalog, get_strategy
from promptrec.scorers import TextSpace

CHINESE = pd.DataFrame(
    [
        {
            "item_id": "a1",
            "title": "雅诗兰黛 小棕瓶 特润修护精华露 50ml",
            "brand": "雅诗兰黛",
            "categories": ["美妆护肤", "精华"],
            "price": 590.0,
        },
        {
            "item_id": "a2",
            "title": "MAC 魅可 子弹头口红 Ruby Woo",
            "brand": "MAC",
            "categories": ["美妆护肤", "彩妆", "口红"],
            "price": 170.0,
        },
        {
            "item_id": "a3",
            "title": "海飞丝 去屑洗发水 清爽控油 750ml",
            "brand": "海飞丝",
            "categories": ["个护清洁", "洗发水"],
            "price": 59.9,
        },
    ]
)
EVENTS = pd.DataFrame(
    {
        "user_id": ["u", "u", "u"],
        "item_id": ["a3", "a1", "a2"],
        "timestamp": [1.0, 2.0, 3.0],
        "event": ["view", "purchase", "rating"],
        "value": [np.nan, np.nan, 5.0],
    }
)


def test_the_language_is_read_from_the_titles() -> None:
    assert detect_language(CHINESE["title"]) == "zh"  # brand names in Latin letters too
    assert detect_language(["Red lipstick", "Blue nail polish", "MAC Ruby Woo 口红"]) == "en"
    assert detect_language([None, "", 3.5]) == "en"
    assert localized("user_sectioned", "zh") == "user_sectioned.zh"
    assert localized("item_product.en", "zh") == "item_product"  # named: kept
    assert localized("item_product.zh", "en") == "item_product.zh"
    assert localized("my/own.j2", "zh") == "my/own.j2"


def test_every_shipped_template_has_a_chinese_file() -> None:
    english = {
        p.name.removesuffix(".j2") for p in TEMPLATE_DIR.glob("*.j2") if p.stem.count(".") == 0
    }
    chinese = {p.name.removesuffix(".zh.j2") for p in TEMPLATE_DIR.glob("*.zh.j2")}
    assert english == chinese


def test_a_chinese_catalogue_reads_in_chinese() -> None:
    data = Dataset(CHINESE, EVENTS, "chinese-shop")
    space = TextSpace(HashingEncoder(64)).fit(data)
    assert space.language == "zh" and space.template_name == "item_product.zh"
    assert (
        space.texts[0]
        == "雅诗兰黛 小棕瓶 特润修护精华露 50ml。品牌：雅诗兰黛。类目：美妆护肤 > 精华。"
        "价格：590.00"
    )
    history = data.histories(["u"])[0]
    prompt = get_strategy("sectioned").render(history, space.catalog)
    assert prompt == (
        "您的购买记录：雅诗兰黛 小棕瓶 特润修护精华露 50ml。"
        "您评价过的商品：MAC 魅可 子弹头口红 Ruby Woo（评分 5）。"
        "您浏览过的商品：海飞丝 去屑洗发水 清爽控油 750ml。"
    )
    for name in STRATEGIES:  # every strategy has its Chinese template, and no English in it
        text = get_strategy(name).render(history.with_query("保湿面霜"), space.catalog)
        assert "保湿面霜" in text and not any(w in text for w in ("Your", "Looking", "Recent"))


def test_a_template_that_names_its_language_wins() -> None:
    data = Dataset(CHINESE, EVENTS, "chinese-shop")
    english = TextSpace(HashingEncoder(64), "item_product.en").fit(data)
    assert english.language == "en" and "Brand: 雅诗兰黛" in english.texts[0]
    assert "Your purchase history" in get_strategy("sectioned").render(
        data.histories(["u"])[0], english.catalog
    )
    prompter = ItemPrompter("product", language="en")  # or the language given
    assert prompter.resolve(CHINESE.columns, prompter.language_of(CHINESE)) == "item_product"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_english_catalogues_read_as_before(name) -> None:
    items = pd.DataFrame([{"item_id": "0", "title": "Red lipstick", "brand": "Acme"}])
    catalog = PromptCatalog.from_items(items)
    history = UserHistory("u", np.array([0]), ("purchase",), np.array([np.nan]), np.array([1.0]))
    text = get_strategy(name).render(history, catalog)
    assert "Red lipstick" in text and not any("\u4e00" <= ch <= "\u9fff" for ch in text)
