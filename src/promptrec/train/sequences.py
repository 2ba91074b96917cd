"""Training examples: each user's history cut into windows of at most ``max_len`` steps.

Every interaction after a user's first is a target (SASRec-style), predicted from the
interactions before it. Long histories are cut into consecutive windows, aligned so that the
newest window ends with the newest interaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptrec.data.dataset import UserHistory


def training_windows(
    histories: Sequence[UserHistory], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)``, both ``[n_windows, max_len]`` int64, right-padded with -1."""
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for h in histories:
        for start, end in _windows(len(h.items), max_len):
            inputs.append(h.items[start:end])
            targets.append(h.items[start + 1 : end + 1])
    return pad(inputs, max_len), pad(targets, max_len)


def target_values(
    per_event: Sequence[np.ndarray], histories: Sequence[UserHistory], max_len: int
) -> np.ndarray:
    """A value per event of each history (``per_event[i]`` aligned with ``histories[i]``'s
    items), laid out as :func:`training_windows` lays out the targets: ``[n_windows,
    max_len]`` int64, -1 in the padding."""
    rows: list[np.ndarray] = []
    for h, values in zip(histories, per_event, strict=True):
        for start, end in _windows(len(h.items), max_len):
            rows.append(values[start + 1 : end + 1])
    return pad(rows, max_len)


def _windows(n: int, max_len: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` input spans of a history of ``n`` items, newest first: consecutive
    windows of at most ``max_len``, the newest ending just before the last item (which is only
    a target)."""
    spans = []
    end = n - 1
    while end > 0:
        start = max(0, end - max_len)
        spans.append((start, end))
        end = start
    return spans


def pad(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.full((len(rows), length), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[-length:]
    return out


def last_items(histories: Sequence[UserHistory], max_len: int) -> np.ndarray:
    """The newest ``max_len`` items of each history, right-padded: ``[n, max_len]``."""
    return pad([h.items[-max_len:] for h in histories], max_len)
