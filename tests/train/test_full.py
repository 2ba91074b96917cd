"""Full mode: tuning the language model on prompts (LoRA, prefix tuning), on a tiny real slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptrec.data.dataset import Dataset
from promptrec.errors import ConfigError, ModelError
from promptrec.train import TrainConfig
from promptrec.train.full import FullTrainer
from promptrec.train.load import load_model


@pytest.fixture(scope="module")
def tiny(beauty_slice) -> Dataset:
    users = beauty_slice.user_ids[:40]
    events = beauty_slice.events[beauty_slice.events["user_id"].isin(users)]
    items = beauty_slice.items[beauty_slice.items["item_id"].isin(set(events["item_id"]))]
    return Dataset(items, events, "tiny")


def test_lora_training_changes_rankings_and_round_trips(tiny, tmp_path) -> None:
    cfg = TrainConfig(
        mode="full", epochs=2, batch_size=16, lr=5e-4, patience=5, validation_users=40, lora_r=4
    )
    trainer = FullTrainer(cfg, progress=False)
    scorer = trainer.fit(tiny)
    summary = scorer.info["summary"]
    assert summary["best_epoch"] >= 1 and len(scorer.info["validation"]) >= 1
    hist = tiny.histories()[:10]
    trained_scores = scorer.score(hist)
    # the zero-shot encoder ranks differently: the weights really moved
    from promptrec.scorers import PromptScorer, TextSpace

    base = PromptScorer("recent", TextSpace("default"), max_tokens=128).fit(tiny)
    assert not np.allclose(trained_scores, base.score(hist), atol=1e-4)
    scorer.save(tmp_path / "m", tiny)
    assert (tmp_path / "m" / "encoder").is_dir()
    loaded = load_model(tmp_path / "m").fit(tiny)
    np.testing.assert_allclose(loaded.score(hist), trained_scores, atol=1e-5)


def test_full_mode_rejects_sampled_softmax() -> None:
    with pytest.raises(ConfigError, match="in-batch"):
        FullTrainer(TrainConfig(mode="full", loss="sampled-softmax"))


# a small prefix-tuning run (4 soft-prompt tokens, 2 epochs)
PREFIX = {
    "mode": "full",
    "peft_method": "prefix",
    "prefix_tokens": 4,
    "epochs": 2,
    "batch_size": 16,
    "lr": 1e-2,
    "validation_users": 40,
}


def _scripted_validation(monkeypatch, values: list[float]) -> None:
    """Make early stopping see these validation NDCG@10 values, epoch 0 first (the real
    validation is exercised by the LoRA and resume tests)."""
    it = iter(values)
    monkeypatch.setattr(FullTrainer, "_validate", lambda self, *args: next(it))


def test_prefix_tuning_tunes_soft_tokens_only_and_round_trips(tiny, tmp_path, monkeypatch) -> None:
    from promptrec.scorers import PromptScorer, TextSpace
    from promptrec.train.checkpoints import seed_everything
    from promptrec.train.full import tuned_weights

    cfg = TrainConfig(**PREFIX)
    trainer = FullTrainer(cfg, progress=False)
    seed_everything(cfg.seed)
    untuned = trainer._model()
    start = tuned_weights(untuned.model)
    assert start and all("prompt_encoder" in n for n in start)  # the language model is frozen
    _scripted_validation(monkeypatch, [0.1, 0.2, 0.3])  # epoch 2 is kept
    scorer = trainer.fit(tiny)
    assert scorer.info["summary"]["best_epoch"] == 2
    moved = tuned_weights(scorer.space.encoder.model)
    assert moved.keys() == start.keys()
    assert not all(torch.allclose(moved[k], start[k]) for k in start)  # the prefix learned
    hist = tiny.histories()[:10]
    trained_scores = scorer.score(hist)
    base = PromptScorer("recent", TextSpace("default"), max_tokens=128).fit(tiny)
    assert not np.allclose(trained_scores, base.score(hist), atol=1e-4)

    scorer.save(tmp_path / "m", tiny)
    assert (tmp_path / "m" / "prefix" / "adapter_config.json").is_file()
    # the saved encoder is the untouched base model: the prefix alone carries the training
    saved_base = PromptScorer(
        "recent", TextSpace(str(tmp_path / "m" / "encoder")), max_tokens=128
    ).fit(tiny)
    np.testing.assert_allclose(saved_base.score(hist), base.score(hist), atol=2e-2)
    loaded = load_model(tmp_path / "m").fit(tiny)
    np.testing.assert_allclose(loaded.score(hist), trained_scores, atol=1e-5)

    (tmp_path / "m" / "prefix" / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match="prefix-tuned model needs"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    "method", [{"lora_r": 4, "lr": 5e-3}, {k: v for k, v in PREFIX.items() if k != "epochs"}]
)
def test_tuning_that_does_not_help_keeps_the_untuned_model(
    tiny, tmp_path, monkeypatch, method
) -> None:
    from promptrec.encoders.sentence_transformer import SentenceTransformerEncoder
    from promptrec.scorers import PromptScorer, TextSpace

    cfg = TrainConfig(**{"mode": "full", "batch_size": 16, **method, "epochs": 3, "patience": 1})
    _scripted_validation(monkeypatch, [0.3, 0.2, 0.1])  # epoch 0 best; stops after epoch 1
    scorer = FullTrainer(cfg, progress=False).fit(tiny)
    assert scorer.info["summary"]["best_epoch"] == 0
    assert [e["epoch"] for e in scorer.info["validation"]] == [0, 1]
    hist = tiny.histories()[:10]
    zero_shot = PromptScorer(
        "recent",
        TextSpace(SentenceTransformerEncoder(precision="fp32", max_tokens=128)),
        max_tokens=128,
    ).fit(tiny)
    # the untuned model is the language model itself: no LoRA update, no (random) prefix
    np.testing.assert_allclose(scorer.score(hist), zero_shot.score(hist), atol=1e-5)
    scorer.save(tmp_path / "m", tiny)
    assert not (tmp_path / "m" / "prefix").exists()
    loaded = load_model(tmp_path / "m").fit(tiny)
    np.testing.assert_allclose(loaded.score(hist), zero_shot.score(hist), atol=1e-5)


def test_full_mode_resumes_an_interrupted_run(tiny, tmp_path, monkeypatch) -> None:
    users = tiny.user_ids[:20]
    events = tiny.events[tiny.events["user_id"].isin(users)]
    tiny = Dataset(tiny.items[tiny.items["item_id"].isin(set(events["item_id"]))], events, "t")
    cfg = TrainConfig(**{**PREFIX, "validation_users": 20})
    hist = tiny.histories()[:10]
    whole = FullTrainer(cfg, checkpoint_dir=tmp_path / "a", progress=False).fit(tiny)

    validate = FullTrainer._validate
    calls = []

    def interrupted(self, *args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:  # epoch 0 (untuned), 1, then 2: before its checkpoint
            raise KeyboardInterrupt
        return validate(self, *args)

    monkeypatch.setattr(FullTrainer, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FullTrainer(cfg, checkpoint_dir=tmp_path / "b", progress=False).fit(tiny)
    monkeypatch.setattr(FullTrainer, "_validate", validate)
    resumed = FullTrainer(cfg, checkpoint_dir=tmp_path / "b", progress=False).fit(tiny)
    assert [e["epoch"] for e in resumed.info["validation"]] == [0, 1, 2]
    assert resumed.info["validation"] == whole.info["validation"]
    np.testing.assert_allclose(resumed.score(hist), whole.score(hist), atol=1e-5)

    other = TrainConfig(**{**cfg.model_dump(), "prefix_tokens": 8})
    with pytest.raises(ConfigError, match="other settings"):
        FullTrainer(other, checkpoint_dir=tmp_path / "b", progress=False).fit(tiny)
    fewer = Dataset(tiny.items, tiny.events.iloc[1:], "t")  # the log changed since
    with pytest.raises(ConfigError, match="another log"):
        FullTrainer(cfg, checkpoint_dir=tmp_path / "b", progress=False).fit(fewer)
