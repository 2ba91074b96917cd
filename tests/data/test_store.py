"""Store: all-or-nothing ingest, idempotent re-ingest, round trip, deletes, embedding records."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset
from promptrec.data.loaders import load_dataset
from promptrec.data.readers import read_table
from promptrec.data.store import SCHEMA_VERSION, IngestReport, Store, event_keys
from promptrec.errors import DataError

CATALOG = "item_id,title,brand,year\na,Soap,Acme,2001\nb,Shampoo,,\nc,Lip balm,Acme,1999\n"
# the second line is repeated on purpose: a genuine repeat within one file is kept
EVENTS = (
    "user_id,item_id,timestamp,event,rating,query\n"
    "u1,a,10,view,,soap\n"
    "u1,a,10,view,,soap\n"
    "u1,b,11,purchase,4,\n"
    "u2,c,5,view,,\n"
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "shop"
    data.mkdir()
    (data / "catalog.csv").write_text(CATALOG)
    (data / "events.csv").write_text(EVENTS)
    return data


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "db" / "store.db") as s:
        yield s


def snapshot(store: Store) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    data = store.dataset()
    return store.counts(), data.items, data.events


def assert_same(before, after) -> None:
    assert before[0] == after[0]
    pd.testing.assert_frame_equal(before[1], after[1])
    pd.testing.assert_frame_equal(before[2], after[2])


def test_ingest_and_round_trip(store: Store, folder: Path) -> None:
    data = load_dataset(folder)
    report = store.ingest(data, source=folder)
    assert report == IngestReport(
        items_added=3, items_updated=0, events_added=4, events_skipped_duplicate=0
    )
    assert store.counts() == {"items": 3, "events": 4, "users": 2, "ingests": 1, "embeddings": 0}
    back = store.dataset(name="shop")
    assert back.name == "shop"
    pd.testing.assert_frame_equal(back.items, data.items)
    pd.testing.assert_frame_equal(back.events, data.events)


def test_round_trip_keeps_field_types(store: Store) -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "year": pd.array([1995, None], dtype="Int64"),
            "price": [1.5, np.nan],
            "tags": [["x", "y"], []],
            "title": ["Soap", None],
        }
    )
    store.ingest((items, None))
    back = store.dataset().items
    assert back["year"].dtype == "Int64" and back["year"].tolist() == [1995, pd.NA]
    assert back["price"].iloc[0] == 1.5 and np.isnan(back["price"].iloc[1])
    assert back["tags"].tolist() == [["x", "y"], []]
    assert back["title"].iloc[0] == "Soap" and pd.isna(back["title"].iloc[1])


def test_reingesting_the_same_file_is_idempotent(store: Store, folder: Path) -> None:
    first = store.ingest(folder)
    assert first.events_added == 4  # both copies of the repeated line
    before = snapshot(store)
    second = store.ingest(folder)
    assert second == IngestReport(
        items_added=0, items_updated=3, events_added=0, events_skipped_duplicate=4
    )
    after = snapshot(store)
    assert after[0]["ingests"] == before[0]["ingests"] + 1
    assert {k: v for k, v in after[0].items() if k != "ingests"} == {
        k: v for k, v in before[0].items() if k != "ingests"
    }
    pd.testing.assert_frame_equal(before[1], after[1])
    pd.testing.assert_frame_equal(before[2], after[2])


def test_ingest_records_source_hash(store: Store, folder: Path) -> None:
    store.ingest(folder)
    conn = sqlite3.connect(store.path)
    rows = conn.execute("SELECT file_hash, path, kind, rows FROM ingests").fetchall()
    conn.close()
    assert len(rows) == 1
    file_hash, path, kind, n = rows[0]
    assert len(file_hash) == 64 and path == str(folder) and kind == "dataset" and n == 7


def test_failed_ingest_unknown_item_leaves_store_unchanged(store: Store, folder: Path) -> None:
    store.ingest(folder)
    before = snapshot(store)
    items = pd.DataFrame({"item_id": ["d"], "title": ["New"]})
    events = pd.DataFrame(
        {"user_id": ["u3", "u3"], "item_id": ["d", "zz"], "timestamp": [1.0, 2.0]}
    )
    with pytest.raises(DataError) as err:
        store.ingest((items, events), source="batch.csv")
    text = str(err.value)
    assert "batch.csv" in text and "line 2" in text and "column 'item_id'" in text
    assert "'zz'" in text
    assert_same(before, snapshot(store))


def test_failed_add_events_invalid_event_leaves_store_unchanged(
    store: Store, folder: Path, tmp_path: Path
) -> None:
    store.ingest(folder)
    before = snapshot(store)
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nu9,a,1\nu9,b,never\n")
    with pytest.raises(DataError) as err:
        store.add_events(read_table(bad, dtype=str))
    text = str(err.value)
    assert "bad.csv" in text and "line 3" in text and "column 'timestamp'" in text
    assert_same(before, snapshot(store))


def test_failure_inside_the_transaction_rolls_everything_back(
    store: Store, folder: Path, monkeypatch
) -> None:
    store.ingest(folder)
    before = snapshot(store)
    changed = load_dataset(folder)
    changed.items.loc[0, "title"] = "Changed soap"
    extra = pd.DataFrame({"item_id": ["new"], "title": ["New thing"]})
    items = pd.concat([changed.items, extra], ignore_index=True)

    def boom(conn, rows):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "_insert_events", staticmethod(boom))
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.ingest(Dataset(items, changed.events))
    monkeypatch.undo()
    assert_same(before, snapshot(store))
    assert store.dataset().items["title"].iloc[0] == "Soap"
    # and the store still works afterwards
    assert store.ingest((extra, None)).items_added == 1


def test_add_events_keys_and_unknown_items(store: Store, folder: Path) -> None:
    store.ingest(folder)
    new = pd.DataFrame(
        {
            "user_id": ["u3", "u3", "u1"],
            "item_id": ["a", "a", "a"],
            "timestamp": [1, 1, 10],
            "event": ["view", "view", "view"],
            "query": [None, None, "soap"],
        }
    )
    # the repeat inside the batch is kept; u1's view of a (from the file) is already stored
    assert store.add_events(new) == 2
    assert store.add_events(new) == 0
    with pytest.raises(DataError, match="neither in the store"):
        store.add_events(pd.DataFrame({"user_id": ["u"], "item_id": ["zz"], "timestamp": [1]}))
    assert store.counts()["events"] == 6


def test_event_keys_count_occurrences() -> None:
    events = Dataset(
        pd.DataFrame({"item_id": ["a"]}),
        pd.DataFrame(
            {"user_id": ["u", "u", "u"], "item_id": ["a", "a", "a"], "timestamp": [1, 1, 2]}
        ),
    ).events
    keys = event_keys(events)
    assert len(set(keys)) == 3
    assert event_keys(events.iloc[:1]) == keys[:1]


def test_upsert_and_deletes(store: Store, folder: Path) -> None:
    store.ingest(folder)
    assert store.upsert_item("z", {"title": "Zest", "tags": ["x", "y"]}) is True
    assert store.upsert_item("z", {"title": "Zest 2", "tags": []}) is False
    items = store.dataset().items.set_index("item_id")
    assert items.loc["z", "title"] == "Zest 2" and items.loc["z", "tags"] == []
    store.record_embeddings("m", ["a", "b"], ["h1", "h2"], 8)
    assert store.delete_item("a") is True
    assert store.delete_item("a") is False
    counts = store.counts()
    assert counts["items"] == 3 and counts["events"] == 2  # a's two views went with it
    assert store.embedding_hashes("m") == {"b": "h2"}
    assert store.delete_user("u1") == 1
    assert store.delete_user("nobody") == 0
    assert store.dataset().events["user_id"].tolist() == ["u2"]


def test_embedding_records(store: Store, folder: Path) -> None:
    store.ingest(folder)
    store.record_embeddings("mini", ["a", "b"], ["h1", "h2"], 384)
    store.record_embeddings("mini", ["b"], ["h3"], 384)
    store.record_embeddings("other", ["a"], ["x"], 8)
    assert store.embedding_hashes("mini") == {"a": "h1", "b": "h3"}
    assert store.embedding_hashes("other") == {"a": "x"}
    assert store.embedding_hashes("none") == {}
    with pytest.raises(ValueError):
        store.record_embeddings("mini", ["a"], [], 384)


def test_persistence_pragmas_and_schema_version(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.ingest(folder)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="newer"):
        Store(path)


def test_reopen_keeps_data(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.ingest(folder)
        before = snapshot(store)
    with Store(path) as store:
        assert_same(before, snapshot(store))


def test_amazon_beauty_ingest_speed(shared_data: Path, tmp_path: Path) -> None:
    data = load_dataset(shared_data / "amazon-beauty")
    with Store(tmp_path / "beauty.db") as store:
        start = time.perf_counter()
        report = store.ingest(data)
        elapsed = time.perf_counter() - start
        assert report.items_added == 12101 and report.events_added == 198502
        assert elapsed < 15.0, f"ingest took {elapsed:.1f} s"
        counts = store.counts()
        assert (counts["users"], counts["items"], counts["events"]) == (22363, 12101, 198502)
        back = store.dataset()
    assert np.array_equal(back.events["timestamp"], data.events["timestamp"])
    assert back.items["categories"].iloc[0] == data.items["categories"].iloc[0]
