"""Append-only rows shared by successive catalogue states.

A catalogue change in the service makes a new state beside the one being served (see
:meth:`promptrec.data.dataset.Dataset.edited`). Each state reads its own prefix of a shared
buffer of item vectors: appending rows for the newest state writes past the end of every older
state's prefix, so no state sees its rows change, and adding one item costs its own rows, not
a copy of the catalogue (capacity grows by doubling, like a Python list).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np


class AppendOnlyRows:
    """A growable 2-d array whose prefixes are handed out as read-only-by-convention views.

    Example::

        rows = AppendOnlyRows(vectors)              # n rows
        old = rows.view(len(vectors))
        rows, new = rows.extended(len(old), more)   # old is unchanged; new has n + k rows
    """

    def __init__(self, rows: np.ndarray, *, spare: int = 0, length: int | None = None) -> None:
        """Args:
        rows: the first rows. Kept as given (no copy) when ``spare`` is 0.
        spare: room for this many more rows, made now (a copy of ``rows`` into a larger
            buffer), so that the first appends do not copy the whole buffer while requests
            wait.
        length: only the first ``length`` of ``rows`` are written; the rest is room already
            made (a buffer filled in place, with no copy).
        """
        rows = _as_rows(rows, None)
        n = len(rows) if length is None else length
        if spare > 0:
            grown = np.empty((n + spare, *rows.shape[1:]), dtype=rows.dtype)
            grown[:n] = rows[:n]
            rows = grown
        self._buffer = rows
        self._length = n
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # what was written, not the spare room; and no lock (a copy elsewhere, e.g. on a Ray
        # worker, makes its own)
        return {"rows": self._buffer[: self._length]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["rows"])  # type: ignore[misc]

    @staticmethod
    def spare_for(n: int) -> int:
        """Room kept for later rows by the catalogue's buffers: a sixteenth, at least 256."""
        return max(256, n // 16)

    def view(self, n: int) -> np.ndarray:
        """The first ``n`` rows (a view: no copy)."""
        if n > self._length:
            raise ValueError(f"only {self._length} rows, asked for {n}")
        return self._buffer[:n]

    def extended(
        self, n: int, rows: Iterable[Any] | np.ndarray
    ) -> tuple[AppendOnlyRows, np.ndarray]:
        """The buffer and view of the first ``n`` rows followed by ``rows``.

        When ``n`` is the end of what was written (the newest state grows), the rows are
        written in place: older views keep their own prefix. Otherwise (a state built on an
        older one, e.g. after a change that was never served) a new buffer is made, so rows
        another state may read are never overwritten.
        """
        rows = _as_rows(rows, self._buffer.dtype)
        if rows.ndim != self._buffer.ndim or rows.shape[1:] != self._buffer.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape[1:]} for a buffer of {self._buffer.shape}")
        with self._lock:
            if n == self._length:
                end = n + len(rows)
                if end > len(self._buffer) or not self._buffer.flags.writeable:
                    grown = np.empty(
                        (max(end, 2 * len(self._buffer), 16), *self._buffer.shape[1:]),
                        dtype=self._buffer.dtype,
                    )
                    grown[:n] = self._buffer[:n]
                    self._buffer = grown  # older views keep the old array
                self._buffer[n:end] = rows
                self._length = end
                return self, self._buffer[:end]
        branch = AppendOnlyRows(np.concatenate([self._buffer[:n], rows]))
        return branch, branch.view(n + len(rows))


class Column(Sequence[Any]):
    """One catalogue state's per-item values (numbers, strings, lists...): a prefix of an
    :class:`AppendOnlyRows` buffer shared with the states before and after it.

    It reads like a sequence (``column[i]``, ``len``, iteration, slices); :meth:`extended` is
    the next state's column at the cost of the new values, where ``list + list`` would copy
    (and touch) every item's value at every catalogue change.

    Example::

        labels = Column(["a", "b"])
        more = labels.extended(["c"])     # labels still reads ["a", "b"]
    """

    __slots__ = ("_rows", "values")

    def __init__(self, values: Iterable[Any] | np.ndarray, *, spare: int | None = None) -> None:
        values = _as_rows(values, None)
        spare = AppendOnlyRows.spare_for(len(values)) if spare is None else spare
        self._rows = AppendOnlyRows(values, spare=spare)
        self.values: np.ndarray = self._rows.view(len(values))

    def extended(self, more: Iterable[Any] | np.ndarray) -> Column:
        """This column followed by ``more`` (this one is unchanged)."""
        clone = Column.__new__(Column)
        clone._rows, clone.values = self._rows.extended(len(self.values), more)
        return clone

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> Any:
        return self.values[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def __repr__(self) -> str:
        return f"Column({self.values!r})"


def _as_rows(values: Iterable[Any] | np.ndarray, dtype: Any) -> np.ndarray:
    """``values`` as an array; Python objects (lists of lists too: no broadcasting) as a 1-d
    object array."""
    if isinstance(values, np.ndarray) and (dtype is None or values.dtype == dtype):
        return values
    if isinstance(values, np.ndarray) and dtype != np.dtype(object):
        return values.astype(dtype)
    if dtype is not None and np.dtype(dtype) != np.dtype(object):
        return np.asarray(values, dtype=dtype)
    values = list(values) if not isinstance(values, Sequence) else values
    if dtype is None and len(values):  # numbers stay numbers (an empty column: objects)
        probe = np.asarray(values[:1])
        if probe.ndim == 1 and probe.dtype.kind in "biuf":
            return np.asarray(values)
    return np.fromiter(values, dtype=object, count=len(values))
