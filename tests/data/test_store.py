"""Store: all-or-nothing ingest, idempotent re-ingest, round trip, deletes, embedding records,
the service's records (searches, served lists, attributions, idempotency keys) and settings.

Every behaviour test runs on both backends: the SQLite file and a PostgreSQL database (a fresh
schema of the server named by ``PROMPTREC_TEST_POSTGRES_URL`` per test; see ``postgres_url`` in
tests/conftest.py: without a server these tests fail, they are not skipped).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset
from promptrec.data.loaders import load_dataset
from promptrec.data.readers import read_table
from promptrec.data.store import (
    SCHEMA_VERSION,
    EventWrite,
    Impression,
    IngestReport,
    Store,
    event_keys,
    is_postgres_url,
    redact_url,
)
from promptrec.errors import ConfigError, DataError

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


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an empty store lives: a SQLite file path, or a PostgreSQL URL (fresh schema)."""
    if request.param == "sqlite":
        return str(tmp_path / "db" / "store.db")
    return request.getfixturevalue("postgres_store_url")


@pytest.fixture
def store(target: str):
    with Store(target) as s:
        yield s


def raw(target: str, sql: str, params: tuple = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database behind its back (``?`` placeholders; committed)."""
    if is_postgres_url(target):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(target)
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


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
    assert store.counts() == {
        "items": 3,
        "events": 4,
        "users": 2,
        "ingests": 1,
        "embeddings": 0,
        "searches": 0,
        "impressions": 0,
    }
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


def test_ingest_records_source_hash(store: Store, target: str, folder: Path) -> None:
    store.ingest(folder)
    rows = raw(target, "SELECT file_hash, path, kind, rows FROM ingests")
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

    def boom(db, rows):
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
    assert store.add_events(new).added == 2
    assert store.add_events(new).added == 0
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
    assert store.delete_user("u1")["events"] == 1
    assert store.delete_user("nobody") == {
        "events": 0,
        "searches": 0,
        "impressions": 0,
        "attributions": 0,
    }
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


def test_sqlite_journal_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        assert store.backend == "sqlite" and store.path == path
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_schema_version_is_checked(target: str, folder: Path) -> None:
    with Store(target) as store:
        store.ingest(folder)
        assert store.meta("schema_version") == str(SCHEMA_VERSION)
    version = raw(target, "SELECT value FROM meta WHERE key='schema_version'")
    assert version == [(str(SCHEMA_VERSION),)]
    raw(target, "UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(DataError, match="newer") as err:
        Store(target)
    assert redact_url(target) in str(err.value)


def test_reopen_keeps_data(target: str, folder: Path) -> None:
    with Store(target) as store:
        store.ingest(folder)
        before = snapshot(store)
    with Store(target) as store:
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


# ---------------------------------------------------------------- both backends: more behaviour


def test_database_error_inside_the_transaction_rolls_everything_back(
    store: Store, folder: Path, monkeypatch
) -> None:
    """An error raised by the database itself (a foreign key, after some rows went in) leaves
    nothing half-written, and the store's connection is usable afterwards."""
    store.ingest(folder)
    before = snapshot(store)
    original = Store._insert_events

    def insert_then_break(db, rows):
        original(db, rows)
        db.execute(
            "INSERT INTO events(event_key, user_id, item_id, timestamp, event) "
            "VALUES ('k', 'u', 'no-such-item', 1.0, 'view')"
        )

    monkeypatch.setattr(Store, "_insert_events", staticmethod(insert_then_break))
    new_events = pd.DataFrame({"user_id": ["u7"], "item_id": ["new"], "timestamp": [3.0]})
    extra = pd.DataFrame({"item_id": ["new"], "title": ["New thing"]})
    with pytest.raises(Exception, match="(?i)foreign key"):
        store.ingest((extra, new_events))
    monkeypatch.undo()
    assert_same(before, snapshot(store))
    assert store.ingest((extra, new_events)).events_added == 1


def clicks(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])


def test_add_events_idempotency_key_replays_the_first_answer(store: Store, folder: Path) -> None:
    store.ingest(folder)
    batch = clicks([("u3", "a", 20.0, "click"), ("u3", "b", 21.0, "click")])
    first = store.add_events(batch, idempotency_key="req-1")
    assert first == EventWrite(added=2, duplicates=0, added_rows=(0, 1), replayed=False)
    before = snapshot(store)
    # a retry with the same key writes nothing, not even its searches, and answers as the first
    again = store.add_events(batch, searches=[("u3", "more soap", 22.0)], idempotency_key="req-1")
    assert again == EventWrite(added=2, duplicates=0, added_rows=(), replayed=True)
    assert_same(before, snapshot(store))
    # the same events under another key are duplicates by their event keys
    assert store.add_events(batch, idempotency_key="req-2") == EventWrite(0, 2, ())
    assert store.add_events(batch) == EventWrite(0, 2, ())
    assert store.counts()["events"] == 6


def test_failed_add_events_does_not_spend_its_idempotency_key(store: Store, folder: Path) -> None:
    store.ingest(folder)
    with pytest.raises(DataError):
        store.add_events(clicks([("u3", "zz", 20.0, "click")]), idempotency_key="req-1")
    write = store.add_events(clicks([("u3", "a", 20.0, "click")]), idempotency_key="req-1")
    assert write == EventWrite(1, 0, (0,))


def test_searches(store: Store, folder: Path) -> None:
    store.ingest(folder)
    assert store.searches() == []
    empty = pd.DataFrame(columns=["user_id", "item_id", "timestamp"])
    write = store.add_events(empty, searches=[("u1", "red soap", 30.0), ("u2", "balm", 31)])
    assert write == EventWrite(0, 0, ())
    store.add_events(clicks([("u1", "a", 32.0, "click")]), searches=[("u1", "blue soap", 33.5)])
    assert store.searches() == [
        ("u1", "red soap", 30.0),
        ("u2", "balm", 31.0),
        ("u1", "blue soap", 33.5),
    ]
    assert store.searches("u1") == [("u1", "red soap", 30.0), ("u1", "blue soap", 33.5)]
    assert store.searches("nobody") == []
    assert all(type(t) is float for _, _, t in store.searches())
    assert store.counts()["searches"] == 3


def served() -> list[Impression]:
    return [
        Impression("r1", "u1", "A", "v1", "mean-of-items", ("a", "b"), 100.0),
        Impression("r2", "u2", "B", "v2", "query", ("c",), 200.5),
        Impression("r3", "u1", "A", "v1", "mean-of-items", ("b",), 3700.0),
    ]


def test_impressions(store: Store, folder: Path) -> None:
    store.ingest(folder)
    store.record_impressions(served())
    store.record_impressions(served()[:1])  # a retried request id is ignored
    assert store.counts()["impressions"] == 3
    r1, r2, r3 = served()
    assert store.impressions("u1") == [r3, r1]  # newest first
    assert store.impressions("u1", limit=1) == [r3]
    assert store.impressions("nobody") == []
    assert store.impression("r2") == r2
    assert store.impression("nope") is None
    assert type(store.impression("r1").at) is float


def test_attributions_and_online_stats(store: Store, folder: Path) -> None:
    store.ingest(folder)
    assert store.online_stats() == []
    store.record_impressions(served())
    batch = clicks(
        [
            ("u1", "a", 101.0, "click"),
            ("u1", "a", 102.0, "purchase"),
            ("u2", "c", 201.0, "cart"),
            ("u1", "b", 3701.0, "view"),  # no attribution
        ]
    )
    write = store.add_events(batch, attributions={0: "r1", 1: "r1", 2: "r2"})
    assert write == EventWrite(4, 0, (0, 1, 2, 3))
    # attributions are written only for new events: a replayed batch adds none
    store.add_events(batch, attributions={0: "r3", 3: "r3"})

    def row(arm, version, strategy, bucket, shown, clicked, carted, bought):
        return {
            "arm": arm,
            "model_version": version,
            "strategy": strategy,
            "bucket": bucket,
            "impressions": shown,
            "clicks": clicked,
            "carts": carted,
            "purchases": bought,
            "ctr": clicked / shown,
            "conversion": bought / shown,
        }

    assert store.online_stats() == [
        row("A", "v1", "mean-of-items", None, 2, 1, 0, 1),
        row("B", "v2", "query", None, 1, 0, 1, 0),
    ]
    hourly = store.online_stats(bucket_seconds=3600)
    assert hourly == [
        row("A", "v1", "mean-of-items", 0.0, 1, 1, 0, 1),
        row("B", "v2", "query", 0.0, 1, 0, 1, 0),
        row("A", "v1", "mean-of-items", 3600.0, 1, 0, 0, 0),
    ]
    for stats in hourly:
        assert all(type(stats[k]) is int for k in ("impressions", "clicks", "carts", "purchases"))
        assert type(stats["bucket"]) is float and type(stats["ctr"]) is float
    assert [s["bucket"] for s in store.online_stats(bucket_seconds=150)] == [0.0, 150.0, 3600.0]


def test_online_stats_orders_arms_by_code_point(store: Store) -> None:
    """The same order on both databases, whatever PostgreSQL's collation says."""
    store.record_impressions(
        [Impression(f"r{i}", "u", arm, "v", "s", (), 1.0) for i, arm in enumerate("baBA")]
    )
    assert [s["arm"] for s in store.online_stats()] == ["A", "B", "a", "b"]


def test_feedback_stored_before_its_list_counts_once_the_list_is(
    store: Store, folder: Path
) -> None:
    """A click may reach the store before its list (the list's batch failed and waits for the
    next flush): it counts when the list arrives, and forgetting the user takes both away."""
    store.ingest(folder)
    first, *_ = served()
    store.add_events(clicks([("u1", "a", 101.0, "click")]), attributions={0: "r1"})
    assert store.online_stats() == []  # nothing served yet that it could count against
    store.record_impressions([first])
    [row] = store.online_stats()
    assert (row["impressions"], row["clicks"]) == (1, 1)
    store.add_events(clicks([("u1", "b", 102.0, "click")]), attributions={0: "r1"})
    assert store.online_stats()[0]["clicks"] == 1  # a list is clicked once
    store.delete_user("u1")
    assert store.online_stats() == []
    [(clicked, shown)] = store._read("SELECT SUM(clicks), SUM(impressions) FROM online_series")
    assert (clicked, shown) == (0, 0)


def test_online_counts_of_an_older_store_are_filled_on_open(target: str, folder: Path) -> None:
    """A store written before the counts (schema 2) gets them from its stored lists."""
    with Store(target) as store:
        store.ingest(folder)
        store.record_impressions(served())
        store.add_events(
            clicks([("u1", "a", 101.0, "click"), ("u2", "c", 201.0, "purchase")]),
            attributions={0: "r1", 1: "r2"},
        )
        expected = store.online_stats(), store.online_stats(bucket_seconds=3600)
    raw(target, "DROP TABLE online_totals")
    raw(target, "DROP TABLE online_series")
    raw(target, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with Store(target) as store:
        assert (store.online_stats(), store.online_stats(bucket_seconds=3600)) == expected
        assert store.meta("schema_version") == str(SCHEMA_VERSION)


def test_delete_user_forgets_everything_of_theirs(store: Store, folder: Path) -> None:
    store.ingest(folder)
    store.record_impressions(served())
    store.add_events(
        clicks(
            [("u1", "a", 101.0, "click"), ("u1", "b", 102.0, "click"), ("u2", "c", 201.0, "cart")]
        ),
        searches=[("u1", "soap", 99.0), ("u2", "balm", 199.0)],
        attributions={0: "r1", 1: "r3", 2: "r2"},
    )
    assert store.delete_user("u1") == {
        "events": 5,  # three from the file, two clicks
        "searches": 1,
        "impressions": 2,
        "attributions": 2,
    }
    assert store.searches() == [("u2", "balm", 199.0)]
    assert store.impressions("u1") == [] and store.impression("r2") is not None
    assert [s["clicks"] + s["carts"] for s in store.online_stats()] == [1]
    assert set(store.dataset().events["user_id"]) == {"u2"}
    assert store.delete_user("u1") == dict.fromkeys(
        ("events", "searches", "impressions", "attributions"), 0
    )


def test_meta(store: Store) -> None:
    assert store.meta("secret") is None
    store.set_meta("secret", "one")
    assert store.meta("secret") == "one"
    store.set_meta("secret", "two", overwrite=False)
    assert store.meta("secret") == "one"
    store.set_meta("secret", 3)  # stored as text
    assert store.meta("secret") == "3"


def test_concurrent_writers_are_serialised(target: str, folder: Path) -> None:
    """Four connections retry one request at once: exactly one writes, three replay it."""
    with Store(target) as store:
        store.ingest(folder)
    stores = [Store(target) for _ in range(4)]
    batch = clicks([("u9", "a", 99.0, "click"), ("u9", "b", 99.0, "click")])
    start = threading.Barrier(len(stores))
    results: list[EventWrite] = []

    def write(s: Store) -> None:
        start.wait()
        results.append(s.add_events(batch, idempotency_key="same"))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for s in stores:
            s.close()
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    assert {(r.added, r.duplicates) for r in results} == {(2, 0)}
    with Store(target) as store:
        assert store.counts()["events"] == 6


# ---------------------------------------------------------------- opening a store


def test_store_kind_and_location(target: str) -> None:
    with Store(target) as store:
        if is_postgres_url(target):
            assert store.backend == "postgresql" and store.path is None
            from psycopg.conninfo import conninfo_to_dict

            assert store.dataset().name == conninfo_to_dict(target)["dbname"]
        else:
            assert store.backend == "sqlite" and store.path == Path(target)
            assert store.dataset().name == "store"
        assert repr(store) == f"Store({redact_url(target)!r})"


def test_redact_url() -> None:
    assert redact_url("postgresql://me:s3cr%40t@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_url("postgres://me@db/x?password=s3cret&sslmode=require") == (
        "postgres://me@db/x?password=***&sslmode=require"
    )
    assert redact_url("postgresql://db/x") == "postgresql://db/x"
    assert is_postgres_url("postgres://db/x") and is_postgres_url("postgresql://db/x")
    assert not is_postgres_url(Path("postgresql:/db/x")) and not is_postgres_url("store.db")


def test_unreachable_postgres_is_a_one_line_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        Store("postgresql://promptrec:s3cret@127.0.0.1:1/promptrec_test?connect_timeout=5")
    text = str(err.value)
    assert text.startswith("cannot open the store postgresql://promptrec:***@127.0.0.1:1/")
    assert "s3cret" not in text and "\n" not in text


def test_bad_postgres_url_is_a_one_line_error_without_the_password() -> None:
    with pytest.raises(ConfigError, match="not a valid PostgreSQL URL") as err:
        Store("postgresql://promptrec:s3cret@127.0.0.1:5432/x?nonsense=1")
    assert "s3cret" not in str(err.value)


def test_url_turned_into_a_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass the URL as a string"):
        Store(Path("postgresql://promptrec@127.0.0.1:5432/promptrec_test"))
    assert not Path("postgresql:").exists()


def test_unopenable_sqlite_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is no database, just bytes" * 100)
    with pytest.raises(ConfigError, match="cannot open the store .*not-a-store.db"):
        Store(bad)
