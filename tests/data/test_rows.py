"""Append-only rows: each catalogue state reads its own prefix, whatever is appended later."""

from __future__ import annotations

import numpy as np

from promptrec.data.dataset import ItemIndex
from promptrec.data.rows import AppendOnlyRows, Column


def test_appending_never_changes_what_an_older_view_reads() -> None:
    first = np.arange(6, dtype=np.float32).reshape(3, 2)
    rows = AppendOnlyRows(first)
    old = rows.view(3)
    rows, grown = rows.extended(3, np.full((1, 2), 7.0))
    rows2, grown2 = rows.extended(4, np.full((2, 2), 8.0))
    assert rows2 is rows  # written in place, past every older view's end
    np.testing.assert_array_equal(old, first)
    np.testing.assert_array_equal(grown, np.vstack([first, [[7, 7]]]))
    np.testing.assert_array_equal(grown2[4:], np.full((2, 2), 8.0))
    # a state built on an older one (a change never served) branches: nothing is overwritten
    branch, other = rows.extended(3, np.full((1, 2), 9.0))
    assert branch is not rows
    np.testing.assert_array_equal(other[3], [9, 9])
    np.testing.assert_array_equal(grown2[3], [7, 7])


def test_a_column_of_python_values_grows_without_changing_older_states() -> None:
    genres = Column([["drama"], ["comedy", "crime"]])  # lists stay lists: no broadcasting
    grown = genres.extended([["horror", "sci-fi"]])
    branch = genres.extended([["war"]])  # built on the older state: never overwrites `grown`
    assert list(genres) == [["drama"], ["comedy", "crime"]]
    assert list(grown) == [["drama"], ["comedy", "crime"], ["horror", "sci-fi"]]
    assert list(branch)[-1] == ["war"] and grown[2] == ["horror", "sci-fi"]
    assert (
        len(grown) == 3
        and grown[-1] == ["horror", "sci-fi"]
        and list(grown[1:])
        == [
            ["comedy", "crime"],
            ["horror", "sci-fi"],
        ]
    )
    prices = Column(np.array([1.5, np.nan]))
    assert prices.extended([2.0]).values.dtype == np.float64
    assert Column([]).extended(["a"]).values.tolist() == ["a"]


def test_an_item_index_changes_at_the_cost_of_the_changed_ids() -> None:
    base = {f"p{i}": i for i in range(5000)}
    index = ItemIndex(base)
    edited = index.changed(["p1"], {"p2": 5000, "new": 5001})  # p1 removed, p2 moved
    assert edited._base is base  # shared, not copied
    assert index["p1"] == 1 and index["p2"] == 2 and "new" not in index  # unchanged
    assert "p1" not in edited and edited.get("p1") is None and edited.get("p1", -7) == -7
    assert edited["p2"] == 5000 and edited["new"] == 5001 and edited["p3"] == 3
    assert len(edited) == 5000 and len(set(edited)) == 5000
    assert (
        dict(edited)
        == edited.as_dict()
        == {
            **{k: v for k, v in base.items() if k != "p1"},
            "p2": 5000,
            "new": 5001,
        }
    )
    # a removed id that comes back, then many changes: folded into a new plain dict
    again = edited.changed([], {"p1": 5002})
    assert again["p1"] == 5002 and len(again) == 5001
    for i in range(1100):
        again = again.changed([f"p{i + 10}"], {})
    assert again._base is not base and len(again._changes) < 1024 and len(again) == 5001 - 1100
    assert "p15" not in again and again["p1"] == 5002 and len(set(again)) == len(again)
