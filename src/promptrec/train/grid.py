"""Scoring a grid of settings on validation targets, one batch of users at a time.

The trainer's choices after early stopping (:mod:`promptrec.train.cooccurrence`,
:mod:`promptrec.train.new_items`) each score the same validation users under every setting
of a grid; this runs the batches and keeps, per setting, each user's target rank (what NDCG@10
reads: exact up to 10) and top 10.

A setting changes few of the scores: the co-occurrence weight adds a sparse term (the items
that co-occur with the history), a new-item setting rescores the new items' columns. So each
batch gives the scores every setting shares once (``fixed``, dense), and each setting only
what it changes: its scores of the ``varied`` columns and a non-negative sparse ``extra``. The
ten best fixed scores are found once a batch; under a setting, an item that is none of those,
not varied and not named by ``extra`` scores its fixed score, at most the tenth best: it can
neither enter a top 10 nor pass a target that is in one. Each setting is then ranked over
those candidates alone, at the cost of the candidates, not of the catalogue (at a million items,
a whole score matrix a setting was gigabytes and minutes).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from promptrec.data.dataset import UserHistory
from promptrec.data.split import Split
from promptrec.retrieval.topk import target_ranks, top_k

#: scores held at once for a batch of users (users x items): 1,000 users up to 50,000 items
BATCH_CELLS = 50_000_000
MAX_BATCH = 1000

#: one setting of a batch: its name, its scores of the varied columns (None: none varied;
#: read before the next setting is drawn, so a generator may reuse one array) and its
#: non-negative sparse term (None: none)
Setting = tuple[Hashable, np.ndarray | None, sp.csr_matrix | None]


def batch_size(n_items: int) -> int:
    """Users scored at once for a catalogue of ``n_items``."""
    return int(max(1, min(MAX_BATCH, BATCH_CELLS // max(n_items, 1))))


def grid_ranks(
    split: Split,
    settings_scores: Callable[[Sequence[UserHistory]], tuple[np.ndarray, Iterable[Setting]]],
    *,
    varied: np.ndarray | None = None,
    left_out: np.ndarray | None = None,
) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
    """Per setting, ``(ranks, top10)`` over ``split``'s users: the 1-based rank of each target
    (exact up to 10; a target ranked lower gets a rank above 10, and an excluded one
    ``n_items + 1``) and the ten best items, history items (and ``left_out``) excluded.

    ``settings_scores(histories)`` gives, for one batch of users, the ``[len(histories),
    n_items]`` scores every setting shares (its ``varied`` columns are not read), and each
    setting's ``(name, varied_scores [len(histories), len(varied)], extra)``, ``extra`` a
    non-negative sparse term added to the scores.
    """
    n_items = split.fit.n_items
    varied = np.zeros(0, dtype=np.int64) if varied is None else np.asarray(varied, np.int64)
    ranks: dict[Hashable, list[np.ndarray]] = {}
    tops: dict[Hashable, list[np.ndarray]] = {}
    size = batch_size(n_items)
    for start in range(0, len(split.histories), size):
        hist = split.histories[start : start + size]
        targets = np.asarray(split.targets[start : start + size], dtype=np.int64)
        seen = [h.items if left_out is None else np.concatenate([h.items, left_out]) for h in hist]
        fixed, settings = settings_scores(hist)
        batch = _Batch(np.asarray(fixed, dtype=np.float32), seen, targets, varied)
        for setting, varied_scores, extra in settings:
            r, t = batch.ranks(varied_scores, extra)
            ranks.setdefault(setting, []).append(r)
            tops.setdefault(setting, []).append(t)
    return {s: (np.concatenate(ranks[s]), np.concatenate(tops[s])) for s in ranks}


class _Batch:
    """One batch of users: the shared scores with the excluded items and varied columns out,
    their ten best, and what each setting adds."""

    def __init__(
        self, fixed: np.ndarray, seen: list[np.ndarray], targets: np.ndarray, varied: np.ndarray
    ) -> None:
        self.n_users, self.n_items = fixed.shape
        self.targets, self.varied = targets, varied
        rows = np.repeat(np.arange(self.n_users), [len(s) for s in seen])
        cols = np.concatenate(seen).astype(np.int64) if seen else np.zeros(0, np.int64)
        self.position = np.full(self.n_items, -1, dtype=np.int64)  # item -> varied column
        self.position[varied] = np.arange(len(varied))
        # added to a setting's varied scores: -inf at the excluded cells, 0 elsewhere (one
        # pass, no select), into one buffer for every setting (a fresh array of this size is
        # tens of megabytes whose pages the kernel faults in again each time: half the grid's
        # time at a million items)
        self.varied_mask = np.zeros((self.n_users, len(varied)), dtype=np.float32)
        at = self.position[cols]
        self.varied_mask[rows[at >= 0], at[at >= 0]] = -np.inf
        self.scores_v = np.empty_like(self.varied_mask)
        self.fixed = fixed.copy()
        self.fixed[rows, cols] = -np.inf
        self.fixed[:, varied] = -np.inf  # scored by each setting
        self.top_fixed, self.top_scores = top_k(self.fixed.copy(), 10)
        # a target in its user's history (or left out) is never found
        self.target_out = ~np.isfinite(self.fixed[np.arange(self.n_users), targets])
        at_target = self.position[targets]
        in_varied = at_target >= 0
        self.target_out[in_varied] = np.isneginf(self.varied_mask[in_varied, at_target[in_varied]])

    def ranks(
        self, varied_scores: np.ndarray | None, extra: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The targets' ranks and the top 10s under one setting."""
        users = np.arange(self.n_users)
        # the ten best scores before ``extra``: the fixed ten, merged with the varied columns
        best, tenth = self.top_fixed, self.top_scores[:, -1]
        scores_v = None
        if len(self.varied):
            assert varied_scores is not None, "a setting scores every varied column"
            scores_v = np.add(varied_scores, self.varied_mask, out=self.scores_v)
            # the varied columns' ten best (torch's top-k: six times numpy's partition on
            # 50 x 285,000 scores), then merged with the fixed ten (20 columns)
            top_v = (
                torch.topk(torch.from_numpy(scores_v), 10, dim=1, sorted=False).indices.numpy()
                if scores_v.shape[1] > 10
                else np.broadcast_to(np.arange(scores_v.shape[1]), scores_v.shape)
            )
            merged = np.concatenate(
                [self.top_scores, np.take_along_axis(scores_v, top_v, axis=1)], axis=1
            )
            items = np.concatenate([self.top_fixed, self.varied[top_v]], axis=1)
            part = np.argpartition(-merged, 9, axis=1)[:, :10]
            part_scores = np.take_along_axis(merged, part, axis=1)
            tenth = part_scores.min(axis=1)
            best = np.take_along_axis(items, part, axis=1)
            best = np.where(np.isfinite(part_scores), best, -1)
        found = ~self.target_out
        cand_rows = [np.repeat(users, 10), users[found]]
        cand_cols = [best.ravel(), self.targets[found]]
        ekeys = edata = None
        if extra is not None and extra.nnz:
            coo = extra.tocoo()
            erows, ecols = coo.row.astype(np.int64), coo.col.astype(np.int64)
            ekeys, edata = erows * self.n_items + ecols, coo.data.astype(np.float32)
            order = np.argsort(ekeys, kind="stable")
            ekeys, edata, erows, ecols = ekeys[order], edata[order], erows[order], ecols[order]
            # a named item below the tenth best score can neither enter a top 10 nor pass a
            # target in one (an excluded item scores -inf)
            total = self._dense_at(erows, ecols, scores_v) + edata
            lifted = np.isfinite(total) & (total >= tenth[erows])
            cand_rows.append(erows[lifted])
            cand_cols.append(ecols[lifted])
        rows, cols = np.concatenate(cand_rows), np.concatenate(cand_cols)
        valid = cols >= 0
        keys = np.unique(rows[valid] * self.n_items + cols[valid])
        rows, cols = np.divmod(keys, self.n_items)
        totals = self._dense_at(rows, cols, scores_v)
        if ekeys is not None:
            where = np.minimum(np.searchsorted(ekeys, keys), len(ekeys) - 1)
            named = ekeys[where] == keys
            totals[named] += edata[where[named]]  # type: ignore[index]
        # the target's total, and how many candidates score at least as much (itself included)
        target_at = np.searchsorted(keys, users * self.n_items + self.targets)
        target_total = np.full(self.n_users, -np.inf, dtype=np.float32)
        target_total[found] = totals[target_at[found]]
        ranks = np.bincount(
            rows, weights=(totals >= target_total[rows]).astype(np.float64), minlength=self.n_users
        ).astype(np.int64)
        ranks[~found | ~np.isfinite(target_total)] = self.n_items + 1
        # on the tenth best exactly, items outside the candidates may tie: count them all
        for user in np.flatnonzero(found & (target_total == tenth)):
            ranks[user] = self._exact_rank(user, varied_scores, extra)
        return ranks, self._top10(rows, cols, totals)

    def _dense_at(
        self, rows: np.ndarray, cols: np.ndarray, scores_v: np.ndarray | None
    ) -> np.ndarray:
        """The scores before ``extra`` at ``(rows, cols)``: the fixed ones, a varied column's
        from ``scores_v`` (excluded cells: -inf)."""
        out = self.fixed[rows, cols]
        if scores_v is not None:
            at = self.position[cols]
            hit = at >= 0
            out[hit] = scores_v[rows[hit], at[hit]]
        return out

    def _top10(self, rows: np.ndarray, cols: np.ndarray, totals: np.ndarray) -> np.ndarray:
        order = np.lexsort((cols, -totals, rows))  # by user, then score, then item
        rows, cols, totals = rows[order], cols[order], totals[order]
        first = np.searchsorted(rows, np.arange(self.n_users))
        place = np.arange(len(rows)) - first[rows]
        keep = (place < 10) & np.isfinite(totals)
        out = np.full((self.n_users, 10), -1, dtype=np.int64)
        out[rows[keep], place[keep]] = cols[keep]
        return out

    def _exact_rank(
        self, user: int, varied_scores: np.ndarray | None, extra: sp.csr_matrix | None
    ) -> int:
        """One user's target rank over every item (a tie on the tenth best score)."""
        row = self.fixed[user].copy()
        if len(self.varied):
            row[self.varied] = varied_scores[user] + self.varied_mask[user]  # type: ignore[index]
        if extra is not None:
            part = extra[user].tocoo()
            row[part.col] += part.data
        return int(target_ranks(row[None, :], self.targets[user : user + 1])[0])
