"""Full mode: the language model itself learns from behaviour, reading prompts.

Both towers are the same sentence encoder, tuned with LoRA (``peft``) on its upper
``tuned_layers`` layers (:mod:`promptrec.train.lm`): the user tower reads the user's prompt
(the configured prompt strategy over the history before the target), the item tower reads the
item's text. Training pairs are (the prompt of a history prefix, the next item); the loss is a
softmax over the whole catalogue (InfoNCE with a temperature) or the baseline BCE against
sampled items.

What makes it affordable on a CPU:

* the frozen lower layers' outputs of every item text are computed once
  (:class:`~promptrec.train.lm.ItemStates`): an item's vector costs the upper layers alone;
* the softmax's other items are ``num_negatives`` items drawn uniformly at random (256 by
  default; the batch's other targets are not used: they are drawn by popularity and, without a
  correction, teach the model to rank popular items down), all computed with the step's own
  weights and with gradients (negatives kept from earlier steps let the loss fall by the lag
  between old and new vectors, not by ranking: it did, and validation fell to zero; negatives
  without gradients let every item drift towards the prompts until all collapse);
* a prompt runs the lower layers without gradients, the upper ones with;
* an epoch is ``epoch_pairs`` (prefix, next item) pairs drawn from a permutation of them all,
  so every data set trains and validates at the same cost per epoch; the learning rate decays
  linearly to zero over ``epochs`` (6 by default), so a run's length is a number of pairs, not
  of minutes.

A ``query_share`` of the training prompts carry a query (the log's own search, or one made from
the target's category or title: :mod:`promptrec.train.queries`), so that the model learns how a
live query and a history combine.

:class:`FullMode` is full mode's strategy in the one trainer
(:class:`~promptrec.train.trainer.Trainer` with ``mode="full"``), whose loop
(:mod:`promptrec.train.loop`) stops early on validation NDCG@10 (full ranking), writes a
checkpoint of the tuned parameters after every epoch and resumes an interrupted run from it;
epoch 0, the language model untouched, is validated too and kept when no tuned epoch beats it.
LoRA is merged into plain weights when the model is saved: it loads like any
sentence-transformers encoder. It runs on a GPU when one is present (bf16 autocast there unless
``precision`` is ``fp32``; fp32 on a CPU unless ``precision`` is ``bf16``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import Split
from promptrec.encoders.base import Encoder
from promptrec.encoders.sentence_transformer import SentenceTransformerEncoder, default_model_path
from promptrec.errors import ConfigError, ModelError
from promptrec.evaluation.metrics import ndcg_at
from promptrec.prompts.users import PromptCatalog, PromptStrategy, get_strategy
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers.text import PromptScorer, TextSpace
from promptrec.train.checkpoints import seed_everything
from promptrec.train.config import TrainConfig
from promptrec.train.folder import FORMAT_VERSION, catalogue_fingerprint, log_fingerprint
from promptrec.train.lm import ItemStates, LayeredEncoder
from promptrec.train.loop import TrainingMode, autocast
from promptrec.train.optim import apply_step, warmup_schedule
from promptrec.train.queries import TrainingQueries
from promptrec.version import __version__

log = logging.getLogger("promptrec")
PROMPT_TOKENS = 128  # prompts and item texts are read up to this many tokens, in training and after
# peft drops BERT's token type ids (all zero for one-segment texts); it warns on every call
warnings.filterwarnings("ignore", message="Token type ids are not supported for parameter")
warnings.filterwarnings(
    "ignore", message=r"`past_key_values` is deprecated", category=FutureWarning
)


class TunedEncoder(SentenceTransformerEncoder):
    """The tuned sentence-transformers model as an :class:`Encoder`, in fp32 as the saved model
    scores once loaded: what a freshly trained full-mode model scores with."""

    def __init__(self, model: Any, name: str, device: str) -> None:
        self._adopt(model, device, "fp32")
        self.name = name


@dataclass
class _Reader:
    """How a history becomes the text the user tower reads, and which query a training pair
    carries."""

    strategy: PromptStrategy
    catalog: PromptCatalog
    count_tokens: Any
    queries: TrainingQueries
    query_share: float

    def prompts(self, histories: Sequence[UserHistory]) -> list[str]:
        return [
            self.strategy.build(h, self.catalog, self.count_tokens, PROMPT_TOKENS).text
            for h in histories
        ]

    def training_prompts(
        self, pairs: Sequence[tuple[UserHistory, int]], rng: np.random.Generator
    ) -> list[str]:
        """The prompts of (history, target position) pairs: the history before the target,
        with a query (:mod:`promptrec.train.queries`) for a ``query_share`` of them."""
        before = []
        for h, cut in pairs:
            query = None
            if self.query_share and rng.random() < self.query_share:
                query = self.queries.for_target(h, cut, rng)
            before.append(_history_before(h, cut).with_query(query))
        return self.prompts(before)


def language_model(config: TrainConfig, device: str) -> LayeredEncoder:
    """The configured sentence encoder, split for tuning: LoRA on its top ``tuned_layers``
    layers (:class:`~promptrec.train.lm.LayeredEncoder`)."""
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # "Loading weights", "Writing shards"
    path = default_model_path() if config.encoder in ("default", "minilm") else config.encoder
    try:
        st = SentenceTransformer(path, device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"full mode needs a sentence-transformers model: {exc}") from exc
    return LayeredEncoder(
        st,
        tuned_layers=config.tuned_layers,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        max_tokens=PROMPT_TOKENS,
        device=device,
    )


def pair_loss(
    config: TrainConfig,
    users: torch.Tensor,
    positives: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    drawn: torch.Tensor,
) -> torch.Tensor:
    """Each user's target against the items ``drawn`` uniformly at random: softmax (an
    estimate of the softmax over the whole catalogue), or BCE. Every vector is computed with
    this step's weights: a softmax whose negatives lag behind its positives is won by the lag,
    not by ranking. The batch's other targets are not negatives: they are drawn by popularity,
    and without a correction they teach the model to rank popular items down."""
    positive = (users * positives).sum(-1) / config.temperature  # [B]
    negative = (users @ negatives.T) / config.temperature  # [B, K]
    negative = negative.masked_fill(drawn[None] == targets[:, None], float("-inf"))
    if config.loss == "bce":
        return F.softplus(-positive).mean() + F.softplus(negative).mean()
    logits = torch.cat([positive[:, None], negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long, device=users.device))


class FullMode(TrainingMode):
    """Full mode on ``data``, validated on ``val``: LoRA on (prompt, next item) pairs (see the
    module docstring), as a :class:`~promptrec.train.loop.TrainingMode` of the one training
    loop. Epoch 0, the language model untouched (LoRA starts at zero), is validated and
    competes: tuning is kept only where validation shows that it helps.

    Args:
        config: settings (``mode="full"``; ``tuned_layers``, ``lora_*``, ``loss`` of
            ``softmax`` or ``bce``, ``temperature``, ``epoch_pairs``, ``num_negatives``,
            ``prompt_strategy``...).
        device / precision: resolved by the trainer (bf16: autocast in training).
    """

    validates_start = True

    def __init__(
        self, config: TrainConfig, data: Dataset, val: Split, *, device: str, precision: str
    ) -> None:
        cfg = self.config = config
        self.val, self.device, self.precision = val, device, precision
        gen = seed_everything(cfg.seed)
        self.enc = enc = language_model(cfg, device)
        space = TextSpace(None, cfg.item_template)
        language = space.prompter.language_of(data.items)
        template = space.prompter.resolve(data.items.columns, language)
        texts = space.prompter.texts(data.items, template)
        self.reader = _Reader(
            get_strategy(cfg.prompt_strategy),
            PromptCatalog.from_items(data.items, language),
            lambda text: len(enc.tokenizer(text, truncation=False, verbose=False)["input_ids"]),
            TrainingQueries(data.items),
            cfg.query_share,
        )
        histories = [h for h in val.fit.histories() if len(h) >= 2]
        if not histories:
            raise ConfigError("full mode needs users with at least 3 interactions")
        self.pairs = _pairs(histories)
        self.order = torch.randperm(len(self.pairs), generator=gen).numpy()
        log.info(
            "full mode: %d training pairs, %d per epoch; item texts through the %d lower "
            "layers once",
            len(self.pairs),
            min(cfg.epoch_pairs, len(self.pairs)),
            enc.split,
        )
        self.items = ItemStates(enc, texts)
        self.optim = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = warmup_schedule(
            self.optim, cfg.warmup_steps, cfg.epochs * _steps(cfg, self.pairs)
        )
        self.step = 0  # optimiser steps so far (the warm-up, and where the permutation stands)

    # ------------------------------------------------------------------ TrainingMode
    def train_epoch(self, epoch: int) -> float:
        """Train on the next ``epoch_pairs`` pairs of the permutation; the mean loss."""
        cfg, enc, items = self.config, self.enc, self.items
        enc.train(True)
        losses = []
        start = (self.step * cfg.batch_size) % len(self.order)
        chosen = np.resize(np.roll(self.order, -start), min(cfg.epoch_pairs, len(self.order)))
        rng = np.random.default_rng([cfg.seed, self.step])  # the same draws when resumed
        for b in range(0, len(chosen), cfg.batch_size):
            batch = [self.pairs[i] for i in chosen[b : b + cfg.batch_size]]
            prompts = self.reader.training_prompts(batch, rng)
            targets = torch.tensor([int(h.items[cut]) for h, cut in batch], device=self.device)
            drawn = torch.randint(0, len(items), (cfg.negatives,), device=self.device)
            with autocast(self.device, self.precision):
                users = enc.encode(prompts).float()
                # targets and negatives in one pass, both with gradients: without the
                # negatives' push, every item is pulled towards the prompts and all collapse
                unique, inverse = torch.unique(torch.cat([targets, drawn]), return_inverse=True)
                vectors = items.vectors(unique.cpu().numpy()).float()[inverse]
                positives, negatives = vectors[: len(targets)], vectors[len(targets) :]
                loss = pair_loss(cfg, users, positives, targets, negatives, drawn)
            apply_step(loss, self.optim, self.sched, enc.parameters(), cfg.grad_clip)
            self.step += 1
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else 0.0

    def validate(self) -> float:
        enc = self.enc
        with torch.no_grad(), enc.evaluating(), autocast(self.device, self.precision):
            bank = self.items.all_vectors().float().cpu().numpy()
        val = self.val
        users = enc.encode_all(self.reader.prompts(val.histories), batch_size=128)
        ranks = target_ranks(users @ bank.T, val.targets, [h.items for h in val.histories])
        return ndcg_at(ranks, 10)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.enc.tuned_state()

    def load_weights(self, weights: dict[str, torch.Tensor] | None) -> None:
        if weights is None:
            log.warning(
                "tuning did not improve validation NDCG@10 on the untuned model: the untuned "
                "model is kept"
            )
            weights = {k: torch.zeros_like(v) for k, v in self.enc.tuned_state().items()}
        self.enc.load_tuned_state(weights)

    def state(self) -> dict[str, Any]:
        return {
            "tuned": self.enc.tuned_state(),
            "optim": self.optim.state_dict(),
            "sched": self.sched.state_dict(),
            "step": self.step,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.enc.load_tuned_state(state["tuned"])
        self.optim.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.step = int(state["step"])

    def scorer(self) -> FullTunedScorer:
        """The tuned model as it stands (the best epoch's weights: the loop put them back),
        LoRA merged, scored through prompts (not yet fitted; the trainer sets its ``info``)."""
        st = self.enc.merged()
        tuned = TunedEncoder(st, f"full:{self.config.encoder}:lora", self.device)
        return FullTunedScorer(tuned, self.config, {})


#: full-mode settings of earlier versions, ignored in the models they saved
_REMOVED_SETTINGS = ("peft_method", "prefix_tokens", "refresh_steps")


def _steps(cfg: TrainConfig, pairs: Sequence[object]) -> int:
    """Optimiser steps per epoch."""
    return -(-min(cfg.epoch_pairs, len(pairs)) // cfg.batch_size)


def _pairs(histories: Sequence[UserHistory]) -> list[tuple[UserHistory, int]]:
    """Every (history, position of a target) with at least one item before it."""
    return [(h, cut) for h in histories for cut in range(1, len(h))]


def _history_before(h: UserHistory, cut: int) -> UserHistory:
    """The history before position ``cut`` (the target)."""
    return UserHistory(
        h.user_id,
        h.items[:cut],
        h.events[:cut],
        h.values[:cut],
        h.timestamps[:cut],
        h.queries[:cut],
    )


class FullTunedScorer(PromptScorer):
    """A prompt strategy scored with the tuned language model."""

    def __init__(self, encoder: Encoder, config: TrainConfig, info: dict[str, Any]) -> None:
        super().__init__(
            config.prompt_strategy,
            TextSpace(encoder, config.item_template),
            max_tokens=PROMPT_TOKENS,
        )
        self.name = "trained-full"  # type: ignore[misc]
        self.config_ = config
        self.info = info

    def save(self, directory: str | Path, data: Dataset | None = None) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.space.encoder.model.save(str(out / "encoder"))  # type: ignore[attr-defined]
        config = {
            "format_version": FORMAT_VERSION,
            "promptrec_version": __version__,
            "kind": "lm-full",
            "train_config": self.config_.model_dump(),
            "fingerprint": catalogue_fingerprint(data) if data is not None else None,
            "train_log": log_fingerprint(data) if data is not None else None,
            **self.info,
        }
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
        return out

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any]) -> FullTunedScorer:
        from promptrec.encoders import load_encoder

        if config.get("peft_adapter"):
            raise ModelError(
                f"{directory}: a prefix-tuned model, which this promptrec no longer reads "
                "(prefix tuning never improved on the untuned model); retrain it with "
                "`promptrec train --mode full`"
            )
        # a LoRA model saved before those settings were removed loads as it is (its LoRA was
        # merged into the saved encoder)
        settings = config["train_config"]
        cfg = TrainConfig(**{k: v for k, v in settings.items() if k not in _REMOVED_SETTINGS})
        # fp32 as in training, so that a saved model scores exactly as the trained one
        enc = load_encoder(str(Path(directory) / "encoder"), cache=False, precision="fp32")
        info = {k: config[k] for k in ("validation", "summary", "train_log") if k in config}
        return cls(enc, cfg, info)
