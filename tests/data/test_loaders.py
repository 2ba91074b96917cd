"""Loaders: folder layouts autodetected, real data sets with their published counts."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from promptrec.data.loaders import RECBOLE_INSTALL, find_demo_data, load_dataset
from promptrec.errors import ConfigError, DataError


def n_users(data) -> int:
    return data.events["user_id"].nunique()


# --------------------------------------------------------------------------- real data


def test_movielens_100k(ml100k) -> None:
    data = ml100k
    assert (n_users(data), data.n_items, len(data.events)) == (943, 1682, 100000)
    assert data.name == "movielens-100k"
    toy = data.items.iloc[0]
    assert toy["item_id"] == "1" and toy["title"] == "Toy Story (1995)" and toy["year"] == 1995
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert set(data.events["event"]) == {"rating"}
    assert set(data.events["value"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # file order kept: u.data's first line is "196 242 3 881250949"
    first = data.events.iloc[0]
    assert (first["user_id"], first["item_id"], first["timestamp"]) == ("196", "242", 881250949.0)
    # latin-1 titles decoded
    assert data.items["title"].str.contains("é").any()


def test_movielens_100k_loads_fast(shared_data: Path) -> None:
    start = time.perf_counter()
    load_dataset(shared_data / "movielens-100k")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.5, f"ml-100k took {elapsed:.2f} s"


def test_amazon_beauty(shared_data: Path) -> None:
    start = time.perf_counter()
    data = load_dataset(shared_data / "amazon-beauty")
    elapsed = time.perf_counter() - start
    assert (n_users(data), data.n_items, len(data.events)) == (22363, 12101, 198502)
    assert elapsed < 3.0, f"amazon-beauty took {elapsed:.2f} s"
    assert {"title", "brand", "categories", "price", "sales_rank", "sales_type", "asin"} <= set(
        data.items.columns
    )
    first = data.items.iloc[0]
    assert first["asin"] == "B004756YJA" and first["categories"][0] == "Beauty"
    # position is the time: user 1's events are 0, 1, 2...
    user1 = data.events[data.events["user_id"] == "1"]["timestamp"].to_numpy()
    assert np.array_equal(user1, np.arange(len(user1), dtype=float))


def test_recbole_demo_folder_with_titles_and_genres(recbole_ml100k: Path) -> None:
    data = load_dataset(recbole_ml100k)
    assert (n_users(data), data.n_items, len(data.events)) == (943, 1682, 100000)
    assert data.name == "ml-100k"
    assert list(data.items.columns[:4]) == ["item_id", "title", "year", "genres"]
    toy = data.items.iloc[0]
    assert toy["title"] == "Toy Story"  # a token_seq title stays one string
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy["year"] == 1995
    assert data.items["title"].notna().all()
    assert data.events["value"].notna().all()


def test_recbole_inter_file_path(recbole_ml100k: Path) -> None:
    data = load_dataset(recbole_ml100k / "ml-100k.inter")
    assert len(data.events) == 100000 and data.n_items == 1682


def test_recbole_amazon_item_file_quoted_rows(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "beauty"
    folder.mkdir()
    shutil.copy(shared_data / "amazon-beauty" / "Amazon_Beauty.item", folder / "beauty.item")
    (folder / "beauty.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "u1\tB0001ZYL3Q\t1\nu1\tB000SDI6MI\t2\nu1\t9788072216\t3\n"
    )
    data = load_dataset(folder)
    assert data.n_items == 12101
    items = data.items.set_index("item_id")
    assert items.loc["B0001ZYL3Q", "title"].startswith("TheraNeem Cream")
    assert "\n" in items.loc["B0001ZYL3Q", "title"]  # quoted newline kept inside the field
    assert items.loc["B0001ZYL3Q", "brand"] == "Organix"
    assert items.loc["9788072216", "categories"] == [
        "Beauty",
        "Fragrance",
        "Women's",
        "Eau de Parfum",
    ]
    assert items.loc["9788072216", "price"] == 65.86


def test_movielens_1m_without_ratings_explains_time_order(shared_data: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(shared_data / "movielens-1m")
    text = str(err.value)
    assert "ratings.dat" in text and "time order" in text


# --------------------------------------------------------------------------- layouts


def test_movielens_1m_layout(tmp_path: Path) -> None:
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café (1999)::Drama\n".encode(
            "latin-1"
        )
    )
    (tmp_path / "ratings.dat").write_text("1::2::5::978300760\n1::1::3::978302109\n")
    data = load_dataset(tmp_path, name="tiny")
    assert data.name == "tiny"
    assert data.items["title"].tolist() == ["Toy Story (1995)", "Café (1999)"]
    assert data.items["year"].tolist() == [1995, 1999]
    assert data.items["genres"].iloc[0] == ["Animation", "Children's", "Comedy"]
    assert data.events["item_id"].tolist() == ["2", "1"]
    assert data.events["value"].tolist() == [5.0, 3.0]
    assert set(data.events["event"]) == {"rating"}


def test_movielens_100k_layout_bad_timestamp_line(tmp_path: Path, shared_data: Path) -> None:
    shutil.copy(shared_data / "movielens-100k" / "u.item", tmp_path / "u.item")
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t4\tsoon\n")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    assert "u.data" in str(err.value) and "line 2" in str(err.value)
    assert "column 'timestamp'" in str(err.value)


def test_generic_folder_and_explicit_files(tmp_path: Path) -> None:
    (tmp_path / "catalog.jsonl").write_text(
        json.dumps({"item_id": "a", "title": "Soap"})
        + "\n"
        + json.dumps({"item_id": "b", "title": "Shampoo"})
        + "\n"
    )
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,timestamp,event\nu,a,2024-01-01T00:00:00Z,view\nu,b,1704067260,purchase\n"
    )
    data = load_dataset(tmp_path)
    assert data.name == tmp_path.name
    assert data.events["timestamp"].tolist() == [1704067200.0, 1704067260.0]
    assert data.events["event"].tolist() == ["view", "purchase"]
    same = load_dataset(catalog=tmp_path / "catalog.jsonl", events=tmp_path / "events.csv")
    assert same.events.equals(data.events) and same.items.equals(data.items)


def test_unknown_items_dropped_or_raised(tmp_path: Path, caplog) -> None:
    (tmp_path / "items.csv").write_text("item_id,title\na,Soap\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,position\nu,a,0\nu,x,1\n")
    with caplog.at_level(logging.WARNING, logger="promptrec"):
        data = load_dataset(tmp_path)
    assert data.events["item_id"].tolist() == ["a"]
    assert any("dropped 1 of 2" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path, unknown_items="error")
    assert "interactions.csv" in str(err.value) and "line 3" in str(err.value)
    assert "column 'item_id'" in str(err.value) and "1 events" in str(err.value)


def test_unknown_layout_lists_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    text = str(err.value)
    for looked_for in ("u.data", "ratings.dat", "catalog.*", "interactions.*", ".inter"):
        assert looked_for in text


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(ConfigError):
        load_dataset(tmp_path, catalog=tmp_path / "c.csv")
    with pytest.raises(ConfigError):
        load_dataset(events=tmp_path / "e.csv")


# --------------------------------------------------------------------------- demo data


def test_find_demo_data(recbole_ml100k: Path) -> None:
    assert (recbole_ml100k / "ml-100k.inter").is_file()
    assert (recbole_ml100k / "ml-100k.item").is_file()


def test_find_demo_data_without_recbole(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError) as err:
        find_demo_data()
    assert RECBOLE_INSTALL in str(err.value)
    assert RECBOLE_INSTALL == "pip install --no-deps recbole==1.2.1"
