"""Full mode: the language model tuned with LoRA on prompts and item texts, on a tiny real
slice of amazon-beauty."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.loaders import load_dataset
from promptrec.encoders import load_encoder
from promptrec.errors import ConfigError, ModelError
from promptrec.scorers import PromptScorer, TextSpace
from promptrec.train import TrainConfig, Trainer, full
from promptrec.train.full import FullMode, language_model, pair_loss
from promptrec.train.lm import ItemStates
from promptrec.train.load import load_model
from promptrec.train.queries import TrainingQueries

# a few steps of a small run: 2 epochs of 32 pairs
SMALL = {
    "mode": "full",
    "epochs": 2,
    "epoch_pairs": 32,
    "batch_size": 16,
    "num_negatives": 32,
    "validation_users": 24,
    "lora_r": 4,
}


@pytest.fixture(scope="module")
def tiny(beauty_slice) -> Dataset:
    users = beauty_slice.user_ids[:24]
    events = beauty_slice.events[beauty_slice.events["user_id"].isin(users)]
    items = beauty_slice.items[beauty_slice.items["item_id"].isin(set(events["item_id"]))]
    return Dataset(items, events, "tiny")


def _zero_shot(data: Dataset) -> PromptScorer:
    """The untuned model as a zero-shot scorer, as full mode computes (float32, every text
    truncated to 128 tokens)."""
    space = TextSpace(load_encoder(None, precision="fp32", max_tokens=128))
    return PromptScorer("recent", space, max_tokens=128).fit(data)


def test_the_split_encoder_encodes_as_the_model_does(tiny) -> None:
    """The lower layers' outputs kept per item, then the upper layers, give the vectors of the
    sentence-transformers model itself (before any update: LoRA starts at zero)."""
    enc = language_model(TrainConfig(**SMALL), "cpu")
    texts = list(TextSpace("default").fit(tiny).texts[:50])
    # sentence-transformers' own forward, in float32 (promptrec's encoder may use bf16)
    expected = enc.st.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(enc.encode_all(texts), expected, atol=1e-5)
    kept = ItemStates(enc, texts).all_vectors().numpy()
    np.testing.assert_allclose(kept, expected, atol=1e-3)  # kept in float16
    # only the upper layers carry LoRA
    tuned = {n.split(".layer.")[1].split(".")[0] for n in enc.tuned_state()}
    assert tuned == {"4", "5"}


def test_lora_training_moves_the_rankings_and_round_trips(tiny, tmp_path, monkeypatch) -> None:
    _scripted_validation(monkeypatch, [0.1, 0.2, 0.3])  # epoch 2 is kept
    scorer = Trainer(TrainConfig(**SMALL), progress=False).fit(tiny)
    assert scorer.info["summary"]["best_epoch"] == 2
    hist = tiny.histories()[:10]
    trained = scorer.score(hist)
    assert not np.allclose(trained, _zero_shot(tiny).score(hist), atol=1e-4)  # weights moved
    # the item vectors did not collapse onto one point (negatives are pushed away too)
    items = scorer.item_vectors
    cosines = items @ items.T
    assert cosines[np.triu_indices(len(items), 1)].std() > 0.05
    scorer.save(tmp_path / "m", tiny)
    assert (tmp_path / "m" / "encoder").is_dir()
    loaded = load_model(tmp_path / "m").fit(tiny)
    np.testing.assert_allclose(loaded.score(hist), trained, atol=1e-5)
    # a LoRA model saved by an earlier version (settings since removed) loads as it is
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["train_config"] |= {"peft_method": "lora", "prefix_tokens": 16, "refresh_steps": 50}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    np.testing.assert_allclose(load_model(tmp_path / "m").fit(tiny).score(hist), trained, atol=1e-5)


def test_tuning_that_does_not_help_keeps_the_untuned_model(tiny, tmp_path, monkeypatch) -> None:
    cfg = TrainConfig(**{**SMALL, "epochs": 3, "patience": 1})
    _scripted_validation(monkeypatch, [0.3, 0.2, 0.1])  # epoch 0 best; stops after epoch 1
    scorer = Trainer(cfg, progress=False).fit(tiny)
    assert scorer.info["summary"]["best_epoch"] == 0
    assert [e["epoch"] for e in scorer.info["validation"]] == [0, 1]
    hist = tiny.histories()[:10]
    np.testing.assert_allclose(scorer.score(hist), _zero_shot(tiny).score(hist), atol=1e-5)
    scorer.save(tmp_path / "m", tiny)
    loaded = load_model(tmp_path / "m").fit(tiny)
    np.testing.assert_allclose(loaded.score(hist), _zero_shot(tiny).score(hist), atol=1e-5)


def test_full_mode_resumes_an_interrupted_run(tiny, tmp_path, monkeypatch) -> None:
    users = tiny.user_ids[:12]
    events = tiny.events[tiny.events["user_id"].isin(users)]
    tiny = Dataset(tiny.items[tiny.items["item_id"].isin(set(events["item_id"]))], events, "t")
    cfg = TrainConfig(**{**SMALL, "validation_users": 12})
    hist = tiny.histories()[:10]
    whole = Trainer(cfg, checkpoint_dir=tmp_path / "a", progress=False).fit(tiny)

    validate = FullMode.validate
    calls = []

    def interrupted(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:  # epoch 0 (untuned), 1, then 2: before its checkpoint
            raise KeyboardInterrupt
        return validate(self)

    monkeypatch.setattr(FullMode, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, checkpoint_dir=tmp_path / "b", progress=False).fit(tiny)
    monkeypatch.setattr(FullMode, "validate", validate)
    resumed = Trainer(cfg, checkpoint_dir=tmp_path / "b", progress=False).fit(tiny)
    assert [e["epoch"] for e in resumed.info["validation"]] == [0, 1, 2]
    drop = ("seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed.info["validation"]] == [
        {k: v for k, v in e.items() if k not in drop} for e in whole.info["validation"]
    ]
    np.testing.assert_allclose(resumed.score(hist), whole.score(hist), atol=1e-5)

    # a checkpoint that cannot resume fails before the language model is even loaded
    monkeypatch.setattr(full, "language_model", lambda *a: pytest.fail("loaded"))
    other = TrainConfig(**{**cfg.model_dump(), "lora_r": 8})
    with pytest.raises(ConfigError, match="other settings"):
        Trainer(other, checkpoint_dir=tmp_path / "b", progress=False).fit(tiny)
    fewer = Dataset(tiny.items, tiny.events.iloc[1:], "t")  # the log changed since
    with pytest.raises(ConfigError, match="another log"):
        Trainer(cfg, checkpoint_dir=tmp_path / "b", progress=False).fit(fewer)


def test_full_mode_rejects_sampled_softmax_and_prefix_folders(tmp_path) -> None:
    with pytest.raises(ConfigError, match="softmax"):
        Trainer(TrainConfig(mode="full", loss="sampled-softmax"))
    with pytest.raises(ConfigError, match="tuned_layers"):
        language_model(TrainConfig(mode="full", tuned_layers=7), "cpu")
    import json

    folder = tmp_path / "old"
    folder.mkdir()
    config = {"format_version": 1, "kind": "lm-full", "peft_adapter": "prefix"}
    (folder / "config.json").write_text(json.dumps({**config, "train_config": {}}))
    with pytest.raises(ModelError, match="prefix-tuned"):
        load_model(folder)


def test_training_queries_come_from_the_log_else_from_the_target(tiny) -> None:
    queries = TrainingQueries(tiny.items)
    rng = np.random.default_rng(0)
    h = tiny.histories()[0]
    logged = UserHistory(h.user_id, h.items, queries=("first", "red lipstick", *h.queries[2:]))
    assert queries.for_target(logged, 1, rng) == "red lipstick"
    made = {queries.for_target(h, 1, rng) for _ in range(40)}
    title = queries.titles[int(h.items[1])].lower()
    category = str(tiny.items.iloc[int(h.items[1])]["categories"]).lower()
    assert len(made) > 1  # several kinds of query for one target
    for query in made:
        assert query and (query in title.replace(",", "") or query.split()[-1] in category)


def _scripted_validation(monkeypatch, values: list[float]) -> None:
    """Make early stopping see these validation NDCG@10 values, epoch 0 first (the real
    validation is exercised by the resume test)."""
    it = iter(values)
    monkeypatch.setattr(FullMode, "validate", lambda self: next(it))


def test_a_full_mode_step_improves_its_own_batch(tiny) -> None:
    """The loss of one batch falls when the model trains on it (gradients reach both towers)."""
    config = TrainConfig(**{**SMALL, "lr": 1e-3, "warmup_steps": 0})
    enc = language_model(config, "cpu")
    texts = TextSpace("default").fit(tiny).texts
    items = ItemStates(enc, texts)
    torch.manual_seed(0)
    hist = [h for h in tiny.histories() if len(h) >= 3][:16]
    prompts = [" ".join(texts[i][:40] for i in h.items[:-1]) for h in hist]
    targets = torch.tensor([int(h.items[-1]) for h in hist])
    drawn = torch.randint(0, len(items), (32,))
    optim = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    enc.train(True)
    losses = []
    for _ in range(8):
        vectors = items.vectors(torch.cat([targets, drawn]).numpy())
        loss = pair_loss(config, enc.encode(prompts), vectors[:16], targets, vectors[16:], drawn)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.1


def test_a_full_mode_model_recommends_in_another_shop(
    tiny, shared_data, tmp_path, cli, write_shop
) -> None:
    """Trained through the CLI on beauty products, it ranks video games (titles only, every
    item and user unknown to it) through text alone."""
    catalog, events = write_shop(tiny, tmp_path / "beauty")
    config = tmp_path / "small.json"
    config.write_text(json.dumps({k: v for k, v in SMALL.items() if k != "mode"} | {"epochs": 1}))
    model = tmp_path / "model"
    code, out, err = cli(
        ["train", "--catalog", str(catalog), "--events", str(events), "--output", str(model)]
        + ["--mode", "full", "--config", str(config)]
    )
    assert code == 0, err
    games = load_dataset(shared_data / "amazon-games")
    users = games.user_ids[:30]
    log = games.events[games.events["user_id"].isin(users)]
    other = Dataset(games.items[games.items["item_id"].isin(set(log["item_id"]))], log, "g")
    catalog, events = write_shop(other, tmp_path / "games")
    preds = tmp_path / "preds.jsonl"
    code, out, err = cli(
        ["recommend", "--catalog", str(catalog), "--events", str(events), "--all-users"]
        + ["-k", "10", "--output", str(preds), "--model", str(model)]
    )
    assert code == 0, err
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    seen = log.groupby("user_id")["item_id"].apply(set)
    assert len(lines) == 30
    for line in lines:
        assert len(line["items"]) == 10 and set(line["items"]) <= set(map(int, other.item_ids))
        assert not {str(i) for i in line["items"]} & seen[str(line["user_id"])]
