"""Store: all-or-nothing ingest, idempotent re-ingest, round trip, deletes, embedding records,
searches and settings (the service's own records are tested in tests/service/test_state.py).

Every behaviour test runs on both backends: the SQLite file and a PostgreSQL database (a fresh
schema of the server named by ``PROMPTREC_TEST_POSTGRES_URL`` per test; see ``postgres_url`` in
tests/conftest.py: without a server these tests fail, they are not skipped).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset
from promptrec.data.loaders import load_dataset
from promptrec.data.readers import read_table
from promptrec.errors import ConfigError, DataError
from promptrec.store import (
    Event,
    EventWrite,
    IngestReport,
    Store,
    UnknownItemError,
    event_keys,
    is_postgres_url,
    log,
    redact_url,
)
from promptrec.store.database import open_database
from promptrec.store.schema import SCHEMA_VERSION


@pytest.fixture
def folder(shop_folder: Path) -> Path:
    return shop_folder


@pytest.fixture
def target(store_target: str) -> str:
    return store_target


@pytest.fixture
def store(target: str):
    with Store(target) as s:
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
    assert store.counts() == {
        "items": 3,
        "events": 4,
        "users": 2,
        "ingests": 1,
        "embeddings": 0,
        "searches": 0,
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


def test_ingest_records_source_hash(store: Store, target: str, folder: Path, raw_sql) -> None:
    store.ingest(folder)
    rows = raw_sql(target, "SELECT file_hash, path, kind, rows FROM ingests")
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

    monkeypatch.setattr(log, "insert_many", boom)
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
    with pytest.raises(UnknownItemError, match="neither in the store"):
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


def test_sqlite_writers_queue_on_a_lock_file_held_for_the_transaction(tmp_path: Path) -> None:
    """Writers of one SQLite file wait on a lock the kernel hands over at once (SQLite's own
    busy wait sleeps up to 100 ms between tries): held from BEGIN to COMMIT or ROLLBACK."""
    fcntl = pytest.importorskip("fcntl")  # where there is no flock, SQLite's lock alone
    db = open_database(tmp_path / "s.db")
    other = open(tmp_path / "s.db-writer", "ab")  # another process's view of the lock

    def held() -> bool:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False

    try:
        with db.transaction():
            db.execute("CREATE TABLE t (x INTEGER)")
            assert held()
        assert not held()
        with pytest.raises(ZeroDivisionError), db.transaction():
            db.execute("INSERT INTO t VALUES (1)")
            assert held()
            1 / 0  # noqa: B018 - a failing write: rolled back
        assert not held() and db.scalar("SELECT COUNT(*) FROM t") == 0
        fcntl.flock(other, fcntl.LOCK_EX)  # another writer holds it: this one waits
        waited: list[float] = []

        def write() -> None:
            started = time.perf_counter()
            with db.transaction():
                db.execute("INSERT INTO t VALUES (2)")
            waited.append(time.perf_counter() - started)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        assert not waited  # still waiting for the lock
        fcntl.flock(other, fcntl.LOCK_UN)
        writer.join(10)
        assert waited and waited[0] >= 0.3 and db.scalar("SELECT COUNT(*) FROM t") == 1
        # a second connection of the same thread would wait for itself: refused at once
        second = open_database(tmp_path / "s.db")
        with db.transaction():
            for _ in range(2):  # and again: the refusal did not give the lock away
                with pytest.raises(RuntimeError, match="inside another"), second.transaction():
                    pass
        second.close()
        with db.transaction():  # and the lock is free again
            db.execute("INSERT INTO t VALUES (3)")
        assert db.scalar("SELECT COUNT(*) FROM t") == 2
        # a BEGIN that fails (another program holds SQLite's own lock) lets the writers in
        outsider = sqlite3.connect(tmp_path / "s.db", timeout=0)
        outsider.execute("BEGIN IMMEDIATE")
        db._conn.execute("PRAGMA busy_timeout=50")
        with pytest.raises(sqlite3.OperationalError, match="locked"), db.transaction():
            pass
        assert not held()
        outsider.rollback()
        outsider.close()
    finally:
        other.close()
        db.close()


def test_schema_version_is_checked(target: str, folder: Path, raw_sql) -> None:
    with Store(target) as store:
        store.ingest(folder)
        assert store.meta("schema_version") == str(SCHEMA_VERSION)
    version = raw_sql(target, "SELECT value FROM meta WHERE key='schema_version'")
    assert version == [(str(SCHEMA_VERSION),)]
    raw_sql(target, "UPDATE meta SET value='999' WHERE key='schema_version'")
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
    original = log.insert_many

    def insert_then_break(db, rows):
        original(db, rows)
        db.execute(
            "INSERT INTO events(event_key, user_id, item_id, timestamp, event) "
            "VALUES ('k', 'u', 'no-such-item', 1.0, 'view')"
        )

    monkeypatch.setattr(log, "insert_many", insert_then_break)
    new_events = pd.DataFrame({"user_id": ["u7"], "item_id": ["new"], "timestamp": [3.0]})
    extra = pd.DataFrame({"item_id": ["new"], "title": ["New thing"]})
    with pytest.raises(Exception, match="(?i)foreign key"):
        store.ingest((extra, new_events))
    monkeypatch.undo()
    assert_same(before, snapshot(store))
    assert store.ingest((extra, new_events)).events_added == 1


def clicks(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])


def test_searches(store: Store, folder: Path) -> None:
    """A search that led to no item is an event with no item, kept apart from the log."""
    store.ingest(folder)
    assert store.searches() == []
    write = store.add_events([Event("u1", None, 30.0, "search", query="red soap")])
    assert write == EventWrite(added=0, duplicates=0, searches=1)
    write = store.add_events(
        [
            Event("u2", None, 31, "search", query="balm"),
            Event("u1", "a", 32.0, "click"),
            Event("u1", None, 33.5, "search", query="blue soap"),
        ]
    )
    assert write == EventWrite(added=1, duplicates=0, searches=2, added_rows=(1,))
    assert store.searches() == [
        ("u1", "red soap", 30.0),
        ("u2", "balm", 31.0),
        ("u1", "blue soap", 33.5),
    ]
    assert store.searches("u1") == [("u1", "red soap", 30.0), ("u1", "blue soap", 33.5)]
    assert store.searches("nobody") == []
    assert all(type(t) is float for _, _, t in store.searches())
    assert store.latest_search("u1") == ("blue soap", 33.5)
    assert store.counts()["searches"] == 3


@pytest.mark.parametrize(
    ("event", "column", "problem"),
    [
        (Event("u1", None, 30.0, "search", query="   "), "query", "blank"),
        (Event("u1", None, 30.0, "search"), "query", "needs a query"),
        (Event("u1", None, 30.0, "click"), "item_id", "required"),
        (Event(" u1", "a", 30.0, "click"), "user_id", "spaces"),
        (Event("u1", "a", 30.0, "rating"), "value", "needs a value"),
        (Event("u1", "a", -1.0, "click"), "timestamp", "before 1970"),
        (Event("u1", "a", 30.0, "click", query="q\x00"), "query", "NUL"),
    ],
)
def test_bad_event_rows_name_their_row_and_column(
    store: Store, folder: Path, event: Event, column: str, problem: str
) -> None:
    store.ingest(folder)
    before = snapshot(store)
    with pytest.raises(DataError, match=problem) as err:
        store.add_events([Event("u1", "a", 29.0, "click"), event])
    assert (err.value.row, err.value.column) == (2, column)
    assert_same(before, snapshot(store))


def test_meta(store: Store) -> None:
    assert store.meta("secret") is None
    store.set_meta("secret", "one")
    assert store.meta("secret") == "one"
    store.set_meta("secret", "two", overwrite=False)
    assert store.meta("secret") == "one"
    store.set_meta("secret", 3)  # stored as text
    assert store.meta("secret") == "3"


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
