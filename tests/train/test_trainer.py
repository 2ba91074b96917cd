"""Fast-mode training on a real data slice: it learns, it saves and loads exactly, it resumes,
it refuses a model that does not fit the data, and it weighs item co-occurrence on validation
(served exactly through an index)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from promptrec import Recommender
from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import leave_last_out
from promptrec.encoders import normalise
from promptrec.errors import ConfigError, ModelError
from promptrec.evaluation.metrics import ndcg_at
from promptrec.explain import explain_items
from promptrec.retrieval.filters import Filters
from promptrec.retrieval.index import IndexConfig
from promptrec.retrieval.topk import target_ranks, top_k
from promptrec.scorers import ItemKNNScorer, TextSpace
from promptrec.train import ScoringConfig, TrainConfig, Trainer
from promptrec.train.cooccurrence import COOCCURRENCE_DECAYS, COOCCURRENCE_WEIGHTS
from promptrec.train.load import load_model
from promptrec.train.new_items import (
    BORROWED_IDS,
    NEW_ITEM_SCALES,
    NEW_ITEM_TEXT_WEIGHTS,
    choose_new_items,
)

SMALL = dict(
    dim=32,
    layers=1,
    heads=2,
    max_len=20,
    epochs=6,
    patience=10,
    batch_size=64,
    warmup_steps=5,
    refit=False,
    validation_users=300,
    query_share=0.0,  # what is tested here does not depend on queries (test_query_training)
)
#: the scoring settings given, for the tests that do not look at their choice (each choice
#: scores the validation split for every setting of its grid)
GIVEN = dict(cooccurrence_weight=0.0, borrowed_ids=0, new_item_scale=1.0, new_item_text_weight=0.0)


@pytest.fixture(scope="module")
def trained(beauty_slice, encoder):
    space = TextSpace(encoder)
    trainer = Trainer(TrainConfig(**SMALL), space=space, progress=False)
    data = leave_last_out(beauty_slice)["test"].fit
    return trainer, trainer.fit(data), data


def test_training_lowers_loss_and_changes_ranking(trained, encoder) -> None:
    trainer, scorer, data = trained
    losses = [e.loss for e in trainer.state.history]
    assert losses[-1] < losses[0] * 0.9
    # the trained ranking differs from an untrained model's
    untrained = Trainer(
        TrainConfig(**{**SMALL, "epochs": 1, "lr": 1e-9}), space=TextSpace(encoder), progress=False
    ).fit(data)
    hist = data.histories()[:20]
    a = np.argsort(-scorer.score(hist), axis=1)[:, :10]
    b = np.argsort(-untrained.score(hist), axis=1)[:, :10]
    assert (a != b).any()
    summary = scorer.info["summary"]
    assert summary["best_epoch"] >= 1 and summary["validation_ndcg10"] >= 0


def test_items_without_an_id_borrow_their_text_neighbours_ids(trained) -> None:
    """``borrowed_ids``: an item without an id embedding (too rare in training, or new) adds the
    mean id embedding of its nearest trained items by text; the others are unchanged."""
    _, trained_scorer, data = trained
    scorer = trained_scorer.detached()  # text alone, scored as it is
    scorer.scoring.borrowed_ids, scorer.scoring.new_item_scale = 0, 1.0
    plain = scorer.fit(data).item_vectors.copy()
    borrowing = scorer.detached()
    borrowing.scoring.borrowed_ids = 5
    borrowing.fit(data)
    changed = ~np.isclose(plain, borrowing.item_vectors, atol=1e-6).all(axis=1)
    position = {iid: i for i, iid in enumerate(scorer.train_item_ids)}
    has_id = np.array([scorer.train_id_mask[position[i]] for i in data.item_ids])
    assert changed.any() and np.array_equal(changed, ~has_id)
    # one item worked by hand: its text, plus the mean id of its 5 nearest donors
    import torch

    item = int(np.flatnonzero(~has_id)[0])
    text = scorer.space.vectors
    donors = np.flatnonzero(has_id)
    nearest = donors[np.argsort(-(text[donors] @ text[item]))[:5]]
    ids = scorer.model.items.ids.weight.detach()
    borrowed = ids[[position[data.item_ids[d]] for d in nearest]].mean(dim=0)
    with torch.no_grad():
        own = scorer.model.items.project_query(torch.from_numpy(text[item : item + 1]))[0]
        want = scorer.model.scoring((own + borrowed)[None])[0].numpy()
    assert np.allclose(borrowing.item_vectors[item], want, atol=1e-5)
    borrowing.scoring.borrowed_ids = 0  # back to text alone
    borrowing.fit(data)
    assert np.allclose(borrowing.item_vectors, plain, atol=1e-6)


def test_validation_ndcg_improves_over_training(trained) -> None:
    trainer, _, _ = trained
    ndcgs = [e.ndcg10 for e in trainer.state.history]
    assert max(ndcgs) > ndcgs[0]


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path, encoder) -> None:
    _, scorer, data = trained
    scorer.save(tmp_path / "model", data)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format_version"] == 1 and config["fingerprint"]["n_items"] == data.n_items
    assert (tmp_path / "model" / "item_template.j2").exists()
    loaded = load_model(tmp_path / "model").fit(data)
    hist = data.histories()[:50]
    np.testing.assert_array_equal(scorer.score(hist), loaded.score(hist))


def test_new_items_get_text_vectors_and_foreign_catalogues_fail(trained, tmp_path) -> None:
    _, scorer, data = trained
    scorer.save(tmp_path / "m", data)
    new = pd.DataFrame(
        [
            {
                "item_id": "new-1",
                "title": "Brand new nail polish",
                "brand": "X",
                "categories": ["Beauty", "Nails"],
                "price": 5.0,
            }
        ]
    )
    grown = Dataset(pd.concat([data.items, new]), data.events, "grown")
    loaded = load_model(tmp_path / "m").fit(grown)
    scores = loaded.score(grown.histories()[:5])
    assert np.isfinite(scores[:, -1]).all() and scores.shape[1] == data.n_items + 1
    foreign = Dataset(
        new, pd.DataFrame({"user_id": ["u"], "item_id": ["new-1"], "timestamp": [1.0]}), "foreign"
    )
    with pytest.raises(ModelError, match="another catalogue.*full-mode model"):
        load_model(tmp_path / "m").fit(foreign)


def test_an_edited_catalogue_binds_only_its_new_rows(trained, tmp_path) -> None:
    """The service's catalogue change: the new and changed items go through the item tower
    alone, and score as a model bound to the whole edited catalogue scores them."""
    _, scorer, data = trained
    scorer.save(tmp_path / "m", data)
    model = load_model(tmp_path / "m").fit(data)
    hist = data.histories()[:50]
    before = model.score(hist)
    changed, removed = str(data.item_ids[2]), str(data.item_ids[4])
    rows = pd.DataFrame(
        [
            {"item_id": "new-1", "title": "Brand new nail polish", "price": 5.0},
            {"item_id": changed, "title": "Rose water toner", "brand": "Y"},
        ]
    )
    edited, added = data.edited(rows, deleted=[removed])
    fast = model.edited(edited, added)
    full = load_model(tmp_path / "m").fit(edited)
    hist = edited.histories()[:50]
    np.testing.assert_allclose(fast.score(hist), full.score(hist), rtol=1e-5, atol=1e-6)
    assert fast.score(hist).shape[1] == data.n_items + 2
    assert edited.item_index[changed] == data.n_items + 1 and removed not in edited.item_index
    np.testing.assert_array_equal(model.score(data.histories()[:50]), before)


def test_incompatible_model_directory(tmp_path, trained) -> None:
    _, scorer, data = trained
    scorer.save(tmp_path / "m", data)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="format 99"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelError, match="not a promptrec model"):
        load_model(tmp_path / "nothing")


def test_resume_continues_from_the_checkpoint(beauty_slice, encoder, tmp_path) -> None:
    data = leave_last_out(beauty_slice)["test"].fit
    cfg = TrainConfig(**{**SMALL, **GIVEN, "epochs": 2})
    first = Trainer(cfg, space=TextSpace(encoder), checkpoint_dir=tmp_path, progress=False)
    first.fit(data)
    more = TrainConfig(**{**SMALL, **GIVEN, "epochs": 2})
    again = Trainer(more, space=TextSpace(encoder), checkpoint_dir=tmp_path, progress=False)
    again.fit(data)
    assert [e.epoch for e in again.state.history] == [1, 2]  # nothing left to do: resumed
    other = Trainer(
        TrainConfig(**{**SMALL, **GIVEN, "dim": 16}),
        space=TextSpace(encoder),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(ConfigError, match="other settings"):
        other.fit(data)


def test_an_interrupted_run_resumes_as_if_it_had_not_stopped(
    beauty_slice, encoder, tmp_path, monkeypatch
) -> None:
    """Stopped during its third epoch's validation, a run resumed from the checkpoint of the
    second trains and validates as the uninterrupted run did (the model, the optimiser, the
    schedule and every generator's state are in the checkpoint), queries included."""
    from promptrec.train.fast import FastMode

    data = leave_last_out(beauty_slice)["test"].fit
    cfg = TrainConfig(**{**SMALL, **GIVEN, "epochs": 4, "query_share": 0.5})
    space = TextSpace(encoder)
    whole = Trainer(cfg, space=space, checkpoint_dir=tmp_path / "a", progress=False).fit(data)

    validate = FastMode.validate
    calls = []

    def interrupted(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return validate(self)

    monkeypatch.setattr(FastMode, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, space=space, checkpoint_dir=tmp_path / "b", progress=False).fit(data)
    monkeypatch.setattr(FastMode, "validate", validate)
    resumed = Trainer(cfg, space=space, checkpoint_dir=tmp_path / "b", progress=False).fit(data)

    def logged(scorer):  # type: ignore[no-untyped-def]
        return [(e["epoch"], e["loss"], e["ndcg10"]) for e in scorer.info["validation"]]

    assert [e[0] for e in logged(resumed)] == [1, 2, 3, 4]
    assert logged(resumed) == logged(whole)
    hist = data.histories()[:20]
    np.testing.assert_allclose(resumed.score(hist), whole.score(hist), atol=1e-5)


def test_an_interrupted_refit_resumes_where_it_stopped(
    beauty_slice, encoder, tmp_path, monkeypatch
) -> None:
    """A refit checkpoints every epoch too (in ``refit/``): stopped in its last epoch, the run
    resumes with the validated phase's checkpoint, trains that epoch alone, and gives the model
    of the uninterrupted run."""
    from promptrec.train.fast import FastMode

    data = leave_last_out(beauty_slice)["test"].fit
    cfg = TrainConfig(**{**SMALL, **GIVEN, "epochs": 4, "refit": True})
    space = TextSpace(encoder)
    whole = Trainer(cfg, space=space, checkpoint_dir=tmp_path / "a", progress=False).fit(data)
    best = whole.info["summary"]["best_epoch"]
    assert whole.info["summary"]["refit"] and best >= 2, best  # a refit of several epochs

    train_epoch = FastMode.train_epoch
    refit_epochs: list[int] = []

    def interrupted(self, epoch):  # type: ignore[no-untyped-def]
        if self.val is None:  # the refit: stopped in its last epoch, once
            refit_epochs.append(epoch)
            if epoch == best and len(refit_epochs) == best:
                raise KeyboardInterrupt
        return train_epoch(self, epoch)

    monkeypatch.setattr(FastMode, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, space=space, checkpoint_dir=tmp_path / "b", progress=False).fit(data)
    assert (tmp_path / "b" / "refit" / "last.pt").exists()
    resumed = Trainer(cfg, space=space, checkpoint_dir=tmp_path / "b", progress=False).fit(data)
    assert refit_epochs == [*range(1, best + 1), best]  # it went on with its last epoch
    hist = data.histories()[:20]
    np.testing.assert_allclose(resumed.score(hist), whole.score(hist), atol=1e-5)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="multiple of heads"):
        Trainer(TrainConfig(dim=30, heads=4))
    with pytest.raises(ValueError):
        TrainConfig(loss="hinge")


def test_dropout_left_out_depends_on_id_embeddings() -> None:
    """A text-only model trains without dropout (it blurs the text vectors that alone tell its
    items apart); a hybrid one at 0.3; a given value is kept, and a saved config reloads as
    it was."""
    assert TrainConfig().dropout == 0.3
    assert TrainConfig(use_ids=False).dropout == 0.0
    assert TrainConfig(use_ids=False, dropout=0.2).dropout == 0.2
    saved = TrainConfig(use_ids=False).model_dump()
    assert TrainConfig(**{**saved, "use_ids": True}).dropout == 0.0


@pytest.mark.parametrize("loss", ["bce", "sampled-softmax"])
def test_other_losses_train(loss, beauty_slice, encoder) -> None:
    data = leave_last_out(beauty_slice)["test"].fit
    cfg = TrainConfig(**{**SMALL, **GIVEN, "epochs": 3, "loss": loss, "num_negatives": 32})
    trainer = Trainer(cfg, space=TextSpace(encoder), progress=False)
    trainer.fit(data)
    losses = [e.loss for e in trainer.state.history]
    assert losses[-1] < losses[0]


def test_a_step_over_the_batch_items_equals_one_over_the_catalogue(beauty_slice, encoder) -> None:
    """Above ``sample_above`` items a step runs the item tower on its batch's items alone; with
    the same negatives (and no dropout) its loss and gradients are the catalogue-wide step's."""
    import torch

    from promptrec.scorers.popularity import item_counts
    from promptrec.train.fast import make_loss, step_loss
    from promptrec.train.model import TwoTowerModel
    from promptrec.train.sequences import training_windows

    data = leave_last_out(beauty_slice)["test"].fit
    cfg = TrainConfig(**{**SMALL, "loss": "sampled-softmax", "num_negatives": 64})
    trainer = Trainer(cfg, space=TextSpace(encoder), progress=False, device="cpu")
    trainer.space.fit(data)
    text = torch.from_numpy(trainer.space.vectors)
    counts = item_counts(data)
    id_mask = torch.from_numpy(counts >= cfg.id_min_count)
    inputs, targets = training_windows(data.histories()[:64], cfg.max_len)
    inp, tgt = torch.from_numpy(inputs), torch.from_numpy(targets)
    model = TwoTowerModel(text.shape[1], data.n_items, dim=32, max_len=cfg.max_len, layers=1)
    model.eval()  # no dropout: both steps see the same vectors
    results = []
    for sampled in (False, True):
        gen = torch.Generator().manual_seed(7)
        loss_fn = make_loss(cfg, torch.from_numpy(counts), gen, sampled)
        model.zero_grad()
        valid = tgt >= 0
        loss = step_loss(
            model, loss_fn, text, id_mask, inp, tgt, valid, config=cfg, sampled=sampled
        )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(loss.detach()), grads))
    (full, full_grads), (batch, batch_grads) = results
    assert batch == pytest.approx(full, rel=1e-5)
    assert full_grads.keys() == batch_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(batch_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_training_above_sample_above_learns(beauty_slice, encoder) -> None:
    data = leave_last_out(beauty_slice)["test"].fit
    cfg = TrainConfig(**{**SMALL, **GIVEN, "epochs": 4, "sample_above": 0, "num_negatives": 64})
    trainer = Trainer(cfg, space=TextSpace(encoder), progress=False)
    scorer = trainer.fit(data)
    assert trainer.sampled
    assert scorer.model.items.ids.sparse  # stepped row by row (train.optim.LazyAdamW)
    ndcgs = [e.ndcg10 for e in trainer.state.history]
    assert max(ndcgs) > ndcgs[0]
    losses = [e.loss for e in trainer.state.history]
    assert losses[-1] < losses[0]
    assert scorer.score(data.histories()[:5]).shape == (5, data.n_items)


# ------------------------------------------------------------------ item co-occurrence
def test_the_weight_is_the_best_of_the_grid_on_validation(trained) -> None:
    _, scorer, data = trained
    choice = scorer.info["cooccurrence_choice"]
    grid = choice["grid"]
    # every weight with every decay, the model alone once
    assert len(grid) == 1 + (len(COOCCURRENCE_WEIGHTS) - 1) * len(COOCCURRENCE_DECAYS)
    best = max(g["ndcg10"] for g in grid)
    assert choice["ndcg10"] == best
    assert (scorer.scoring.cooccurrence_weight, scorer.scoring.cooccurrence_decay) == (
        choice["weight"],
        choice["decay"],
    )
    # one point of the grid recomputed by hand: model scores + weight x scaled ItemKNN
    point = next(g for g in grid if g["weight"] == 0.3 and g["decay"] == 0.7)
    val = leave_last_out(data)["test"].sample(300, 0)
    probe = scorer.detached()
    # as the grid was scored: before the new-item settings were chosen (text alone, as it is)
    probe.scoring = ScoringConfig()
    probe.fit(val.fit)
    knn = ItemKNNScorer(decay=0.7).fit(val.fit)
    scores = probe.score(val.histories) + 0.3 * knn.scaled_scores(val.histories).toarray()
    ranks = target_ranks(scores, val.targets, [h.items for h in val.histories])
    assert ndcg_at(ranks, 10) == pytest.approx(point["ndcg10"], abs=1e-6)
    assert set(scorer.info["summary"]) >= {"cooccurrence_weight", "cooccurrence_decay"}


def test_the_term_is_added_to_the_scores_and_saved(trained, tmp_path) -> None:
    _, scorer, data = trained
    mixed = scorer.detached()
    mixed.scoring.cooccurrence_weight, mixed.scoring.cooccurrence_decay = 0.4, 0.5
    mixed.fit(data)
    plain = scorer.detached()
    plain.scoring.cooccurrence_weight = 0.0
    plain.fit(data)
    hist = data.histories()[:30]
    knn = ItemKNNScorer(decay=0.5).fit(data)
    want = plain.score(hist) + 0.4 * knn.scaled_scores(hist).toarray()
    np.testing.assert_allclose(mixed.score(hist), want, rtol=1e-5, atol=1e-6)
    mixed.save(tmp_path / "m", data)
    loaded = load_model(tmp_path / "m").fit(data)
    assert (loaded.scoring.cooccurrence_weight, loaded.scoring.cooccurrence_decay) == (0.4, 0.5)
    np.testing.assert_array_equal(loaded.score(hist), mixed.score(hist))


def test_the_term_is_counted_once_on_the_training_log_and_mapped(trained, tmp_path) -> None:
    """The neighbour table is counted on the training log, saved with the model and
    memory-mapped: a bind to a grown log or a reordered catalogue does not count it again."""
    _, scorer, data = trained
    mixed = scorer.detached()
    mixed.scoring.cooccurrence_weight, mixed.scoring.cooccurrence_decay = 0.4, 0.5
    mixed.forget_cooccurrence()
    mixed.fit(data)
    mixed.save(tmp_path / "m", data)
    loaded = load_model(tmp_path / "m")
    assert not loaded.cooccurrence_table.data.flags.writeable  # mapped from the folder
    # two items with events that never co-occur, then five new users who take both
    sim = ItemKNNScorer().fit(data).similarity
    counts = data.events["item_id"].value_counts()
    rare = [data.item_index[i] for i in counts[(counts >= 2) & (counts <= 4)].index]
    a = rare[0]
    b = next(i for i in rare[1:] if sim[i, a] == 0 and sim[a, i] == 0)
    extra = pd.DataFrame(
        {
            "user_id": [f"new-{n}" for n in range(5) for _ in (0, 1)],
            "item_id": [data.item_ids[i] for _ in range(5) for i in (a, b)],
            "timestamp": [1e12 + n for n in range(10)],
        }
    )
    grown = data.with_events(pd.concat([data.events, extra], ignore_index=True))
    first = UserHistory("new-0", np.array([a]))  # a alone
    assert ItemKNNScorer().fit(grown).sparse_scores([first])[0, b] > 0  # counted afresh: found
    assert loaded.fit(grown).sparse_scores([first])[0, b] == 0  # the table: not counted again
    # the same catalogue in another order: each item keeps its scores
    order = np.arange(data.n_items)[::-1]
    reordered = Dataset(data.items.iloc[order].reset_index(drop=True), data.events, "reversed")
    users = data.user_ids[:20]
    before = mixed.sparse_scores(data.histories(users)).toarray()
    after = load_model(tmp_path / "m").fit(reordered).sparse_scores(reordered.histories(users))
    np.testing.assert_allclose(after.toarray()[:, ::-1], before, rtol=1e-6)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_lists_through_an_index_are_the_exact_top_of_the_mixed_scores(trained, kind) -> None:
    """The index ranks by vectors; the co-occurrence term is added to its top and to the items
    the term names, which gives the exact top of the mixed scores."""
    _, scorer, data = trained
    mixed = scorer.detached()
    mixed.scoring.cooccurrence_weight, mixed.scoring.cooccurrence_decay = 0.5, 0.7
    mixed.fit(data)  # fit applies a change of the term
    alone = scorer.detached()
    alone.scoring.cooccurrence_weight = 0.0
    alone.fit(data)
    # an HNSW graph with a wide beam: exact on this small catalogue
    config = IndexConfig(kind=kind, ef_search=2048 if kind == "hnsw" else None)
    rec = Recommender(scorer=mixed, index=config).fit(data)
    users = data.user_ids[:60]
    hist = data.histories(users)
    want, _ = top_k(mixed.score(hist), 10, exclude=[h.items for h in hist])
    got = rec.recommend(users, n=10)
    assert [list(r.item_ids) for r in got] == [list(data.item_ids[w]) for w in want]
    # with a filter: the top of the allowed items
    cheap = Filters(price_max=15)
    allowed = cheap.mask(data)
    assert allowed is not None and 0 < allowed.sum() < data.n_items
    want, _ = top_k(mixed.score(hist), 10, exclude=[h.items for h in hist], allowed=allowed)
    got_cheap = rec.recommend(users, n=10, filters=cheap)
    assert [list(r.item_ids) for r in got_cheap] == [
        [data.item_ids[i] for i in w if i >= 0] for w in want
    ]
    # the term moves lists: without it they differ for some users
    plain = Recommender(scorer=alone, index=config).fit(data).recommend(users, n=10)
    assert [r.item_ids for r in plain] != [r.item_ids for r in got]


# ------------------------------------------------------------------ new items
def test_new_item_settings_are_the_best_of_the_grid_on_validation(trained) -> None:
    _, scorer, data = trained
    choice = scorer.info["new_item_choice"]
    grid = choice["grid"]
    assert len(grid) == len(BORROWED_IDS) * len(NEW_ITEM_SCALES) * len(NEW_ITEM_TEXT_WEIGHTS)
    assert choice["ndcg10"] == max(g["ndcg10"] for g in grid)
    s = scorer.scoring
    assert (s.borrowed_ids, s.new_item_scale, s.new_item_text_weight) == (
        choice["borrowed_ids"],
        choice["scale"],
        choice["text_weight"],
    )
    assert choice["simulated_items"] == round(0.1 * scorer.has_id(data.item_ids).sum())
    assert choice["simulated_targets"] > 0

    # scaling new items up, or adding their text match, gives them more of the lists, and
    # costs the other targets
    def point(borrowed: int, scale: float, weight: float) -> dict:
        return next(
            g
            for g in grid
            if (g["borrowed_ids"], g["scale"], g["text_weight"]) == (borrowed, scale, weight)
        )

    plain = point(3, 1.0, 0.0)
    for more in (point(3, max(NEW_ITEM_SCALES), 0.0), point(3, 1.0, max(NEW_ITEM_TEXT_WEIGHTS))):
        assert more["new_share10"] > plain["new_share10"]
        assert more["ndcg10_others"] < plain["ndcg10_others"]
    # with no item scored as new, the model as it is: its validation NDCG@10 with the chosen
    # co-occurrence term (refit is off here, so the trained model is the early-stopped one)
    val = leave_last_out(data)["test"].sample(300, 0)
    probe = scorer.detached()
    probe.scoring.borrowed_ids, probe.scoring.new_item_scale = 0, 1.0
    probe.scoring.new_item_text_weight = 0.3  # the chooser scores its own settings
    alone = choose_new_items(probe.fit(val.fit), val, (0,), (1.0,), (0.0,), share=0.0)
    assert alone["grid"][0]["ndcg10"] == pytest.approx(
        scorer.info["summary"]["validation_ndcg10_with_cooccurrence"], abs=1e-6
    )


def test_new_items_are_scored_at_their_scale_and_it_is_saved(trained, tmp_path) -> None:
    _, scorer, data = trained
    plain = scorer.detached()
    plain.scoring.borrowed_ids, plain.scoring.new_item_scale = 0, 1.0
    plain.fit(data)
    scaled = scorer.detached()
    scaled.scoring.borrowed_ids, scaled.scoring.new_item_scale = 0, 1.5
    scaled.fit(data)
    lacking = ~scorer.has_id(data.item_ids)
    assert lacking.any() and (~lacking).any()
    np.testing.assert_allclose(scaled.item_vectors[lacking], 1.5 * plain.item_vectors[lacking])
    np.testing.assert_array_equal(scaled.item_vectors[~lacking], plain.item_vectors[~lacking])
    # explanations quote cosines: a scaled new item is as similar to the history as before
    user = next(h for h in data.histories() if len(h) >= 3)
    new_items = np.flatnonzero(lacking)[:3]
    labels = [str(i) for i in data.item_ids]
    why = [
        explain_items(user, new_items, s.item_vectors, data.item_ids, labels)
        for s in (plain, scaled)
    ]
    for a, b in zip(*why, strict=True):
        assert [r.similarity for r in a.because] == pytest.approx(
            [r.similarity for r in b.because], abs=1e-4
        )
        assert all(r.similarity <= 1.0 for r in b.because)
    scaled.save(tmp_path / "m", data)
    loaded = load_model(tmp_path / "m")
    assert (loaded.scoring.borrowed_ids, loaded.scoring.new_item_scale) == (0, 1.5)
    hist = data.histories()[:20]
    np.testing.assert_array_equal(loaded.fit(data).score(hist), scaled.score(hist))
    # a model written before the setting existed scores new items as it did: text alone, x1
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["new_items"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    older = load_model(tmp_path / "m")
    assert (older.scoring.borrowed_ids, older.scoring.new_item_scale) == (0, 1.0)
    np.testing.assert_array_equal(older.fit(data).score(hist), plain.score(hist))


def test_new_items_text_match_is_served_in_the_inner_product(trained, tmp_path) -> None:
    """An item without an id embedding adds weight x (the user's mean unit history text
    vector . its unit text vector minus the model's centre), as the trainer's simulation
    scores it; items with an id are scored as before; it survives saving, a catalogue change
    and an index."""
    _, scorer, data = trained
    plain = scorer.detached()
    plain.scoring.borrowed_ids, plain.scoring.new_item_scale = 3, 1.0
    plain.scoring.new_item_text_weight = 0.0
    plain.fit(data)
    matched = plain.detached()
    matched.scoring.new_item_text_weight = 0.3
    matched.fit(data)
    lacking = ~scorer.has_id(data.item_ids)
    hist = [h for h in data.histories() if len(h)][:40]
    before, after = plain.score(hist), matched.score(hist)
    match = (
        matched.history_text(hist)
        @ (normalise(matched.space.vectors[lacking]) - matched.text_centre).T
    )
    np.testing.assert_allclose(after[:, lacking], before[:, lacking] + 0.3 * match, atol=1e-5)
    np.testing.assert_allclose(after[:, ~lacking], before[:, ~lacking], atol=1e-6)
    assert np.abs(match).max() > 0.05  # the term moves new items' scores
    text_dim = matched.space.vectors.shape[1]
    assert matched.item_vectors.shape[1] == plain.item_vectors.shape[1] + text_dim
    # saved with its centre: loaded, and bound to an edited catalogue, it scores the same
    matched.save(tmp_path / "m", data)
    loaded = load_model(tmp_path / "m")
    assert loaded.scoring.new_item_text_weight == 0.3
    np.testing.assert_allclose(loaded.fit(data).score(hist), after, atol=1e-6)
    rows = pd.DataFrame([{"item_id": "new-1", "title": "Brand new nail polish", "price": 5.0}])
    edited, added = data.edited(rows)
    fast = loaded.edited(edited, added)
    full = load_model(tmp_path / "m").fit(edited)
    np.testing.assert_allclose(fast.score(hist), full.score(hist), rtol=1e-5, atol=1e-6)
    # settings changed since the bind: an edit binds the whole catalogue again, as fit would
    changed = loaded.detached()
    changed.scoring.new_item_text_weight = 0.0
    rebound = load_model(tmp_path / "m")
    rebound.scoring.new_item_text_weight = 0.0
    np.testing.assert_allclose(
        changed.edited(edited, added).score(hist),
        rebound.fit(edited).score(hist),
        rtol=1e-5,
        atol=1e-6,
    )
    # an HNSW graph (a wide beam: exact on this small catalogue) ranks the top of the scores
    rec = Recommender(scorer=loaded, index=IndexConfig(kind="hnsw", ef_search=2048)).fit(data)
    want, _ = top_k(after, 10, exclude=[h.items for h in hist])
    got = rec.recommend([h.user_id for h in hist], n=10)
    assert [list(r.item_ids) for r in got] == [list(data.item_ids[w]) for w in want]


def test_set_new_item_settings_skip_the_choice() -> None:
    config = TrainConfig(**SMALL, borrowed_ids=3, new_item_scale=1.2, new_item_text_weight=0)
    trainer = Trainer(config, progress=False)
    choice = trainer._choose_new_items(None, None, None, {}, None)  # type: ignore[arg-type]
    assert choice == {"borrowed_ids": 3, "scale": 1.2, "text_weight": 0.0}
    with pytest.raises(ValueError):
        TrainConfig(new_item_scale=0)
