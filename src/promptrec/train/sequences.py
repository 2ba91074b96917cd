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
        items = h.items
        n = len(items)
        end = n - 1  # last input position (exclusive of the last item, which is only a target)
        while end > 0:
            start = max(0, end - max_len)
            inputs.append(items[start:end])
            targets.append(items[start + 1 : end + 1])
            end = start
    return pad(inputs, max_len), pad(targets, max_len)


def pad(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.full((len(rows), length), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[-length:]
    return out


def last_items(histories: Sequence[UserHistory], max_len: int) -> np.ndarray:
    """The newest ``max_len`` items of each history, right-padded: ``[n, max_len]``."""
    return pad([h.items[-max_len:] for h in histories], max_len)
