"""``--db`` takes a SQLite file or a postgresql:// URL: ingest, then read back through
``load_data`` (what recommend, evaluate, train and embed do); a store that cannot be reached is
a one-line error that never shows the password."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from promptrec.cli.common import load_data
from promptrec.data.loaders import load_dataset
from promptrec.errors import ConfigError
from promptrec.store import redact_url


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("item_id,title\na,Soap\nb,Shampoo\n")
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu2,a,3\n")
    return catalog, events


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "shop.db")
    return request.getfixturevalue("postgres_store_url")


def test_ingest_then_load_data_from_the_store(db: str, files, cli) -> None:
    catalog, events = files
    args = ["ingest", "--catalog", str(catalog), "--events", str(events), "--db", db]
    code, out, err = cli(args)
    assert code == 0, err
    assert "events_added=3" in out and redact_url(db) in out
    code, out, err = cli(args)  # idempotent
    assert code == 0 and "events_added=0" in out
    if db.startswith("postgresql://"):
        assert ":promptrec@" not in out  # the test server's password
    stored = load_data(None, None, None, db)
    expected = load_dataset(catalog=catalog, events=events)
    pd.testing.assert_frame_equal(stored.events, expected.events)
    assert stored.items["item_id"].tolist() == ["a", "b"]


def test_unreachable_postgres_url_exits_2_with_one_line(files, cli) -> None:
    catalog, events = files
    url = "postgresql://promptrec:s3cret@127.0.0.1:1/shop"
    code, _, err = cli(["ingest", "--catalog", str(catalog), "--events", str(events), "--db", url])
    assert code == 2
    assert "postgresql://promptrec:***@127.0.0.1:1/shop" in err and "s3cret" not in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="cannot open the store") as exc:
        load_data(None, None, None, url)
    assert "s3cret" not in str(exc.value)


def test_missing_sqlite_store_is_not_created_by_a_read(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(ConfigError, match="no such store"):
        load_data(None, None, None, str(missing))
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [["recommend", "--user", "u1"], ["embed"]],
    ids=["recommend", "embed"],
)
def test_db_option_takes_a_url_as_it_is(args, cli) -> None:
    """The URL reaches the store whole (a Path would have made postgresql:/ of it)."""
    url = "postgresql://promptrec:s3cret@127.0.0.1:1/shop"
    code, _, err = cli([*args, "--db", url])
    assert code == 2
    assert "cannot open the store postgresql://promptrec:***@127.0.0.1:1/shop" in err
    assert "s3cret" not in err and len(err.strip().splitlines()) == 1
