"""The leave-last-out split, checked against ../shared/EVALUATION.md on real ml-100k data and on
a hand-made log with a timestamp tie."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.data.dataset import Dataset
from promptrec.data.split import leave_last_out


def last_by_time(events: pd.DataFrame) -> pd.Series:
    """Row label of each user's last event: latest timestamp, ties to the later file row.

    Written without sorting, independently of the code under test.
    """
    latest = events.groupby("user_id")["timestamp"].transform("max")
    at_latest = events[events["timestamp"] == latest]
    return at_latest.reset_index().groupby("user_id")["index"].max()


def pairs(events: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(events["user_id"], events["item_id"], strict=True))


@pytest.fixture(scope="module")
def ml100k_split(ml100k):
    return ml100k, leave_last_out(ml100k)


def test_targets_are_last_and_second_to_last_by_time(ml100k_split) -> None:
    data, splits = ml100k_split
    ev = data.events
    latest = ev.groupby("user_id")["timestamp"].transform("max")
    tied = (ev["timestamp"] == latest).groupby(ev["user_id"]).sum()
    assert (tied > 1).sum() > 100  # many users' last events tie, so the tie rule is tested
    test_rows = last_by_time(ev)
    val_rows = last_by_time(ev.drop(index=test_rows.to_numpy()))
    ids = data.item_ids
    for name, rows in (("test", test_rows), ("validation", val_rows)):
        split = splits[name]
        assert len(split.user_ids) == 943  # every ml-100k user has >= 20 ratings
        got = dict(zip(split.user_ids, ids[split.targets], strict=True))
        want = dict(zip(rows.index, ev.loc[rows.to_numpy(), "item_id"], strict=True))
        assert got == want, name


def test_fit_logs_hold_no_leaked_targets(ml100k_split) -> None:
    data, splits = ml100k_split
    ids = data.item_ids
    # ml-100k has no repeated (user, item) pair, so pairs identify events
    assert len(pairs(data.events)) == len(data.events)
    val, test = splits["validation"], splits["test"]
    val_targets = set(zip(val.user_ids, ids[val.targets], strict=True))
    test_targets = set(zip(test.user_ids, ids[test.targets], strict=True))

    val_fit = pairs(val.fit.events)
    assert not val_fit & val_targets and not val_fit & test_targets
    assert len(val.fit.events) == 100000 - 2 * 943

    test_fit = pairs(test.fit.events)
    assert not test_fit & test_targets
    assert val_targets <= test_fit  # the validation item is history when testing
    assert len(test.fit.events) == 100000 - 943
    # the fit log is the file's log, in file order, less the targets; the catalogue is whole
    assert test.fit.n_items == data.n_items
    expected = data.events.drop(index=last_by_time(data.events).to_numpy())
    pd.testing.assert_frame_equal(
        test.fit.events.reset_index(drop=True), expected.reset_index(drop=True)
    )


def test_histories_end_strictly_before_targets(ml100k_split) -> None:
    data, splits = ml100k_split
    counts = data.events.groupby("user_id").size()
    stamps = {}
    for name, drop in (("test", 1), ("validation", 2)):
        split = splits[name]
        for history, target in zip(split.histories, split.targets, strict=True):
            assert len(history) == counts[history.user_id] - drop
            assert target not in set(history.items.tolist())  # no repeats in ml-100k
            stamps[name, history.user_id] = history
    test, val = splits["test"], splits["validation"]
    assert len(val.histories) == len(test.histories)
    for history, target in zip(test.histories, test.targets, strict=True):
        user = history.user_id
        user_events = data.events[data.events["user_id"] == user]
        target_time = user_events[user_events["item_id"] == data.item_ids[target]][
            "timestamp"
        ].iloc[0]
        assert history.timestamps.max() <= target_time
        assert np.all(np.diff(history.timestamps) >= 0)
        # the test history ends with the validation target
        val_history = stamps["validation", user]
        assert np.array_equal(history.items[:-1], val_history.items)


def test_timestamp_tie_is_broken_by_file_order_not_item_id() -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "y", "z"], "title": ["A", "B", "Y", "Z"]})
    events = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "short", "short"],
            "item_id": ["b", "z", "a", "y", "a", "b"],
            "timestamp": [1.0, 5.0, 5.0, 0.0, 1.0, 2.0],
        }
    )
    data = Dataset(items, events)
    splits = leave_last_out(data)
    ids = data.item_ids
    test, val = splits["test"], splits["validation"]
    # z and a tie at t=5; a comes later in the file, so a is the test target even though
    # z sorts after a by id
    assert test.user_ids == ["u"] and ids[test.targets].tolist() == ["a"]
    assert val.user_ids == ["u"] and ids[val.targets].tolist() == ["z"]
    assert ids[test.histories[0].items].tolist() == ["y", "b", "z"]
    assert ids[val.histories[0].items].tolist() == ["y", "b"]
    # a user with fewer than 3 interactions is training data only, in both fit logs
    for split in (test, val):
        assert "short" not in split.user_ids
        assert (split.fit.events["user_id"] == "short").sum() == 2
    assert pairs(val.fit.events) == {("u", "b"), ("u", "y"), ("short", "a"), ("short", "b")}
    assert pairs(test.fit.events) == pairs(val.fit.events) | {("u", "z")}
    # fit logs keep the file's row order
    assert test.fit.events["item_id"].tolist() == ["b", "z", "y", "a", "b"]
