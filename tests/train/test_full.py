"""Full mode: LoRA-tuning the language model on prompts, on a tiny real slice."""

from __future__ import annotations

import numpy as np
import pytest

from promptrec.data.dataset import Dataset
from promptrec.errors import ConfigError
from promptrec.train import TrainConfig
from promptrec.train.full import FullTrainer
from promptrec.train.trained import load_model


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
