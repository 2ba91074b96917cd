"""Choosing how a trained model scores items it has no id embedding for (new items).

A new item has no id embedding: :class:`~promptrec.train.trained.TrainedScorer` builds its
vector from its text, plus (``borrowed_ids``) the mean id embedding of its nearest trained items
by text, and scores it at ``new_item_scale`` (above 1, new items take more places in the
lists), plus (``new_item_text_weight``) the zero-shot match of its text with the user's
history text, which ranks new items among themselves better than the model's vector alone
(the model's item tower learned most of what it knows through the ids). The trainer chooses
the three here, with the early-stopped model (trained without the
validation targets), before the refit, by simulation: a seeded share of the items that have an
id embedding are scored as new items (their ids left out, their co-occurrence with other items
dropped, as for an item nobody has touched), and every setting is scored on the validation
targets, NDCG@10 over all of them. The histories keep those items as the model knows them: a
new item is in nobody's history.

The whole grid is kept with the model (``new_item_choice``): NDCG@10 on the targets that were
scored as new items and on the others, and the share of list places that new items take. That
is the trade-off between showing new items and accuracy on the rest; NDCG@10 over all targets
picks the default, and :attr:`~promptrec.train.config.TrainConfig.new_item_scale` sets another
point of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.data.dataset import UserHistory
from promptrec.data.split import Split
from promptrec.evaluation.metrics import ndcg_at
from promptrec.train.grid import Setting, grid_ranks
from promptrec.train.trained import TrainedScorer

#: numbers of text neighbours an item without an id borrows from (0: its text alone)
BORROWED_IDS = (0, 1, 3, 10)
#: scales of a new item's scores
NEW_ITEM_SCALES = (0.9, 1.0, 1.1, 1.2, 1.3)
#: weights of a new item's text match with the user's history
NEW_ITEM_TEXT_WEIGHTS = (0.0, 0.1, 0.2, 0.3)
#: the share of items with an id scored as new in the simulation, and at most this many
SIMULATED_SHARE = 0.1
MAX_SIMULATED = 10_000


def describe(borrowed_ids: int, text_weight: float = 0.0) -> str:
    """How items without an id embedding are scored, in words."""
    words = f"text plus the ids of {borrowed_ids} text neighbours" if borrowed_ids else "text alone"
    if text_weight:
        words += f", and their text's match with the history x{text_weight}"
    return words


def choose_new_items(
    scorer: TrainedScorer,
    split: Split,
    borrowed: tuple[int, ...] = BORROWED_IDS,
    scales: tuple[float, ...] = NEW_ITEM_SCALES,
    text_weights: tuple[float, ...] = NEW_ITEM_TEXT_WEIGHTS,
    share: float = SIMULATED_SHARE,
    seed: int = 0,
    untouched: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``(borrowed_ids, scale, text_weight)`` of best NDCG@10 on ``split``'s targets with
    a seeded ``share`` of the items scored as new (ties: fewer neighbours, the scale nearer 1,
    the smaller weight), and every setting's NDCG@10 overall, on the targets scored as new
    and on the others, with the share of the top-10 places new items take.

    ``scorer`` must be fitted on ``split.fit`` and must not have learned from its targets
    (its own new-item settings do not matter: every setting is scored here).
    ``untouched`` (per item of ``split.fit``): items nobody interacted with in the whole log,
    validation targets included. They can never be a validation target, so they are left out
    of the lists here: scored, they would only count against showing new items.
    """
    data = split.fit
    has_id = scorer.has_id(data.item_ids)
    donors = np.flatnonzero(has_id)
    n_simulated = min(round(share * len(donors)), MAX_SIMULATED)
    simulated = np.random.default_rng(seed).choice(donors, n_simulated, replace=False)
    new = ~has_id
    new[simulated] = True
    as_new = np.zeros(data.n_items, dtype=bool)
    as_new[simulated] = True
    mask = scorer.train_id_mask.copy()  # the simulated items lose their id embedding
    mask[scorer.train_rows(data.item_ids[simulated])] = False
    items = {}
    for k in borrowed:
        probe = TrainedScorer(
            scorer.model, scorer.config_, scorer.train_item_ids, mask, scorer.space
        )
        probe.scoring.borrowed_ids = k
        items[k] = probe.fit(data).item_vectors
    listed = np.ones(data.n_items, dtype=bool) if untouched is None else ~np.asarray(untouched)

    dropped = np.ones(data.n_items, dtype=np.float32)
    dropped[simulated] = 0.0  # a new item co-occurs with nothing
    # the columns a setting scores otherwise: the new items that can be listed (on a
    # Zipf-shaped log of a million items, a quarter of them nobody touched: never scored)
    varied = np.flatnonzero(new & listed)
    new_text = None
    if any(text_weights):  # new items' centred unit text vectors, as the scorer serves them
        new_text = scorer.centred_text(scorer.space.vectors[varied])

    def settings(
        users: np.ndarray, extra: sp.csr_matrix | None, match: np.ndarray | None
    ) -> Iterator[Setting]:
        scored = np.empty((len(users), len(varied)), dtype=np.float32)  # reused: see Setting
        weighted = np.empty_like(scored) if match is not None else None
        for k, vectors in items.items():
            base = users @ vectors[varied].T
            for scale in scales:
                for weight in text_weights:
                    np.multiply(base, np.float32(scale), out=scored)  # as the model scores them
                    if weight:
                        np.multiply(match, np.float32(weight), out=weighted)
                        scored += weighted
                    yield (k, scale, weight), scored, extra

    def settings_scores(hist: Sequence[UserHistory]) -> tuple[np.ndarray, Iterator[Setting]]:
        # histories read every item as the model knows it; the text match is added below
        users = scorer.model_user_vectors(hist)
        extra = scorer.sparse_scores(hist)
        if extra is not None:
            extra = (extra @ sp.diags(dropped)).tocsr()
        match = None if new_text is None else scorer.history_text(hist) @ new_text.T
        # the items with an id score the same under every setting
        fixed = users @ items[borrowed[0]].T
        return fixed, settings(users, extra, match)

    results = grid_ranks(split, settings_scores, varied=varied, left_out=np.flatnonzero(~listed))
    target_new = as_new[split.targets]
    grid = [
        {
            "borrowed_ids": k,
            "scale": scale,
            "text_weight": weight,
            "ndcg10": round(ndcg_at(r, 10), 6),
            "ndcg10_new": round(ndcg_at(r[target_new], 10), 6) if target_new.any() else None,
            "ndcg10_others": round(ndcg_at(r[~target_new], 10), 6),
            "new_share10": round(float(new[tops].mean()), 4),
        }
        for (k, scale, weight), (r, tops) in results.items()
    ]
    best = max(  # ties: the simpler setting (fewer neighbours, scale nearer 1, less text)
        grid,
        key=lambda g: (g["ndcg10"], -g["borrowed_ids"], -abs(g["scale"] - 1), -g["text_weight"]),
    )
    return {
        "borrowed_ids": best["borrowed_ids"],
        "scale": best["scale"],
        "text_weight": best["text_weight"],
        "ndcg10": best["ndcg10"],
        "simulated_items": int(n_simulated),
        "simulated_targets": int(target_new.sum()),
        # the share of the ranked catalogue scored as new (untouched items left out)
        "new_item_share": round(float(new[listed].mean()), 4) if listed.any() else 0.0,
        "grid": grid,
    }
