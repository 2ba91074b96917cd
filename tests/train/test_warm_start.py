"""Warm start (``promptrec train --init-from``): a model trained on the older part of a real
log starts a training on the whole log with its own weights, validates on the users with newer
events, chooses its co-occurrence term again there and keeps its new-item settings; the command
line and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptrec.data.dataset import chronological
from promptrec.data.split import leave_last_out
from promptrec.errors import ConfigError
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.scorers import TextSpace
from promptrec.train import TrainConfig, Trainer
from promptrec.train.warm import (
    ID_TABLE,
    WARM_PATIENCE,
    fit_without_targets,
    fresh_validation,
    given_scoring,
    warm_config,
    warm_weights,
)

SMALL = dict(
    dim=32,
    layers=1,
    heads=2,
    max_len=20,
    epochs=6,
    batch_size=64,
    warmup_steps=5,
    validation_users=300,
    refit=False,  # the old model's; the warm start that checks what a refit learns gives it
    query_share=0.0,
    cooccurrence_weight=0.1,
    cooccurrence_decay=0.5,
    borrowed_ids=1,
    new_item_scale=1.1,
    new_item_text_weight=0.0,
)


@pytest.fixture(scope="module")
def ml_slice(ml100k):
    """movielens-100k's first 400 users (a log with real times: amazon-beauty's are positions)."""
    from promptrec.data.dataset import Dataset

    users = ml100k.user_ids[:400]
    return Dataset(ml100k.items, ml100k.events[ml100k.events["user_id"].isin(users)], "ml-slice")


@pytest.fixture(scope="module")
def grown(ml_slice, encoder):
    """The slice without its test targets, its older 80% (by time), and a model of the older."""
    test = leave_last_out(ml_slice)["test"]
    whole = test.fit
    stamps = whole.events["timestamp"].to_numpy()
    cut = float(np.quantile(stamps, 0.8, method="lower"))
    older = whole.with_events(whole.events[stamps <= cut])
    space = TextSpace(encoder)
    old = Trainer(TrainConfig(**SMALL), space=space, progress=False).fit(older)
    return test, whole, older, cut, old


def test_the_old_model_records_when_its_log_ended(grown) -> None:
    _, _, _, cut, old = grown
    assert old.info["summary"]["trained_until"] == cut


def test_validation_holds_only_users_with_newer_events(grown) -> None:
    _, whole, _, cut, _ = grown
    everyone = leave_last_out(whole)["test"]
    fresh = fresh_validation(whole, cut)
    newest = whole.events.groupby("user_id")["timestamp"].max()
    assert 0 < len(fresh.histories) < len(everyone.histories)
    assert (newest[fresh.user_ids] > cut).all()
    # every user with a newer event is there
    assert len(fresh.histories) == int((newest[everyone.user_ids] > cut).sum())


def test_the_validated_epochs_learn_every_new_event_but_the_targets(grown) -> None:
    """The warm start's validation sample is fitted on the log less its own targets: the
    other users' newest events stay in what the validated epochs learn."""
    _, whole, _, cut, _ = grown
    val = fresh_validation(whole, cut).sample(50, 0)
    fitted = fit_without_targets(whole, val)
    assert fitted.histories == val.histories and (fitted.targets == val.targets).all()
    events = fitted.fit.events
    assert len(events) == len(whole.events) - len(val.histories)
    key = ["user_id", "item_id", "timestamp"]
    before = whole.events.groupby(key).size()
    gone = before - events.groupby(key).size().reindex(before.index, fill_value=0)
    gone = gone[gone > 0]
    # one event gone for each validation user: their target, their newest event
    assert gone.sum() == len(val.histories)
    assert set(gone.index.get_level_values("user_id")) == set(val.user_ids)
    target = dict(zip(val.user_ids, np.asarray(whole.item_ids)[val.targets], strict=True))
    newest = chronological(whole.events).groupby("user_id").tail(1).set_index("user_id")
    for user, item, stamp in gone.index:
        assert item == target[user] and stamp == newest.loc[user, "timestamp"]
    # the protocol's own fit lacks every user's newest event, these included
    assert len(val.fit.events) < len(events)


def test_known_items_keep_their_id_rows_and_new_ones_start_fresh(grown) -> None:
    _, whole, older, _, old = grown
    fresh = Trainer(TrainConfig(**SMALL), progress=False)
    from promptrec.train.model import TwoTowerModel

    model = TwoTowerModel(
        old.model.config()["text_dim"],
        whole.n_items + 3,  # the catalogue grew by three items, none known to the old model
        dim=32,
        max_len=20,
        layers=1,
        heads=2,
    )
    ids = np.concatenate([np.asarray(whole.item_ids)[::-1], ["n1", "n2", "n3"]])
    start = warm_weights(old, model, ids)
    before = old.model.state_dict()
    rows = old.train_rows(ids)
    assert (rows[-3:] == -1).all()
    known = np.flatnonzero(old.has_id(ids))
    assert np.array_equal(start[ID_TABLE][known].numpy(), before[ID_TABLE][rows[known]].numpy())
    # every other row starts at zero: the item's text alone, as the old model scores it
    others = np.setdiff1d(np.arange(len(ids)), np.flatnonzero(old.has_id(ids)))
    assert len(others) > 3 and not start[ID_TABLE][others].any()
    for key in before:
        if key != ID_TABLE:
            assert np.array_equal(start[key].numpy(), before[key].numpy()), key
    assert fresh.config.patience == 10  # from scratch keeps its own patience


def test_a_warm_start_begins_at_the_old_model_and_keeps_its_settings(grown, tmp_path) -> None:
    test, whole, _, cut, old = grown
    cfg = warm_config(old.config_, {"epochs": 3, "refit": True})
    assert cfg.patience == WARM_PATIENCE and cfg.epochs == 3 and cfg.dim == 32
    warm = Trainer(cfg, progress=False, init_from=old).fit(whole)
    history = warm.info["validation"]
    # epoch 0 is the old model as it was, validated on the users with newer events
    assert history[0]["epoch"] == 0 and history[0]["loss"] is None
    fresh = fresh_validation(whole, cut).sample(300, 0)
    old_ndcg = evaluate_scorer(
        _network_only(old), fresh, progress=False, exclude_seen=True
    ).metrics["NDCG@10"]
    assert history[0]["ndcg10"] == pytest.approx(old_ndcg, abs=1e-4)
    summary = warm.info["summary"]
    assert summary["warm_start"]["trained_until"] == cut
    assert summary["trained_until"] == float(whole.events["timestamp"].max())
    assert warm.scoring == old.scoring  # chosen when the old model was trained
    assert summary["validation_ndcg10"] == max(e["ndcg10"] for e in history)
    # the whole log's catalogue: an item only the newer events touched now has an id row
    counts = whole.events["item_id"].value_counts()
    newly = [i for i in counts[counts >= 2].index if not old.has_id([i])[0]]
    if summary["best_epoch"] > 0 and newly:
        assert warm.has_id(newly).all()
    # it saves and loads as any model, and a second warm start can begin from it
    warm.save(tmp_path / "warm", whole)
    saved = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert saved["summary"]["warm_start"]["trained_until"] == cut
    res = evaluate_scorer(warm, test, progress=False)
    assert res.metrics["NDCG@10"] > 0


def test_the_cooccurrence_term_is_chosen_again_on_the_fresh_users(grown) -> None:
    _, whole, _, cut, old = grown
    # an old model whose weight and decay were chosen (not given): here 0.75 and 1.0
    chosen = old.detached()
    chosen.config_ = old.config_.model_copy(
        update={"cooccurrence_weight": None, "cooccurrence_decay": None}
    )
    chosen.scoring = old.scoring.model_copy(
        update={"cooccurrence_weight": 0.75, "cooccurrence_decay": 1.0}
    )
    chosen.info = old.info
    cfg = warm_config(chosen.config_, {"epochs": 2})
    warm = Trainer(cfg, progress=False, init_from=chosen).fit(whole)
    choice = warm.info["cooccurrence_choice"]
    grid = {(g["weight"], g["decay"]): g["ndcg10"] for g in choice["grid"]}
    assert len(grid) > 20
    best = max(grid.values())
    assert grid[(warm.scoring.cooccurrence_weight, warm.scoring.cooccurrence_decay)] == best
    assert warm.info["summary"]["validation_ndcg10_with_cooccurrence"] == best
    # scored on the fresh validation split: the model alone there is the best epoch's NDCG@10
    assert grid[(0.0, 1.0)] == pytest.approx(warm.info["summary"]["validation_ndcg10"], abs=1e-5)
    # the new-item settings stay the old model's
    for key in ("borrowed_ids", "new_item_scale", "new_item_text_weight"):
        assert getattr(warm.scoring, key) == getattr(old.scoring, key)


def _network_only(scorer):  # type: ignore[no-untyped-def]
    """The scorer without its co-occurrence term: what the training loop validates."""
    import copy

    alone = copy.copy(scorer)
    alone.scoring.cooccurrence_weight = 0.0
    alone.scoring.borrowed_ids = 0
    alone.scoring.new_item_scale = 1.0
    return alone


def test_settings_that_shape_the_network_cannot_change(grown) -> None:
    old = grown[-1]
    with pytest.raises(ConfigError, match="dim"):
        warm_config(old.config_, {"dim": 64})
    with pytest.raises(ConfigError, match="query tower"):
        warm_config(old.config_, {"query_share": 0.5})
    with pytest.raises(ConfigError, match="fast mode"):
        Trainer(old.config_.model_copy(update={"mode": "full"}), init_from=old)
    assert warm_config(old.config_, {"patience": 7, "lr": 1e-3}).patience == 7
    # scoring settings given again override the old model's; the others stay
    cfg = warm_config(old.config_, {"cooccurrence_weight": 0.0})
    scoring = given_scoring(old.scoring, cfg)
    assert scoring.cooccurrence_weight == 0.0
    assert scoring.new_item_scale == old.scoring.new_item_scale


def test_another_shop_is_refused_before_any_training(grown) -> None:
    from promptrec.data.dataset import Dataset

    _, whole, _, _, old = grown
    # the same log in a shop whose item ids are all others
    items = whole.items.assign(item_id="other-" + whole.items["item_id"].astype(str))
    events = whole.events.assign(item_id="other-" + whole.events["item_id"].astype(str))
    trainer = Trainer(warm_config(old.config_, {}), progress=False, init_from=old)
    with pytest.raises(ConfigError, match="needs the old model's catalogue"):
        trainer.fit(Dataset(items, events, "other shop"))
