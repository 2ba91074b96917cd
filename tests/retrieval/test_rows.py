"""Append-only rows: each catalogue state reads its own prefix, whatever is appended later."""

from __future__ import annotations

import numpy as np

from promptrec.retrieval.rows import AppendOnlyRows


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
