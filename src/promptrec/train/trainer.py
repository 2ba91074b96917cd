"""The trainer of both modes: one entry, one loop, each mode a strategy inside it.

:class:`Trainer` takes the validation split from the given log by the protocol's rule (each
user's last interaction, users with at least 3, is the validation target and is held out of
training; nothing else is: test targets, when there are any, were removed by the caller with
``leave_last_out(data)["test"].fit``), resolves device and precision, and runs the mode's
epochs in the one :class:`~promptrec.train.loop.EpochLoop` (early stopping on validation
NDCG@10, checkpoints and resume, the wall-clock guard). Then, per mode:

* ``fast`` (:class:`~promptrec.train.fast.FastMode`): the item co-occurrence term and how new
  items are scored are chosen on validation with the early-stopped model, which is then
  refitted on the whole log for the best number of epochs;
* ``full`` (:class:`~promptrec.train.full.FullMode`): the language model's best epoch (epoch 0,
  the untuned model, competes) is merged and scored through prompts.

A fast-mode model given as ``init_from`` is warm-started (:mod:`promptrec.train.warm`): its
weights, a fresh validation split, its scoring settings kept.

Both write the same summary (best epoch, validation NDCG@10, validation users, seconds, refit)
and the log of every epoch in the model's ``config.json``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from promptrec.data.dataset import Dataset
from promptrec.data.split import Split, leave_last_out
from promptrec.errors import ConfigError
from promptrec.scorers.base import Scorer
from promptrec.scorers.popularity import item_counts
from promptrec.scorers.text import TextSpace
from promptrec.train.checkpoints import check_checkpoint
from promptrec.train.config import ScoringConfig, TrainConfig
from promptrec.train.cooccurrence import (
    COOCCURRENCE_DECAYS,
    COOCCURRENCE_WEIGHTS,
    choose_cooccurrence,
)
from promptrec.train.fast import FastMode, QueryVectors
from promptrec.train.folder import log_fingerprint
from promptrec.train.loop import EpochLoop, TrainState, resolve_device, resolve_precision
from promptrec.train.model import TwoTowerModel
from promptrec.train.new_items import (
    BORROWED_IDS,
    NEW_ITEM_SCALES,
    NEW_ITEM_TEXT_WEIGHTS,
    choose_new_items,
    describe,
)
from promptrec.train.trained import TrainedScorer
from promptrec.train.warm import (
    SCORING_SETTINGS,
    check_catalogue,
    fit_without_targets,
    fresh_validation,
    given_scoring,
    start_key,
    starting_model,
    trained_until,
    warm_config,
    warm_weights,
)

log = logging.getLogger("promptrec")


def chosen_score(choice: dict[str, Any]) -> dict[str, Any]:
    """The summary's record of a co-occurrence choice made on validation (none when the
    config gave the weight and decay)."""
    return {"validation_ndcg10_with_cooccurrence": choice["ndcg10"]} if "ndcg10" in choice else {}


class Trainer:
    """Train a model in the configured mode (``config.mode``: ``fast`` or ``full``).

    Args:
        config: the settings (defaults are the validated ones).
        space: fast mode: a fitted-or-not :class:`TextSpace` to share item text vectors.
        checkpoint_dir: write a checkpoint after every epoch here, and resume from it.
        progress: show progress bars (loss and validation NDCG@10).
        device: ``cpu``, ``cuda``...; None picks a GPU when there is one.
        init_from: a fast-mode model to warm-start from (see :mod:`promptrec.train.warm`;
            ``config`` then comes from :func:`~promptrec.train.warm.warm_config`, and left
            out is the old model's).

    Example::

        scorer = Trainer(TrainConfig(mode="full")).fit(data)
        scorer.save("model/", data)
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        *,
        space: TextSpace | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        device: str | None = None,
        init_from: Scorer | None = None,
    ) -> None:
        self.init_from = None if init_from is None else starting_model(init_from)
        if config is None and self.init_from is not None:
            config = warm_config(self.init_from.config_, {})
        self.config = config or TrainConfig()
        cfg = self.config
        if self.init_from is not None:
            if cfg.mode != "fast":
                raise ConfigError("a warm start trains fast mode (full mode: from scratch)")
            # its encoder and template; a copy, so that fitting it leaves the old model's alone
            space = space or copy.copy(self.init_from.space)
        if cfg.mode == "fast" and cfg.dim % cfg.heads:
            raise ConfigError(f"dim {cfg.dim} must be a multiple of heads {cfg.heads}")
        if cfg.mode == "full" and cfg.loss == "sampled-softmax":
            raise ConfigError("full mode trains with loss softmax (every item) or bce")
        self._space = space
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.state = TrainState()
        self.device = resolve_device(device)
        # full mode's language model on a CPU was measured in fp32 only: bf16 there is asked
        # for by name (precision="bf16"), not taken by "auto"
        self.precision = resolve_precision(cfg.precision, self.device, cfg.mode == "fast")
        #: fast mode: training queries' text vectors by query, encoded once for both runs
        self._encoded_queries: QueryVectors = {}
        self.sampled = False

    @property
    def space(self) -> TextSpace:
        """Fast mode's item text vectors (built at first use: full mode's language model reads
        the texts itself)."""
        if self._space is None:
            self._space = TextSpace(self.config.encoder, self.config.item_template)
        return self._space

    def _validation(self, data: Dataset, val: Split | None = None) -> Split:
        """The validation split of ``data`` (the log's last item per user is the target; or
        ``val``, a part of it), on a seeded sample of at most ``validation_users`` users."""
        if val is None:
            val = leave_last_out(data)["test"]
        if not val.histories:
            raise ConfigError("no user has 3 interactions: nothing to validate on")
        return val.sample(self.config.validation_users, self.config.seed)

    def _summary(self, data: Dataset, val: Split, start: float, refit: bool) -> dict[str, Any]:
        return {
            "best_epoch": self.state.best_epoch,
            "validation_ndcg10": round(self.state.best_ndcg10, 6),
            "validation_users": len(val.histories),
            "train_seconds": round(time.perf_counter() - start, 1),
            "refit": refit,
            # what a warm start from this model validates after (warm.fresh_validation)
            "trained_until": trained_until(data),
        }

    # ------------------------------------------------------------------ public
    def fit(self, data: Dataset) -> Scorer:
        """Train on ``data`` with its own validation split; return the trained scorer (fast
        mode: :class:`TrainedScorer`, refitted; full mode:
        :class:`~promptrec.train.full.FullTunedScorer`)."""
        # a checkpoint resumes only on the same log (and, warm, from the same model)
        warm = "" if self.init_from is None else f"+warm:{start_key(self.init_from)}"
        self._data_key = log_fingerprint(data) + warm
        check_checkpoint(self.checkpoint_dir, self.config, self._data_key)  # before the set-up
        if self.init_from is not None:
            return self._fit_warm(data, self.init_from)
        if self.config.mode == "full":
            return self._fit_full(data)
        return self._fit_fast(data)

    def _fit_full(self, data: Dataset) -> Scorer:
        from promptrec.train.full import FullMode  # the language model's libraries: only here

        t0 = time.perf_counter()
        val = self._validation(data)
        mode = FullMode(self.config, data, val, device=self.device, precision=self.precision)
        self.state = self._loop().run(mode, epochs=int(self.config.epochs), start=t0)
        scorer = mode.scorer()
        summary = self._summary(data, val, t0, refit=False)
        summary["training_pairs"] = len(mode.pairs)
        scorer.info = {"summary": summary, "validation": self._history()}
        return scorer.fit(data)

    def _history(self) -> list[dict[str, Any]]:
        return [vars(e) for e in self.state.history]

    def _fit_fast(self, data: Dataset) -> TrainedScorer:
        cfg = self.config
        t0 = time.perf_counter()
        self.space.fit(data, progress=self.progress)
        val = self._validation(data)
        model, id_mask = self._train(val.fit, val, epochs=int(cfg.epochs), start=t0)
        best = self.state.best_epoch
        scoring, choices = self._choose_scoring(model, id_mask, val, data)
        refit = bool(cfg.refit and best > 0)
        if refit:
            log.info("refit on the whole log for %d epochs", best)
            model, id_mask = self._train(data, None, epochs=best, start=time.perf_counter())
        summary = {**self._summary(data, val, t0, refit), **choices.pop("summary")}
        info = {"summary": summary, "validation": self._history(), **choices}
        scorer = TrainedScorer(model, cfg, list(data.item_ids), id_mask, self.space, info)
        scorer.scoring = scoring
        return scorer.fit(data)

    def _choose_scoring(
        self, model: TwoTowerModel, id_mask: np.ndarray, val: Split, data: Dataset
    ) -> tuple[ScoringConfig, dict[str, Any]]:
        """The scoring settings of the early-stopped ``model``: the co-occurrence term's and
        the new items', each the config's or chosen on ``val``; and what the choices saw (the
        model's ``info``: a ``summary`` part and each choice's record)."""
        choice = self._choose_cooccurrence(model, id_mask, val)
        untouched = item_counts(data) == 0
        new_items = self._choose_new_items(model, id_mask, val, choice, untouched)
        scoring = ScoringConfig(
            cooccurrence_weight=choice["weight"],
            cooccurrence_decay=choice["decay"],
            borrowed_ids=new_items["borrowed_ids"],
            new_item_scale=new_items["scale"],
            new_item_text_weight=new_items["text_weight"],
        )
        summary: dict[str, Any] = {
            "cooccurrence_weight": choice["weight"],
            "cooccurrence_decay": choice["decay"],
            **chosen_score(choice),
        }
        summary.update(
            borrowed_ids=scoring.borrowed_ids,
            new_item_scale=scoring.new_item_scale,
            new_item_text_weight=scoring.new_item_text_weight,
        )
        return scoring, {
            "summary": summary,
            "cooccurrence_choice": choice,
            "new_item_choice": new_items,
        }

    def _fit_warm(self, data: Dataset, old: TrainedScorer) -> TrainedScorer:
        """Fast mode from ``old``'s weights, validated on the users with an event newer than
        its log, its validated epochs trained on the log less their targets alone, refitted
        on the whole log from the same start; the co-occurrence weight and decay chosen again
        on that validation split, ``old``'s new-item settings (those given in the config
        overriding them)."""
        cfg = self.config
        t0 = time.perf_counter()
        check_catalogue(old, data)  # before any training: another shop fails at once
        self.space.fit(data, progress=self.progress)
        after = old.info.get("summary", {}).get("trained_until")
        val = fit_without_targets(data, self._validation(data, fresh_validation(data, after)))
        item_ids = data.item_ids

        def init(model: TwoTowerModel) -> dict[str, Any]:
            return warm_weights(old, model, item_ids)

        model, id_mask = self._train(val.fit, val, epochs=int(cfg.epochs), start=t0, init=init)
        best = self.state.best_epoch
        origin = {"train_log": old.info.get("train_log"), "trained_until": after}
        choice = self._choose_cooccurrence(model, id_mask, val)
        scoring = given_scoring(old.scoring, cfg).model_copy(
            update={"cooccurrence_weight": choice["weight"], "cooccurrence_decay": choice["decay"]}
        )
        if best == 0:  # the old model validates best: keep it, bound to the grown log
            log.info("warm start: no epoch beats the old model; it is kept as it was")
            kept = old.detached()
            assert isinstance(kept, TrainedScorer)
            kept.config_ = cfg
            kept.scoring = scoring
            kept.forget_cooccurrence()  # counted again on the grown log at its bind
            summary = {
                **old.info.get("summary", {}),
                **{k: getattr(scoring, k) for k in SCORING_SETTINGS},
                **chosen_score(choice),
                "warm_start": {**origin, "kept": True},
            }
            kept.info = {
                **{k: v for k, v in old.info.items() if k != "train_log"},  # saved afresh
                "summary": summary,
                "validation": self._history(),
                "cooccurrence_choice": choice,
            }
            return kept.fit(data)
        refit = bool(cfg.refit)
        if refit:
            log.info("refit on the whole log for %d epochs, from the old model", best)
            model, id_mask = self._train(
                data, None, epochs=best, start=time.perf_counter(), init=init
            )
        summary = {
            **self._summary(data, val, t0, refit),
            **{k: getattr(scoring, k) for k in SCORING_SETTINGS},
            **chosen_score(choice),
            "warm_start": origin,
        }
        info = {"summary": summary, "validation": self._history(), "cooccurrence_choice": choice}
        scorer = TrainedScorer(model, cfg, list(item_ids), id_mask, self.space, info)
        scorer.scoring = scoring
        return scorer.fit(data)

    def _choose_cooccurrence(
        self, model: TwoTowerModel, id_mask: np.ndarray, val: Split
    ) -> dict[str, Any]:
        """The co-occurrence weight and decay: the config's, or chosen on ``val`` with the
        early-stopped ``model`` (see :mod:`promptrec.train.cooccurrence`)."""
        cfg = self.config
        weights = COOCCURRENCE_WEIGHTS
        decays = COOCCURRENCE_DECAYS
        if cfg.cooccurrence_weight == 0:
            return {"weight": 0.0, "decay": cfg.cooccurrence_decay or 1.0}
        if cfg.cooccurrence_weight is not None:
            weights = (cfg.cooccurrence_weight,)
        if cfg.cooccurrence_decay is not None:
            decays = (cfg.cooccurrence_decay,)
        if len(weights) == 1 and len(decays) == 1:
            return {"weight": weights[0], "decay": decays[0]}
        probe = TrainedScorer(model, cfg, list(val.fit.item_ids), id_mask, self.space)
        choice = choose_cooccurrence(probe.fit(val.fit), val, weights, decays)
        log.info(
            "co-occurrence: weight %s, decay %s (validation NDCG@10 %.4f)",
            choice["weight"],
            choice["decay"],
            choice["ndcg10"],
        )
        return choice

    def _choose_new_items(
        self,
        model: TwoTowerModel,
        id_mask: np.ndarray,
        val: Split,
        cooccurrence: dict[str, Any],
        untouched: np.ndarray,
    ) -> dict[str, Any]:
        """How items without an id embedding are scored: the config's settings, or chosen on
        ``val`` with the early-stopped ``model`` and the chosen co-occurrence term (see
        :mod:`promptrec.train.new_items`); ``untouched``: the items nobody interacted with."""
        cfg = self.config
        borrowed = BORROWED_IDS if cfg.borrowed_ids is None else (cfg.borrowed_ids,)
        scales = NEW_ITEM_SCALES if cfg.new_item_scale is None else (cfg.new_item_scale,)
        weights = (
            NEW_ITEM_TEXT_WEIGHTS
            if cfg.new_item_text_weight is None
            else (cfg.new_item_text_weight,)
        )
        if not cfg.use_ids:  # no id embeddings: nothing to choose, the settings as given
            return {
                "borrowed_ids": cfg.borrowed_ids or 0,
                "scale": cfg.new_item_scale or 1.0,
                "text_weight": cfg.new_item_text_weight or 0.0,
            }
        if len(borrowed) == 1 and len(scales) == 1 and len(weights) == 1:
            return {"borrowed_ids": borrowed[0], "scale": scales[0], "text_weight": weights[0]}
        probe = TrainedScorer(model, cfg, list(val.fit.item_ids), id_mask, self.space)
        probe.scoring.cooccurrence_weight = cooccurrence["weight"]
        probe.scoring.cooccurrence_decay = cooccurrence["decay"]
        choice = choose_new_items(
            probe.fit(val.fit), val, borrowed, scales, weights, seed=cfg.seed, untouched=untouched
        )
        log.info(
            "new items: %s, scale %s (validation NDCG@10 %.4f; %d items scored as new)",
            describe(choice["borrowed_ids"], choice["text_weight"]),
            choice["scale"],
            choice["ndcg10"],
            choice["simulated_items"],
        )
        return choice

    # ------------------------------------------------------------------ internals
    def _train(
        self,
        data: Dataset,
        val: Split | None,
        *,
        epochs: int,
        start: float,
        init: Callable[[TwoTowerModel], dict[str, Any]] | None = None,
    ) -> tuple[TwoTowerModel, np.ndarray]:
        """Fast mode on ``data`` for at most ``epochs`` epochs, early-stopped on ``val`` (None:
        a refit, every epoch, no checkpoint); ``init``: a warm start's weights."""
        mode = FastMode(
            self.config,
            data,
            val,
            text=self.space.vectors,
            encode=self._encode_queries,
            queries=self._encoded_queries,
            device=self.device,
            precision=self.precision,
            progress=self.progress,
            init=init,
        )
        self.sampled = mode.sampled
        validating = val is not None
        state = self._loop(refit=not validating).run(
            mode, epochs=epochs, start=start, validating=validating
        )
        if val is not None:
            self.state = state
        return mode.result()

    def _encode_queries(self, strings: list[str]) -> np.ndarray:
        return np.asarray(
            self.space.encoder.encode(
                strings, kind="query", batch_size=256, show_progress=self.progress
            )
        )

    def _loop(self, refit: bool = False) -> EpochLoop:
        """The epoch loop; a refit checkpoints in ``refit/`` beside the validated run's
        checkpoint (a stopped refit resumes where it stopped, the validated run is kept)."""
        directory = self.checkpoint_dir
        if refit and directory is not None:
            directory = directory / "refit"
        return EpochLoop(
            self.config,
            checkpoint_dir=directory,
            data_key=self._data_key,
            progress=self.progress,
        )
