"""What the store accepts (promptrec.data.limits), at ingest, and what it does with rows that
were stored before the checks (or by hand): it skips them, never fails."""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from promptrec.data import limits
from promptrec.data.readers import read_table
from promptrec.errors import DataError
from promptrec.store import Store


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (10**22, "outside the 64-bit range"),
        (-(2**63) - 1, "outside the 64-bit range"),
        (math.inf, "not a finite number"),
        (math.nan, "not a finite number"),
        (1e300, "beyond"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ("nul \x00 char", "NUL"),
        ("x" * (limits.MAX_TEXT_LENGTH + 1), "longer than"),
        ([[[["too deep"]]]], "nested deeper"),
        (["ok", 10**22], "[1] integer"),
        ({"inner": math.inf}, "['inner']"),
        ({"\ud800": 1}, "lone surrogate"),
        (object(), "expected text, a number"),
    ],
)
def test_field_values_the_store_cannot_keep(value, problem) -> None:
    with pytest.raises(ValueError, match="stock") as err:
        limits.check_fields({"title": "ok", "stock": value})
    assert problem in str(err.value)


@pytest.mark.parametrize(
    "value",
    [
        2**63 - 1,
        -(2**63),
        1e15,
        -3.5,
        0,
        True,
        None,
        "plain",
        "中文标题",
        "emoji 🙂",
        ["a", 1],
        {"k": 1},
    ],
)
def test_field_values_the_store_keeps(value) -> None:
    assert limits.check_fields({"title": "t", "v": value})


def test_field_names_and_counts() -> None:
    with pytest.raises(ValueError, match="field name"):
        limits.check_fields({"": "x"})
    with pytest.raises(ValueError, match="field name"):
        limits.check_fields({"a\x00b": "x"})
    with pytest.raises(ValueError, match="fields; at most"):
        limits.check_fields({f"f{i}": i for i in range(limits.MAX_FIELDS + 1)})


def test_timestamps_must_be_plausible() -> None:
    now = time.time()
    assert limits.to_seconds(0, "t") == 0.0
    assert limits.to_seconds(now, "t") == now
    assert limits.to_seconds(datetime(2020, 1, 1), "t") == 1577836800.0  # naive is UTC
    plus_two = datetime(2020, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert limits.to_seconds(plus_two, "t") == 1577836800.0
    for bad, text in [
        (datetime(1, 1, 1), "before 1970"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "before 1970"),
        (datetime(9999, 12, 31, 23, 59, 59), "in the future"),
        (1e300, "in the future"),
        (-1, "before 1970"),
        (math.nan, "not a finite time"),
        (now + 2 * 86400, "in the future"),
    ]:
        with pytest.raises(ValueError, match="^when: ") as err:
            limits.to_seconds(bad, "when")
        assert text in str(err.value)
    assert limits.to_seconds(datetime.now(UTC) + timedelta(hours=23), "t") > now  # clock skew


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_ingest_names_the_line_and_field_of_a_value_it_cannot_keep(tmp_path: Path) -> None:
    catalog = _write(
        tmp_path / "items.jsonl",
        '{"item_id": "a", "title": "Soap"}\n'
        '{"item_id": "b", "title": "Code", "stock": 10000000000000000000000}\n',
    )
    with Store(tmp_path / "s.db") as store:
        with pytest.raises(DataError, match="stock: integer") as err:
            store.ingest((read_table(catalog), None), source=catalog)
        assert err.value.row == 2 and "items.jsonl" in str(err.value)
        assert store.counts()["items"] == 0  # all or nothing
        store.ingest((read_table(catalog).iloc[:1], None))
        future = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
        events = _write(
            tmp_path / "events.csv",
            f"user_id,item_id,timestamp,value\nu1,a,2020-01-01T00:00:00,4\nu1,a,{future},5\n",
        )
        with pytest.raises(DataError, match="in the future") as err:
            store.ingest((None, read_table(events)), source=events)
        assert err.value.row == 3 and err.value.column == "timestamp"
        bad_value = _write(tmp_path / "v.csv", "user_id,item_id,timestamp,value\nu1,a,5,1e300\n")
        with pytest.raises(DataError, match="value") as err:
            store.ingest((None, read_table(bad_value)), source=bad_value)
        assert err.value.row == 2
        long_id = "u" * 300
        with pytest.raises(DataError, match="longer than 256") as err:
            store.add_events(
                pd.DataFrame({"user_id": [long_id], "item_id": ["a"], "timestamp": [1]})
            )
        assert err.value.column == "user_id"
        assert store.counts()["events"] == 0


def test_ingest_refuses_a_lone_surrogate_and_nul(tmp_path: Path) -> None:
    catalog = _write(
        tmp_path / "items.jsonl",
        '{"item_id": "a", "title": "Soap"}\n{"item_id": "b", "title": "bad \\ud800 text"}\n',
    )
    with Store(tmp_path / "s.db") as store:
        with pytest.raises(DataError, match="not valid Unicode") as err:
            store.ingest((read_table(catalog), None), source=catalog)
        assert err.value.row == 2
        with pytest.raises(DataError, match="NUL"):
            store.upsert_item("c", {"title": "a\x00b"})
        with pytest.raises(DataError, match="NUL") as err:
            store.upsert_item("c\x00d", {"title": "ok"})
        assert err.value.column == "item_id"
        assert store.counts()["items"] == 0


def _poison(store: Store) -> None:
    """Rows an older promptrec (or a hand edit) could leave: the checks never saw them."""
    with store.db.transaction() as db:
        db.execute(
            "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?)",
            ("huge", json.dumps({"title": "Code", "stock": 10**22}), 1.0),
        )
        db.execute(
            "INSERT INTO items(item_id, fields, updated_at) VALUES (?, ?, ?)",
            ("broken", "{not json", 1.0),
        )
        db.execute(
            "INSERT INTO events(event_key, user_id, item_id, timestamp, event) "
            "VALUES (?, ?, ?, ?, ?)",
            ("k-bad-time", "u1", "a", "yesterday", "view"),
        )
        db.execute(
            "INSERT INTO events(event_key, user_id, item_id, timestamp, event) "
            "VALUES (?, ?, ?, ?, ?)",
            ("k-poison-item", "u2", "huge", 5.0, "view"),
        )


def test_rows_that_cannot_be_served_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    with Store(tmp_path / "s.db") as store:
        store.ingest(
            (
                pd.DataFrame({"item_id": ["a", "b"], "title": ["Soap", "Balm"], "stock": [1, 2]}),
                pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [1, 2]}),
            )
        )
        _poison(store)
        caplog.set_level(logging.WARNING, logger="promptrec")
        data = store.dataset()
        assert list(data.item_ids) == ["a", "b"]
        assert data.items["stock"].tolist() == [1, 2]
        assert data.events["item_id"].tolist() == ["a", "b"]  # the poison item's event too
        assert store.skipped == {"items": 2, "events": 1}
        assert "skipped 2 item rows and 1 event rows" in caplog.text and "'huge'" in caplog.text
        # a pending change previews the catalogue as it will be: the poison row replaced
        fixed = store.dataset(
            pending={"huge": {"title": "Code", "stock": "10000000000000000000000"}}
        )
        assert list(fixed.item_ids) == ["a", "b", "huge"] and store.skipped["items"] == 1
        gone = store.dataset(pending={"a": None})
        assert list(gone.item_ids) == ["b"] and gone.events["item_id"].tolist() == ["b"]
        assert store.counts()["items"] == 4  # previews write nothing
