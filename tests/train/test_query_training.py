"""Fast mode trained on queries: the queries each item offers, the log's own searches, the
positions that carry one, and a trained model whose query tower makes a query count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import leave_last_out
from promptrec.evaluation.metrics import ndcg_at
from promptrec.evaluation.queries import category_queries, with_queries
from promptrec.prompts.items import category_levels, field_values
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers import TextSpace
from promptrec.train import TrainConfig, Trainer
from promptrec.train.load import load_model
from promptrec.train.queries import QueryBank
from promptrec.train.sequences import target_values, training_windows

SMALL = dict(
    dim=32,
    layers=1,
    heads=2,
    max_len=20,
    epochs=8,
    patience=10,
    batch_size=64,
    warmup_steps=5,
    refit=False,
    validation_users=300,
    cooccurrence_weight=0.0,
    borrowed_ids=0,
    new_item_scale=1.0,
    new_item_text_weight=0.0,
)


def _fake_encode(strings: list[str]) -> np.ndarray:
    return np.ones((len(strings), 4), dtype=np.float32)


def test_every_item_offers_its_categories_and_title_words(beauty_slice) -> None:
    histories = beauty_slice.histories()
    bank = QueryBank(beauty_slice, _fake_encode, histories, title_windows=2, seed=0)
    paths = field_values(beauty_slice.items, "category")
    for item in range(0, beauty_slice.n_items, 37):
        offered = {bank.strings[r] for r in bank.options[bank.indptr[item] : bank.indptr[item + 1]]}
        levels = [level.lower() for level in category_levels(paths[item])]
        assert levels[-1] in offered
        assert len(offered) >= 2  # the deepest category and at least one window of the title
    assert bank.vectors.shape == (len(bank.strings), 4)
    # no search in this log: no position has a logged one
    assert all((row == -1).all() for row in bank.logged)


def test_a_logged_search_is_the_query_of_its_event(beauty_slice) -> None:
    events = beauty_slice.events.copy()
    events["query"] = None
    events.loc[events.index[::3], "query"] = " Red Lipstick "
    data = Dataset(beauty_slice.items, events, "with-searches")
    histories = data.histories()
    bank = QueryBank(data, _fake_encode, histories, seed=0)
    row = bank.strings.index("red lipstick") if "red lipstick" in bank.strings else None
    row = bank.strings.index("Red Lipstick") if row is None else row
    searched = np.concatenate(bank.logged)
    assert (searched == row).sum() == len(events.index[::3])
    # laid out as the training targets: each target's own search
    values = target_values(bank.logged, histories, 20)
    _, targets = training_windows(histories, 20)
    assert values.shape == targets.shape
    assert ((values >= 0) <= (targets >= 0)).all()  # no search on padding
    gen = torch.Generator().manual_seed(0)
    valid = targets >= 0
    tgt, logged = torch.from_numpy(targets[valid]), torch.from_numpy(values[valid])
    none = bank.draw(tgt, logged, 0.0, gen)
    assert (none == -1).all()
    every = bank.draw(tgt, logged, 1.0, gen)
    assert (every[logged >= 0] == row).all()  # the logged search wins over a made one
    made = every[logged < 0]
    assert (made >= 0).all()  # every beauty item offers a query of its own
    for target, chosen in zip(tgt[logged < 0][:200], made[:200], strict=True):
        start, end = bank.indptr[target], bank.indptr[target + 1]
        assert chosen in bank.options[start:end]
    half = bank.draw(tgt, logged, 0.5, gen)
    assert 0.4 < float((half >= 0).float().mean()) < 0.6


def _query_ndcg(scorer, split) -> tuple[float, float]:
    """NDCG@10 of ``split``'s targets with their queries and without."""
    out = []
    for histories in (split.histories, [h.with_query(None) for h in split.histories]):
        scores = scorer.score(histories)
        ranks = target_ranks(scores, split.targets, [h.items for h in histories])
        out.append(ndcg_at(ranks, 10))
    return out[0], out[1]


@pytest.fixture(scope="module")
def query_trained(beauty_slice, encoder):
    data = leave_last_out(beauty_slice)["test"].fit
    space = TextSpace(encoder)
    with_q = Trainer(TrainConfig(**SMALL, query_share=0.5), space=space, progress=False).fit(data)
    without = Trainer(TrainConfig(**SMALL, query_share=0.0), space=space, progress=False).fit(data)
    return data, with_q, without


def test_a_model_trained_on_queries_answers_them(query_trained, beauty_slice) -> None:
    data, with_q, without = query_trained
    assert with_q.model.queries is not None and without.model.queries is None
    # the learned scale moved from its start (1): training decided how much a query counts
    assert abs(float(with_q.model.queries.scale.detach()) - 1.0) > 0.01
    split, _ = with_queries(leave_last_out(beauty_slice)["test"], category_queries(beauty_slice))
    asked, plain = _query_ndcg(with_q.fit(data), split)
    asked_untrained, _ = _query_ndcg(without.fit(data), split)
    assert asked > 1.5 * plain  # the query carries the target's category
    assert asked > asked_untrained  # and the model that learned queries uses it better


def test_the_query_tower_is_saved_and_old_models_load(query_trained, tmp_path) -> None:
    data, with_q, without = query_trained
    histories = [h.with_query("nail polish") for h in data.histories()[:20]]
    for scorer, name in ((with_q, "queries"), (without, "plain")):
        scorer.save(tmp_path / name, data)
        loaded = load_model(tmp_path / name).fit(data)
        np.testing.assert_allclose(loaded.score(histories), scorer.score(histories), atol=1e-5)
    assert load_model(tmp_path / "plain").model.queries is None  # a model of before: none


def test_a_query_needs_no_history(query_trained) -> None:
    data, with_q, _ = query_trained
    cold = UserHistory("new", np.zeros(0, dtype=np.int64), query="nail polish")
    top = np.argsort(-with_q.fit(data).score([cold])[0])[:10]
    paths = field_values(data.items, "category")
    nails = [any("nail" in level.lower() for level in category_levels(paths[i])) for i in top]
    assert sum(nails) >= 7


def test_a_model_trained_on_queries_is_served_at_its_learned_weight(query_trained) -> None:
    from promptrec import Recommender
    from promptrec.scorers.query import QueryMix

    data, with_q, without = query_trained
    mix = QueryMix()
    for scorer, weight in ((with_q, mix.learned_query_weight), (without, mix.query_weight)):
        rec = Recommender(scorer=scorer, query_mix=mix).fit(data)
        [listed] = rec.recommend([data.user_ids[0]], n=5, query="nail polish")
        assert len(listed.items) == 5
        assert scorer.query_weight == weight
