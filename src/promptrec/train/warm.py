"""Warm start: train a fast-mode model again from an earlier one, on a log that has grown.

``promptrec train --init-from OLD`` (or ``--registry DIR --warm-start``: from the registry's
active version) runs the one trainer (:class:`~promptrec.train.trainer.Trainer`) with:

* the old model's settings (:func:`warm_config`): what shapes the network (the architecture,
  the encoder, the item template, whether it has a query tower) cannot change; training
  settings given again (epochs, patience, learning rate, seed...) override the old ones, and
  the patience is :data:`WARM_PATIENCE` (5) unless given;
* the old weights (:func:`warm_weights`): every item the old model had an id embedding for
  keeps it (matched by item id, wherever it now sits in the catalogue); any other item's row
  starts at zero (its text alone, as the old model scored it), for training to fill in; the
  towers start where they were;
* a fresh validation split (:func:`fresh_validation`): the users whose validation target is
  newer than everything the old model was trained on (``trained_until`` in its summary), so
  that early stopping never scores an event the old model already learned; the old model as
  it is competes as epoch 0. The validated epochs train on the log less those users' targets
  alone (:func:`fit_without_targets`): every other new event is learned there;
* the co-occurrence weight and decay chosen again on that validation split (as from scratch:
  :mod:`promptrec.train.cooccurrence`), the table counted again on the whole log. Kept from
  the old model, they cost movielens-100k 14% of its test NDCG@10 against a from-scratch
  model (0.1024 against 0.1187; with the from-scratch model's weight and decay, 0.1147): the
  choice made on the older log did not hold on the grown one;
* the old model's new-item settings (borrowed ids, scale, text weight), those given in the
  config overriding them (:func:`given_scoring`): they are not chosen again (their grid costs
  minutes at a million items).

Then, as from scratch, a refit on the whole log (the validation targets, the newest events,
included) for the best number of epochs, from the old weights again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from promptrec.data.dataset import Dataset
from promptrec.data.split import Split, known_events, leave_last_out, positions_from_end
from promptrec.errors import ConfigError
from promptrec.train.config import ScoringConfig, TrainConfig
from promptrec.train.model import TwoTowerModel
from promptrec.train.trained import MIN_ITEM_OVERLAP, TrainedScorer

log = logging.getLogger("promptrec")

#: the settings that shape the network or its inputs: a warm start keeps the old model's
ARCHITECTURE = (
    "mode",
    "dim",
    "layers",
    "heads",
    "max_len",
    "use_ids",
    "similarity",
    "encoder",
    "item_template",
)
#: the id embedding table's key in the network's weights
ID_TABLE = "items.ids.weight"
#: fewer fresh validation users than this: validate on every user instead (with a warning)
MIN_FRESH_USERS = 100
#: a log whose newest time is below this (3 March 1973, in seconds) is ordered by position, not
#: by a clock: its users' times cannot be compared
CLOCK_FROM = 1e8
#: the scoring settings a training config can set (the same names in ScoringConfig)
SCORING_SETTINGS = (
    "cooccurrence_weight",
    "cooccurrence_decay",
    "borrowed_ids",
    "new_item_scale",
    "new_item_text_weight",
)


#: a warm start's patience unless given (:func:`warm_config`; from scratch: 10)
WARM_PATIENCE = 5


def warm_config(old: TrainConfig, given: Mapping[str, Any]) -> TrainConfig:
    """The settings of a warm start from a model trained with ``old``: the old ones, those in
    ``given`` (the command line's and a ``--config`` file's) overriding them, and a patience
    of :data:`WARM_PATIENCE` unless given. Chosen on validation: on movielens-100k's
    validation targets a warm start stopped at its best epoch (23) at patience 5 as at 10
    (NDCG@10 0.1239 either way, from scratch 0.1192), in 311 s instead of 335; on
    amazon-beauty, patience 5 stops at epoch 14 (validation NDCG@10 0.0633, best at 9) where
    patience 10 goes on to epoch 45 (0.0654, best at 36): 3% on validation for a third of
    the epochs (test NDCG@10 0.0618 in 1,092 s against 0.0640 in 3,482 s; from scratch
    0.0628 in 4,531 s). A warm start is the cheap retraining: give ``patience`` 10 where the
    last percents matter more than the time.

    Raises:
        ConfigError: ``given`` changes a setting that shapes the network (:data:`ARCHITECTURE`,
            or turning the query tower on or off).
    """
    base = old.model_dump()
    changed = [
        k for k in ARCHITECTURE if k in given and given[k] is not None and given[k] != base[k]
    ]
    if "query_share" in given and bool(given["query_share"]) != bool(base["query_share"]):
        changed.append("query_share (the query tower on or off)")
    if changed:
        raise ConfigError(
            f"a warm start keeps the old model's network: {', '.join(changed)} cannot change "
            "(train from scratch without --init-from/--warm-start to change them)"
        )
    settings = {**base, "patience": WARM_PATIENCE}
    settings.update({k: v for k, v in given.items() if v is not None})
    return TrainConfig(**settings)


def starting_model(old: TrainedScorer) -> TrainedScorer:
    """Check that ``old`` can be warm-started from (a fast-mode model); it as it is."""
    if not isinstance(old, TrainedScorer):
        raise ConfigError(
            "a warm start needs a fast-mode model (full mode tunes the language model: train "
            "it from scratch)"
        )
    return old


def check_catalogue(old: TrainedScorer, data: Dataset) -> None:
    """Refuse, before any training, a log of another shop than ``old``'s (too few shared
    items: the old id embeddings would be of no use).

    Raises:
        ConfigError: fewer than ``MIN_ITEM_OVERLAP`` of the old items are in ``data``.
    """
    known = int((old.train_rows(data.item_ids) >= 0).sum())
    if known < MIN_ITEM_OVERLAP * len(old.train_item_ids):
        raise ConfigError(
            f"a warm start needs the old model's catalogue: only {known} of its "
            f"{len(old.train_item_ids)} items are in the given one; train from scratch"
        )


def given_scoring(old: ScoringConfig, config: TrainConfig) -> ScoringConfig:
    """``old``'s scoring settings, each one set in ``config`` (not None) taking its place."""
    given = {k: getattr(config, k) for k in SCORING_SETTINGS if getattr(config, k) is not None}
    return old.model_copy(update=given)


def start_key(old: TrainedScorer) -> str:
    """What tells one starting model from another (a checkpoint resumes only from the same):
    its log's fingerprint, summary and validation history."""
    key = {k: old.info.get(k) for k in ("train_log", "summary", "validation")}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def warm_weights(
    old: TrainedScorer, model: TwoTowerModel, item_ids: np.ndarray
) -> dict[str, torch.Tensor]:
    """The weights ``model`` (built for the catalogue ``item_ids``) starts from: ``old``'s,
    with its id embedding table laid out by ``item_ids``: an item the old model has an id
    embedding for keeps its row; every other row starts at zero, so that before training the
    network scores every item as ``old`` does.

    Raises:
        ConfigError: the two networks differ in shape (another text encoder's width, say).
    """
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = old.model.state_dict()
    differ = sorted(
        k for k in start if k != ID_TABLE and (k not in before or before[k].shape != start[k].shape)
    )
    if differ or set(before) - set(start):
        raise ConfigError(
            f"the old model's network does not match the new one ({', '.join(differ[:5])}); "
            "train from scratch"
        )
    for key, value in before.items():
        if key != ID_TABLE:
            start[key] = value.detach().clone().to(start[key].dtype)
    if ID_TABLE in start:
        rows = old.train_rows(item_ids)
        known = np.flatnonzero(old.has_id(item_ids))
        table = torch.zeros_like(start[ID_TABLE])
        table[torch.from_numpy(known)] = before[ID_TABLE][torch.from_numpy(rows[known])].to(
            table.dtype
        )
        start[ID_TABLE] = table
    return start


def fit_without_targets(data: Dataset, val: Split) -> Split:
    """``val`` (a sample of ``data``'s validation split) fitted on ``data`` less its own
    users' targets alone, instead of less every user's last interaction: the validated epochs
    of a warm start then learn every other new event, and early stopping measures how the
    network takes in what the log added. Otherwise, on a log that grew by each user's newest
    event, the validated epochs would see nothing the old model had not (on amazon-beauty the
    warm start stopped after one epoch and refitted for one: test NDCG@10 5.9% under a
    from-scratch model)."""
    ev = known_events(data)
    held = (positions_from_end(ev) == 0) & ev["user_id"].isin(val.user_ids).to_numpy()
    return Split(val.name, data.with_events(ev[~held].sort_index()), val.histories, val.targets)


def trained_until(data: Dataset) -> float | None:
    """The time of the newest event in ``data`` (None: an empty log)."""
    stamps = data.events["timestamp"]
    return float(stamps.max()) if len(stamps) else None


def fresh_validation(data: Dataset, after: float | None) -> Split:
    """The protocol's validation split of ``data`` (each user's last interaction) on the users
    whose target is newer than ``after`` (the newest event the old model was trained on).

    With no ``after`` (a model written before it was recorded), a log of positions rather than
    times (``after`` below :data:`CLOCK_FROM`) or fewer than :data:`MIN_FRESH_USERS` such
    users, every user is kept (with a warning, but for positions): early stopping then may
    also score events the old model was trained on, and favours stopping early.
    """
    val = leave_last_out(data)["test"]
    if after is None:
        log.warning(
            "the old model does not record when its log ended: validating on every user, "
            "some of whose targets it was trained on"
        )
        return val
    if after < CLOCK_FROM:
        log.info(
            "the log's times are positions (no clock common to its users): validating on "
            "every user's last interaction"
        )
        return val
    ev = known_events(data)
    newest = ev.groupby("user_id", sort=False)["timestamp"].last()
    times = newest.reindex(val.user_ids).to_numpy()
    keep = np.flatnonzero(times > after)
    if len(keep) < MIN_FRESH_USERS:
        log.warning(
            "only %d users have an event newer than the old model's log: validating on every "
            "user, some of whose targets it was trained on",
            len(keep),
        )
        return val
    log.info("warm start: validating on the %d users with an event since the old model", len(keep))
    return Split(val.name, val.fit, [val.histories[i] for i in keep], val.targets[keep])
