"""The store's columnar copies (promptrec.store.copies): what a read of the whole store takes
from disk instead of every row. They must read back exactly what the store holds, pick up rows
added since, and never serve rows deleted since: a forgotten user's events stay neither in what
is read nor on disk.

A real slice of amazon-beauty (300 users, their items: titles, brands, category lists, prices
with gaps), with the copies' size threshold lowered to one row.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from promptrec.store import Event, Store, copies, log
from promptrec.store import store as store_module


def open_store(path: Path) -> Store:
    store = Store(path)
    store.log_copy.min_rows = store.catalogue_copy.min_rows = 1
    return store


@pytest.fixture
def path(tmp_path: Path, beauty_slice) -> Path:
    db = tmp_path / "shop.db"
    with Store(db) as store:
        store.ingest(beauty_slice)
    return db


def from_the_store(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the store holds, read row by row (no copies)."""
    with Store(path) as store:
        store.log_copy = store.catalogue_copy = None
        data = store.dataset()
    return data.items, data.events


def copy_files(path: Path) -> set[str]:
    return {p.name for p in path.parent.glob("*.arrow")}


def test_the_copies_read_back_exactly_what_the_store_holds(path: Path, monkeypatch) -> None:
    items, events = from_the_store(path)
    with open_store(path) as store:
        first = store.dataset()  # read from the store, copies written
    assert copy_files(path) == {"shop.db-log.arrow", "shop.db-items.arrow"}
    pd.testing.assert_frame_equal(first.items, items)
    pd.testing.assert_frame_equal(first.events, events)

    def refuse(*args, **kwargs):
        raise AssertionError("the store's rows were parsed again")

    # the next read parses no stored row: both frames come from the copies, exactly
    monkeypatch.setattr(store_module, "items_frame", refuse)
    monkeypatch.setattr(log, "events_frame", refuse)
    with open_store(path) as store:
        again = store.dataset()
    pd.testing.assert_frame_equal(again.items, items)
    pd.testing.assert_frame_equal(again.events, events)
    assert isinstance(again.items["categories"].iloc[0], list)  # lists, as the store reads them
    assert len(again.events) == len(events) > 1000


def test_readers_at_once_take_turns_and_the_store_is_read_once(path: Path, monkeypatch) -> None:
    """Two readers start together (a service's workers): the first reads the store's rows and
    writes the copies, the second waits its turn and reads the copies."""
    parsed: list[str] = []
    items_frame, events_frame = store_module.items_frame, log.events_frame

    def slow(name, make):
        def run(rows):
            parsed.append(name)
            time.sleep(0.5)  # the two readers overlap
            return make(rows)

        return run

    monkeypatch.setattr(store_module, "items_frame", slow("items", items_frame))
    monkeypatch.setattr(log, "events_frame", slow("events", events_frame))
    read: list[pd.DataFrame] = []

    def reader() -> None:
        with open_store(path) as store:
            read.append(store.dataset().events)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(parsed) == ["events", "items"]
    pd.testing.assert_frame_equal(read[0], read[1])


def test_events_added_since_are_read_and_appended(path: Path) -> None:
    with open_store(path) as store:
        store.dataset()
        item = store.dataset().items["item_id"].iloc[0]
        store.add_events([Event("someone new", item, 1.7e9, "purchase")])
        data = store.dataset()
    assert data.events["user_id"].iloc[-1] == "someone new"
    pd.testing.assert_frame_equal(data.events, from_the_store(path)[1])


def test_a_forgotten_user_leaves_the_copy_and_the_disk(path: Path) -> None:
    with open_store(path) as store:
        user = store.dataset().events["user_id"].iloc[0]
        assert (path.parent / "shop.db-log.arrow").exists()
        with pytest.raises(RuntimeError), store.db.transaction() as db:
            log.delete_user(db, user)
            raise RuntimeError("rolled back")
        assert (path.parent / "shop.db-log.arrow").exists()  # nothing was deleted
        with store.db.transaction() as db:
            log.delete_user(db, user)
        assert not (path.parent / "shop.db-log.arrow").exists()  # gone with the commit
        data = store.dataset()
    assert user not in set(data.events["user_id"])
    pd.testing.assert_frame_equal(data.events, from_the_store(path)[1])


def test_a_deletion_behind_promptrec_s_back_is_never_served_from_the_copy(path: Path) -> None:
    with open_store(path) as store:
        user = store.dataset().events["user_id"].iloc[-1]
    with sqlite3.connect(path) as conn:  # by hand: nothing removes the file
        conn.execute("DELETE FROM events WHERE user_id = ?", (user,))
        conn.execute("DELETE FROM items WHERE rowid = (SELECT MIN(rowid) FROM items)")
    assert copy_files(path) == {"shop.db-log.arrow", "shop.db-items.arrow"}
    with open_store(path) as store:
        data = store.dataset()
    items, events = from_the_store(path)
    assert user not in set(data.events["user_id"])
    pd.testing.assert_frame_equal(data.events, events)
    pd.testing.assert_frame_equal(data.items, items)


def test_a_deletion_while_the_copy_is_written_removes_it(path: Path, monkeypatch) -> None:
    write = copies._write

    def write_then_forget(target: Path, table, meta) -> bool:
        done = write(target, table, meta)
        if target.name.endswith("-log.arrow"):  # another worker forgets a user meanwhile
            with sqlite3.connect(path) as conn:
                conn.execute("DELETE FROM events WHERE id = (SELECT MAX(id) FROM events)")
        return done

    monkeypatch.setattr(copies, "_write", write_then_forget)
    with open_store(path) as store:
        store.dataset()
    assert copy_files(path) == {"shop.db-items.arrow"}


def test_a_changed_item_is_read_from_the_store(path: Path) -> None:
    with open_store(path) as store:
        item = store.dataset().items["item_id"].iloc[3]
        store.upsert_item(item, {"title": "a new title", "tags": ["x", "y"]})
        data = store.dataset()
        assert data.items.set_index("item_id").loc[item, "title"] == "a new title"
        pd.testing.assert_frame_equal(data.items, from_the_store(path)[0])
        store.delete_item(item)  # its events go: the log's copy too
        assert not (path.parent / "shop.db-log.arrow").exists()
        data = store.dataset()
    assert item not in set(data.items["item_id"]) | set(data.events["item_id"])


def test_another_store_under_the_same_name_never_reads_the_copies(path: Path, beauty_slice) -> None:
    with open_store(path) as store:
        store.dataset()
    kept = {name: (path.parent / name).read_bytes() for name in copy_files(path)}
    path.unlink()
    # a new store under the same file name, as many events, other users: only the store's id
    # tells the old copies from its own
    events = beauty_slice.events.assign(user_id="other " + beauty_slice.events["user_id"])
    with Store(path) as other:
        other.ingest((beauty_slice.items, events))
    for name, content in kept.items():
        (path.parent / name).write_bytes(content)
    with open_store(path) as store:
        data = store.dataset()
    assert data.events["user_id"].str.startswith("other ").all()


def test_fields_arrow_cannot_hold_exactly_keep_no_copy(tmp_path: Path) -> None:
    items = pd.DataFrame(
        {"item_id": ["a", "b"], "title": ["A", "B"], "specs": [{"size": 1}, {"colour": "red"}]}
    )
    with open_store(tmp_path / "shop.db") as store:
        store.ingest((items, None))
        data = store.dataset()
    assert data.items["specs"].tolist() == [{"size": 1}, {"colour": "red"}]
    assert copy_files(tmp_path / "shop.db") == set()


def test_an_unreadable_copy_is_removed_and_the_store_read(path: Path, caplog) -> None:
    with open_store(path) as store:
        store.dataset()
    (path.parent / "shop.db-log.arrow").write_bytes(b"not an arrow file")
    with caplog.at_level(logging.WARNING, logger="promptrec"), open_store(path) as store:
        data = store.dataset()
    assert "unreadable" in caplog.text
    pd.testing.assert_frame_equal(data.events, from_the_store(path)[1])


def test_small_stores_and_other_databases_keep_no_copy(path: Path, postgres_store_url) -> None:
    with Store(path) as store:  # the default threshold: 200,000 rows
        store.dataset()
    assert copy_files(path) == set()
    with Store(postgres_store_url) as store, Store(":memory:") as memory:
        assert store.log_copy is store.catalogue_copy is memory.log_copy is None
