"""Per-user chronological leave-one-out, exactly as ``shared/EVALUATION.md`` defines it.

For each user with at least 3 interactions the last one is the *test* target, the one before
it the *validation* target, everything earlier is training history. Users with fewer than 3
interactions are training data only.

Each :class:`Split` carries the log a model may be fitted on for that split: every target of
that split and of any later split is removed, so nothing at or after a target reaches a prompt,
an item vector or a popularity count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from promptrec.data.dataset import Dataset, UserHistory, build_histories, chronological

MIN_INTERACTIONS = 3
SplitName = Literal["validation", "test"]


@dataclass
class Split:
    """One evaluation split.

    Attributes:
        name: ``"validation"`` or ``"test"``.
        fit: the dataset a model may be fitted on (catalogue + the allowed log).
        histories: for each evaluated user, everything strictly before the target.
        targets: the target item index per evaluated user, aligned with ``histories``.
    """

    name: SplitName
    fit: Dataset
    histories: list[UserHistory]
    targets: np.ndarray

    @property
    def user_ids(self) -> list[str]:
        return [h.user_id for h in self.histories]

    def sample(self, n: int | None, seed: int = 0) -> Split:
        """At most ``n`` evaluated users drawn at random (seeded); the fit data is unchanged."""
        if n is None or n >= len(self.histories):
            return self
        pick = np.sort(np.random.default_rng(seed).choice(len(self.histories), n, replace=False))
        return Split(self.name, self.fit, [self.histories[i] for i in pick], self.targets[pick])


def known_events(dataset: Dataset) -> pd.DataFrame:
    """``dataset``'s log as the splits see it: chronological per user, events of items in the
    catalogue alone."""
    ev = chronological(dataset.events)
    return ev[ev["item_id"].map(dataset.item_index).notna()]


def positions_from_end(ev: pd.DataFrame) -> np.ndarray:
    """Each event's place from its user's newest in a chronological log (0: the newest)."""
    return ev.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()


def leave_last_out(dataset: Dataset) -> dict[SplitName, Split]:
    """Split a dataset into its validation and test splits (see module docstring)."""
    index = dataset.item_index
    ev = known_events(dataset)
    from_end = positions_from_end(ev)
    sizes = ev.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    evaluated = sizes >= MIN_INTERACTIONS
    is_test = evaluated & (from_end == 0)
    is_val = evaluated & (from_end == 1)

    splits: dict[SplitName, Split] = {}
    for name, target_mask, allowed in (
        ("validation", is_val, ~(is_val | is_test)),
        ("test", is_test, ~is_test),
    ):
        fit_events = ev[allowed].sort_index()  # back to the log's own order
        fit = dataset.with_events(fit_events)
        before = build_histories(fit_events, index)
        targets = ev[target_mask]
        users = targets["user_id"].to_numpy()
        histories = [before[u] for u in users]
        splits[name] = Split(
            name, fit, histories, targets["item_id"].map(index).to_numpy(dtype=np.int64)
        )
    return splits
