"""Readers: formats, normalisation and error messages that point at the file, line and column."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptrec.data.readers import check_events_items, read_catalog, read_events
from promptrec.errors import ConfigError, DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def jsonl(path: Path, records: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


ITEMS = [
    {"item_id": 1, "title": "Lip balm", "categories": ["Beauty", "Lips"], "price": 3.5},
    {"item_id": 2, "title": "Nail polish", "categories": ["Beauty", "Nails"], "price": None},
    {"item_id": 3, "title": "Shampoo", "categories": ["Beauty", "Hair"], "price": 7.0},
]


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".parquet", ".jsonl.gz"])
def test_catalog_formats_keep_fields_and_lists(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"catalog{suffix}"
    if suffix == ".json":
        write(path, json.dumps(ITEMS))
    elif suffix == ".parquet":
        pd.DataFrame(ITEMS).to_parquet(path)
    elif suffix.endswith(".gz"):
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in ITEMS).encode()))
    else:
        jsonl(path, ITEMS)
    items = read_catalog(path)
    assert items["item_id"].tolist() == ["1", "2", "3"]
    assert items["title"].tolist() == ["Lip balm", "Nail polish", "Shampoo"]
    assert items["categories"].tolist() == [
        ["Beauty", "Lips"],
        ["Beauty", "Nails"],
        ["Beauty", "Hair"],
    ]
    assert all(isinstance(c, list) for c in items["categories"])
    assert items["price"].iloc[0] == 3.5 and np.isnan(items["price"].iloc[1])


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_catalog_delimited_with_id_alias(tmp_path: Path, sep: str, suffix: str) -> None:
    path = write(
        tmp_path / f"items{suffix}",
        f"id{sep}title{sep}brand\n007{sep}NA{sep}\n8{sep}Soap{sep}Acme\n",
    )
    items = read_catalog(path)
    assert list(items.columns) == ["item_id", "title", "brand"]
    # ids stay strings as written; "NA" is a real title, only an empty field is missing
    assert items["item_id"].tolist() == ["007", "8"]
    assert items["title"].tolist() == ["NA", "Soap"]
    assert pd.isna(items["brand"].iloc[0])


def test_json_ids_with_gaps_do_not_become_floats(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "items.jsonl", [{"item_id": 1, "title": "a"}, {"item_id": 2, "title": "b"}]
    )
    assert read_catalog(path)["item_id"].tolist() == ["1", "2"]
    ev = jsonl(
        tmp_path / "events.jsonl",
        [
            {"user_id": 10, "item_id": 1, "ts": 5},
            {"user_id": 11, "item_id": 2, "ts": 6, "query": "soap"},
        ],
    )
    events = read_events(ev)
    assert events["user_id"].tolist() == ["10", "11"]
    assert events["query"].tolist() == [None, "soap"]


def test_events_aliases_and_normalised_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "interactions.csv",
        "user_id,item_id,position,rating,event,extra\nu1,a,0,4,VIEW,x\nu1,b,1,,,y\n",
    )
    events = read_events(path)
    assert list(events.columns) == ["user_id", "item_id", "timestamp", "event", "value", "query"]
    assert events["timestamp"].tolist() == [0.0, 1.0]
    assert events["event"].tolist() == ["view", "interaction"]
    assert events["value"].iloc[0] == 4.0 and np.isnan(events["value"].iloc[1])
    assert events.index.tolist() == [2, 3]  # line numbers travel with the rows
    assert events.attrs["source"] == str(path)


def test_timestamps_iso_and_milliseconds_become_seconds(tmp_path: Path) -> None:
    iso = write(
        tmp_path / "iso.csv",
        "user_id,item_id,time\nu,a,1970-01-02\nu,b,1970-01-01T00:01:00Z\nu,c,1970-01-01T02:00:00+01:00\n",
    )
    assert read_events(iso)["timestamp"].tolist() == [86400.0, 60.0, 3600.0]
    ms = write(tmp_path / "ms.csv", "user_id,item_id,ts\nu,a,881250949000\nu,b,881250950500\n")
    assert read_events(ms)["timestamp"].tolist() == [881250949.0, 881250950.5]
    secs = write(tmp_path / "s.csv", "user_id,item_id,timestamp\nu,a,881250949\n")
    assert read_events(secs)["timestamp"].tolist() == [881250949.0]


def test_parquet_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": ["u", "u"],
            "item_id": ["a", "b"],
            "timestamp": pd.to_datetime(["1970-01-01 00:00:10", "2000-01-01 00:00:00"]),
        }
    ).to_parquet(path)
    assert read_events(path)["timestamp"].tolist() == [10.0, 946684800.0]


# --------------------------------------------------------------------------- errors


def test_missing_timestamp_column_names_file_line_column_and_found(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "user_id,item_id,rating\nu1,a,3\n")
    with pytest.raises(DataError) as err:
        read_events(path)
    text = str(err.value)
    assert "events.csv" in text and "line 1" in text and "'timestamp'" in text
    assert "found columns: user_id, item_id, rating" in text
    assert err.value.column == "timestamp" and err.value.row == 1


def test_missing_item_id_in_catalog(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", "sku,title\n1,a\n")
    with pytest.raises(DataError) as err:
        read_catalog(path)
    assert "catalog.csv" in str(err.value) and "line 1" in str(err.value)
    assert "'item_id'" in str(err.value) and "found columns: sku, title" in str(err.value)


def test_unparseable_timestamp_reports_exact_line_after_blank_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.csv",
        "user_id,item_id,timestamp\nu1,a,1\n\nu1,b,yesterday\nu2,c,also bad\n",
    )
    with pytest.raises(DataError) as err:
        read_events(path)
    text = str(err.value)
    assert "events.csv" in text and "line 4" in text and "column 'timestamp'" in text
    assert "'yesterday'" in text and "2 bad lines" in text
    assert err.value.row == 4


def test_missing_timestamp_value(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "events.jsonl",
        [{"user_id": "u", "item_id": "a", "timestamp": 1}, {"user_id": "u", "item_id": "b"}],
    )
    with pytest.raises(DataError) as err:
        read_events(path)
    assert "events.jsonl" in str(err.value) and "line 2" in str(err.value)
    assert "missing timestamp" in str(err.value) and "'timestamp'" in str(err.value)


def test_line_numbers_count_multiline_quoted_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.csv",
        'user_id,item_id,timestamp,query\nu1,a,1,"two\nlines"\nu1,b,nope,x\n',
    )
    with pytest.raises(DataError) as err:
        read_events(path)
    assert err.value.row == 4 and "line 4" in str(err.value)


def test_empty_user_id(tmp_path: Path) -> None:
    path = write(tmp_path / "events.tsv", "user_id\titem_id\ttimestamp\nu1\ta\t1\n \tb\t2\n")
    with pytest.raises(DataError) as err:
        read_events(path)
    assert "events.tsv" in str(err.value) and "line 3" in str(err.value)
    assert "column 'user_id'" in str(err.value)


def test_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "user_id,item_id,timestamp,rating\nu,a,1,five\n")
    with pytest.raises(DataError) as err:
        read_events(path)
    assert "line 2" in str(err.value) and "column 'rating'" in str(err.value)


def test_duplicate_item_id_names_both_lines(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "items.jsonl",
        [
            {"item_id": "a", "title": "x"},
            {"item_id": "b", "title": "y"},
            {"item_id": "c", "title": "z"},
            {"item_id": "b", "title": "w"},
        ],
    )
    with pytest.raises(DataError) as err:
        read_catalog(path)
    text = str(err.value)
    assert "items.jsonl" in text and "line 4" in text and "column 'item_id'" in text
    assert "'b'" in text and "first on line 2" in text


def test_bad_json_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.jsonl",
        '{"item_id": "a", "title": "x"}\n\n{"item_id": "b", "title": }\n{"item_id": "c"}\n',
    )
    with pytest.raises(DataError) as err:
        read_catalog(path)
    text = str(err.value)
    assert "items.jsonl" in text and "line 3" in text and "invalid JSON" in text
    assert err.value.row == 3


def test_json_array_error_line(tmp_path: Path) -> None:
    path = write(tmp_path / "items.json", '[\n{"item_id": "a"},\n{"item_id" "b"}\n]\n')
    with pytest.raises(DataError) as err:
        read_catalog(path)
    assert "items.json" in str(err.value) and "line 3" in str(err.value)


def test_wrong_encoding_names_line_column_and_suggests_latin1(tmp_path: Path) -> None:
    path = write(
        tmp_path / "catalog.csv",
        "item_id,title,brand\n1,Soap,Acme\n2,Crème brûlée,Café\n",
        encoding="latin-1",
    )
    with pytest.raises(DataError) as err:
        read_catalog(path)
    text = str(err.value)
    assert "catalog.csv" in text and "line 3" in text and "column 'title'" in text
    assert "--encoding latin-1" in text
    items = read_catalog(path, encoding="latin-1")
    assert items["title"].tolist() == ["Soap", "Crème brûlée"]


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty") as err:
        read_events(write(tmp_path / "events.csv", "\n  \n"))
    assert "events.csv" in str(err.value)
    with pytest.raises(DataError, match="no data rows"):
        read_events(write(tmp_path / "header.csv", "user_id,item_id,timestamp\n"))
    with pytest.raises(DataError, match="empty"):
        read_catalog(write(tmp_path / "items.jsonl", ""))


def test_unsupported_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unsupported file type"):
        read_catalog(write(tmp_path / "items.xlsx", "x"))
    with pytest.raises(DataError, match="no such file"):
        read_catalog(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- empty text


EMPTY_TEXT_CSV = "item_id,title,brand,price\n1,Soap,Acme,2\n2,,,3\n3, ,,4\n"


def test_empty_text_warns_with_count_and_first_line(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "catalog.csv", EMPTY_TEXT_CSV)
    with caplog.at_level(logging.WARNING, logger="promptrec"):
        items = read_catalog(path)
    assert len(items) == 3  # kept
    (record,) = [r for r in caplog.records if r.name == "promptrec"]
    message = record.getMessage()
    assert "catalog.csv" in message and "2 items" in message and "line 3" in message


def test_empty_text_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", EMPTY_TEXT_CSV)
    with pytest.raises(DataError) as err:
        read_catalog(path, empty_text="error")
    text = str(err.value)
    assert "catalog.csv" in text and "line 3" in text and "'2'" in text and "2 such items" in text


def test_empty_list_counts_as_no_text(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "items.jsonl", [{"item_id": "a", "tags": ["x"]}, {"item_id": "b", "tags": []}]
    )
    with pytest.raises(DataError, match="line 2"):
        read_catalog(path, empty_text="error")
    with pytest.raises(ConfigError):
        read_catalog(path, empty_text="loud")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- unknown items


def _events_with_unknown(tmp_path: Path) -> pd.DataFrame:
    path = write(
        tmp_path / "events.csv", "user_id,item_id,timestamp\nu,a,1\nu,zz,2\nu,b,3\nv,zz,4\n"
    )
    return read_events(path)


def test_unknown_items_dropped_with_warning(tmp_path: Path, caplog) -> None:
    events = _events_with_unknown(tmp_path)
    with caplog.at_level(logging.WARNING, logger="promptrec"):
        kept = check_events_items(events, ["a", "b"])
    assert kept["item_id"].tolist() == ["a", "b"]
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "promptrec")
    assert "events.csv" in message and "dropped 2 of 4" in message and "line 3" in message
    assert "'zz'" in message


def test_unknown_items_error(tmp_path: Path) -> None:
    events = _events_with_unknown(tmp_path)
    with pytest.raises(DataError) as err:
        check_events_items(events, ["a", "b"], unknown_items="error")
    text = str(err.value)
    assert "events.csv" in text and "line 3" in text and "column 'item_id'" in text
    assert "2 events" in text and "'zz'" in text


def test_known_items_pass_through_unchanged(tmp_path: Path) -> None:
    events = _events_with_unknown(tmp_path)
    assert check_events_items(events, ["a", "b", "zz"]) is events


# --------------------------------------------------------------------------- speed


def test_amazon_beauty_events_read_fast(shared_data: Path) -> None:
    start = time.perf_counter()
    events = read_events(shared_data / "amazon-beauty" / "interactions.csv")
    elapsed = time.perf_counter() - start
    assert len(events) == 198502
    assert elapsed < 3.0, f"reading 198k events took {elapsed:.2f} s"
