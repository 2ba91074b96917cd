"""Training settings, validated in one place (pydantic). Defaults were chosen on validation
splits (see README, "Fine-tuning"), never on test and never per data set."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the settings whose default depends on the mode. Fast mode's were chosen on amazon-beauty's
#: validation split (temperature 0.05: NDCG@10 after 12 epochs 0.0445, against 0.0437 at 0.1;
#: query_share 0.5: with the co-occurrence term 0.0716 against 0.0703, and 0.1319 against 0.1244
#: on movielens-100k's).
#: Full mode's on movielens-100k's: the untuned model's cosines spread so widely that at 0.05
#: its loss starts above that of scoring every item alike, and the model collapses there; its
#: learning rate decays linearly to zero over its ``epochs`` (docs/training.md, "Full mode").
MODE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "fast": {
        "lr": 2e-3,
        "batch_size": 128,
        "warmup_steps": 100,
        "temperature": 0.05,
        "patience": 10,
        "epochs": 200,
        "query_share": 0.5,
    },
    "full": {
        "lr": 2e-3,
        "batch_size": 64,
        "warmup_steps": 10,
        "temperature": 0.1,
        "patience": 3,
        "epochs": 6,
        "query_share": 0.5,
    },
}
#: fast mode's dropout (both towers), by whether the model has id embeddings. With them, 0.3
#: (movielens-100k validation NDCG@10 of the model alone, no refit: 0.1079 against 0.1037 at
#: 0). Without (``use_ids`` false: every item scored by its text alone), dropout on the item
#: tower's vectors (as history and as candidates) blurs the one thing that tells items apart,
#: and the model barely learns: validation NDCG@10 0.0898 at 0 against 0.0802 at 0.3 on
#: movielens-100k, 0.0399 against 0.0123 on amazon-beauty (docs/training.md, "Text only").
DROPOUT: dict[bool, float] = {True: 0.3, False: 0.0}


class TrainConfig(BaseModel):
    """Everything that defines a training run.

    Attributes:
        mode: ``fast`` (frozen language model, cached item text vectors, small trainable parts)
            or ``full`` (the language model itself tuned on prompts and item texts, with LoRA
            through ``peft``: :mod:`promptrec.train.full`).
        loss: ``softmax`` (full-catalogue InfoNCE), ``sampled-softmax`` (popularity-sampled
            negatives with logQ correction) or ``bce`` (the baseline: sigmoid(u . v) with
            sampled negatives).
        dim / layers / heads / max_len: the sequence user tower (history items used: the newest
            ``max_len``).
        dropout: dropout in both towers; left out, 0.3 with id embeddings, 0 without
            (:data:`DROPOUT`).
        use_ids / id_min_count: hybrid item tower: items with at least this many training
            interactions also get a learned id embedding.
        id_dropout: the share of items whose id embedding is left out, at each training step,
            where they are scored as candidates (the history keeps every id), so that the text
            path learns to score an item alone, as it must for a new item.
        lr / weight_decay / batch_size / warmup_steps / grad_clip: optimisation (AdamW,
            linear warm-up then constant, in full mode then down to zero; gradient norm
            clipping). ``lr``, ``batch_size``, ``warmup_steps``, ``epochs``, ``patience``,
            ``temperature`` and ``query_share`` left out take their mode's default
            (:data:`MODE_DEFAULTS`).
        epochs / patience: at most this many epochs (full mode: its learning rate decays
            linearly to zero at the last); stop when validation NDCG@10 has not
            improved for ``patience`` epochs; the best epoch's weights are kept. Patience 10
            (RecBole's ``stopping_step``): at 5, amazon-beauty's validation curve, noisy on its
            5,000-user sample and still rising, stopped one run at epoch 24 (0.049) where
            others went on to epoch 45-52 (0.054).
        similarity / temperature: cosine (unit vectors) or dot-product scores, divided by the
            temperature in the loss (left out: the mode's default).
        num_negatives: sampled negatives per step (see :mod:`promptrec.train.losses`): per
            position for ``bce`` (default 256), shared by the batch for ``sampled-softmax``
            (default 8192: on amazon-beauty's validation split, 256 scored NDCG@10 0.0388,
            2048 0.0505 and 8192 0.0573, against 0.0534 for the full softmax).
        sample_above: fast mode, catalogues of more items than this: each step runs the item
            tower on its batch's items alone (inputs, targets, negatives), and the ``softmax``
            loss is estimated by ``sampled-softmax`` (popularity-sampled negatives shared by
            the batch, with logQ correction), so that an epoch costs in proportion to the
            events rather than events x items (README, "Training at scale").
        precision: ``auto`` uses bf16 autocast where the hardware does bf16 natively (a GPU, or
            in fast mode a CPU with AVX512-BF16/AMX), fp32 elsewhere.
        cooccurrence_weight / cooccurrence_decay: item-item co-occurrence in the log (ItemKNN,
            the history weighted by recency with the decay) added to the model's scores at
            this weight (:class:`~promptrec.train.trained.TrainedScorer`). None (the default):
            chosen on the validation targets after early stopping, before the refit, from
            :data:`~promptrec.train.cooccurrence.COOCCURRENCE_WEIGHTS` x
            ``COOCCURRENCE_DECAYS``. On amazon-beauty's validation split it raised NDCG@10 of
            the early-stopped model from 0.050 to 0.059 and the share of the catalogue the
            lists show from 0.41 to 0.82 (``benchmarks/quality.py``, README).
        borrowed_ids / new_item_scale: how items without an id embedding (new to the model)
            are scored (:class:`~promptrec.train.trained.TrainedScorer`): their text vector
            plus the mean id embedding of this many trained items nearest by text (0: none),
            the scores multiplied by the scale (above 1: new items take more places in the
            lists, at a cost to the others). None (the default): chosen on the validation
            targets after early stopping, before the refit, with a seeded 10% of the items
            scored as new (:mod:`promptrec.train.new_items`), for the best NDCG@10 over all
            targets.
        new_item_text_weight: an item without an id embedding also scores, at this weight,
            the zero-shot match of its text with the user's history (the cosine of its text
            vector, centred on the catalogue's mean, with the mean text vector of the items
            the user interacted with; 0: none). None (the default): chosen with
            ``borrowed_ids`` and ``new_item_scale``. The grid of the three, with NDCG@10 on
            the new items' targets and the share of the lists they take, is kept with the
            model: a larger scale or weight is the way to show new items more (README, "New
            items").
        validation_users: validate on a seeded sample of at most this many users.
        refit: after early stopping, train again from scratch on the whole log (validation
            targets included) for the best number of epochs. On by default, chosen on
            validation: trained without the validation targets (early stopping on the
            interaction before), refitting scored the validation targets at NDCG@10 0.1028
            against 0.0971 on movielens-100k and 0.0512 against 0.0437 on amazon-beauty
            (``benchmarks/quality.py --target validation``).
        max_minutes: wall-clock cap on the whole run (None: none), a guard against runaway
            runs only: early stopping decides the result. At 55 minutes (the default before),
            a machine 2.3 times slower than this one stopped amazon-beauty's training, and its
            refit, at another epoch than here (28 minutes) and gave another model.
        seed: seeds torch, numpy and the sampling.
        encoder / item_template: the frozen text encoder and the item template.
        prompt_strategy: full mode only: the user prompt strategy the language model reads.
        tuned_layers: full mode only: LoRA updates the top this many layers of the language
            model (the lower ones stay frozen: item texts go through them once).
        lora_r / lora_alpha / lora_dropout: full mode's LoRA settings.
        epoch_pairs: full mode only: (prefix, next item) pairs per epoch, drawn in turn from a
            permutation of them all (every data set validates at the same cost).
        query_share: the share of training positions whose user carries a query (the log's
            search that led to the target, or one made from the target's text:
            :mod:`promptrec.train.queries`): in full mode rendered inside the prompt; in fast
            mode a copy of the position is added, its query's text vector added to the user
            vector through a query tower (0: no query tower, a live query goes through the
            item tower's projection as in models trained before).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["fast", "full"] = "fast"
    loss: Literal["softmax", "sampled-softmax", "bce"] = "softmax"
    dim: int = Field(64, ge=8, le=1024)
    layers: int = Field(2, ge=1, le=8)
    heads: int = Field(2, ge=1, le=16)
    max_len: int = Field(50, ge=2, le=512)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    use_ids: bool = True
    id_min_count: int = Field(2, ge=1)
    id_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    warmup_steps: int | None = Field(None, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    epochs: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    similarity: Literal["cosine", "dot"] = "cosine"
    temperature: float | None = Field(None, gt=0)
    num_negatives: int | None = Field(None, ge=1)
    sample_above: int = Field(50_000, ge=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    cooccurrence_weight: float | None = Field(None, ge=0)
    cooccurrence_decay: float | None = Field(None, gt=0, le=1)
    borrowed_ids: int | None = Field(None, ge=0, le=1000)
    new_item_scale: float | None = Field(None, gt=0, le=10)
    new_item_text_weight: float | None = Field(None, ge=0, le=10)
    validation_users: int | None = Field(5000, ge=1)
    refit: bool = True
    max_minutes: float | None = Field(180.0, gt=0)
    seed: int = 0
    encoder: str = "default"
    item_template: str | None = None
    prompt_strategy: str = "recent"
    tuned_layers: int = Field(2, ge=1, le=48)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    epoch_pairs: int = Field(3072, ge=1)
    query_share: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _mode_defaults(self) -> TrainConfig:
        """Settings left out take their mode's default (:data:`MODE_DEFAULTS`)."""
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.dropout is None:
            self.dropout = DROPOUT[self.use_ids]
        return self

    @property
    def negatives(self) -> int:
        """Sampled negatives per step: ``num_negatives``, else the loss's default."""
        if self.num_negatives is not None:
            return self.num_negatives
        if self.mode == "full":
            return 256
        return 256 if self.loss == "bce" else 8192


class ScoringConfig(BaseModel):
    """How a trained fast-mode model scores once trained: what the trainer chooses on
    validation after early stopping, saved with the model, and changeable without retraining
    (a served model's ``config.json``, or ``scorer.scoring`` in Python before ``fit``, which
    applies a change).

    Attributes:
        borrowed_ids: an item without an id embedding (new to the model, or too rare in
            training) borrows the mean id embedding of this many trained items nearest to it
            by text (0: its text alone).
        new_item_scale: an item without an id embedding has its scored vector multiplied by
            this (1: as it is; above 1: new items take more places in the lists, at a cost to
            the others). Chosen with ``borrowed_ids`` by :mod:`promptrec.train.new_items`.
        new_item_text_weight: an item without an id embedding adds, at this weight, the
            zero-shot match of its text with the user's history: the user's mean text vector
            of the history (unit length) . the item's unit text vector minus the catalogue's
            mean (0: none). Served in the same inner product: the user and item vectors gain
            the text vectors' dimensions (zeros for items with an id embedding). Chosen with
            the two above.
        cooccurrence_weight / cooccurrence_decay: item-item co-occurrence in the fitted log
            (ItemKNN, the history weighted by recency with the decay), each user's row scaled to
            [0, 1], added to the cosine scores at this weight (0: none). Chosen by
            :mod:`promptrec.train.cooccurrence`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    borrowed_ids: int = Field(0, ge=0)
    new_item_scale: float = Field(1.0, gt=0)
    new_item_text_weight: float = Field(0.0, ge=0)
    cooccurrence_weight: float = Field(0.0, ge=0)
    cooccurrence_decay: float = Field(1.0, gt=0, le=1)
