"""Retrieval filters on real catalogue rows."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from promptrec.retrieval import Filters


def test_no_filter_is_no_mask(beauty_slice) -> None:
    assert Filters().mask(beauty_slice) is None


def test_category_matches_any_path_level(beauty_slice) -> None:
    mask = Filters(categories=["nail polish"]).mask(beauty_slice)
    cats = beauty_slice.items["categories"]
    expected = np.array(["Nail Polish" in c for c in cats])
    assert mask.any() and (mask == expected).all()


def test_price_range_drops_unpriced_items(beauty_slice) -> None:
    mask = Filters(price_min=5, price_max=10).mask(beauty_slice)
    price = beauty_slice.items["price"].to_numpy(dtype=float)
    expected = ~np.isnan(price) & (price >= 5) & (price <= 10)
    assert mask.any() and (mask == expected).all()


def test_allow_and_deny(beauty_slice) -> None:
    ids = list(beauty_slice.item_ids[:5])
    mask = Filters(allow=ids, deny=[ids[0]]).mask(beauty_slice)
    assert mask.sum() == 4 and not mask[0] and mask[1:5].all()


def test_bad_price_range_is_rejected() -> None:
    with pytest.raises(ValidationError, match="price_min"):
        Filters(price_min=10, price_max=5)
    with pytest.raises(ValidationError):
        Filters(price_min=-1)
