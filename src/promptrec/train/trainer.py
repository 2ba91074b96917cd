"""Fast-mode training: early stopping on validation NDCG@10, checkpoints, refit.

The validation split is taken from the given log by the protocol's rule: each user's last
interaction (users with at least 3) is the validation target and is held out of training.
Nothing else of the log is held out: test targets, when there are any, were removed by the
caller (``leave_last_out(data)["test"].fit``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import Split, leave_last_out
from promptrec.encoders.sentence_transformer import cpu_has_native_bf16
from promptrec.errors import ConfigError
from promptrec.evaluation.metrics import ndcg_at
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers.popularity import item_counts
from promptrec.scorers.text import TextSpace
from promptrec.train.checkpoints import load_checkpoint, save_checkpoint, seed_everything
from promptrec.train.config import TrainConfig
from promptrec.train.cooccurrence import (
    COOCCURRENCE_DECAYS,
    COOCCURRENCE_WEIGHTS,
    choose_cooccurrence,
)
from promptrec.train.folder import log_fingerprint
from promptrec.train.losses import FullSoftmaxLoss, SampledBCELoss, SampledSoftmaxLoss
from promptrec.train.model import TwoTowerModel
from promptrec.train.new_items import BORROWED_IDS, NEW_ITEM_SCALES, choose_new_items
from promptrec.train.optim import apply_step, warmup_schedule
from promptrec.train.queries import QueryBank
from promptrec.train.sequences import last_items, target_values, training_windows
from promptrec.train.trained import TrainedScorer

log = logging.getLogger("promptrec")
#: the share of training positions with a query that read it without their history, so that
#: the query tower also serves a search by a user the shop does not know yet
QUERY_ALONE = 0.2


def length_batches(
    lengths: np.ndarray, batch_size: int, gen: torch.Generator, pool: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of row indices, each of similar lengths (less padding to compute).

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool,
    batched, and the batches shuffled again: random order, little padding.
    """
    order = torch.randperm(len(lengths), generator=gen).numpy()
    batches = []
    step = batch_size * pool
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=gen).numpy()
    return [batches[i] for i in perm]


@dataclass
class EpochLog:
    epoch: int
    loss: float
    ndcg10: float | None
    seconds: float


@dataclass
class TrainState:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_ndcg10: float = -1.0


class Trainer:
    """Train a fast-mode two-tower model.

    Args:
        config: the settings (defaults are the validated ones).
        space: a fitted-or-not :class:`TextSpace` to share item text vectors (optional).
        checkpoint_dir: write a checkpoint after every epoch here, and resume from it.
        progress: show progress bars (loss and validation NDCG@10).
        device: ``cpu``, ``cuda``...; None picks a GPU when there is one.

    Example::

        scorer = Trainer(TrainConfig(loss="softmax")).fit(data)
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
    ) -> None:
        self.config = config or TrainConfig()
        if self.config.mode != "fast":
            raise ConfigError("Trainer runs fast mode; use promptrec.train.full for mode='full'")
        if self.config.dim % self.config.heads:
            raise ConfigError(
                f"dim {self.config.dim} must be a multiple of heads {self.config.heads}"
            )
        self.space = space or TextSpace(self.config.encoder, self.config.item_template)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.state = TrainState()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        precision = self.config.precision
        if precision == "auto":
            native = self.device.startswith("cuda") or cpu_has_native_bf16()
            precision = "bf16" if native else "fp32"
        self.precision = precision
        #: training queries' text vectors by query, encoded once for both runs (see _queries)
        self._encoded_queries: dict[str, np.ndarray] = {}
        self.bank: QueryBank | None = None

    def _autocast(self):  # type: ignore[no-untyped-def]
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)

    # ------------------------------------------------------------------ public
    def fit(self, data: Dataset) -> TrainedScorer:
        """Train on ``data`` with its own validation split; return the (refitted) scorer."""
        cfg = self.config
        t0 = time.perf_counter()
        self._data_key = log_fingerprint(data)  # a checkpoint resumes only on the same log
        self.space.fit(data, progress=self.progress)
        val = leave_last_out(data)["test"]  # the log's last item per user = validation target
        if not val.histories:
            raise ConfigError("no user has 3 interactions: nothing to validate on")
        val = val.sample(cfg.validation_users, cfg.seed)
        model, id_mask = self._train(val.fit, val, epochs=cfg.epochs, start=t0)
        best = self.state.best_epoch
        choice = self._choose_cooccurrence(model, id_mask, val)
        untouched = item_counts(data) == 0
        new_items = self._choose_new_items(model, id_mask, val, choice, untouched)
        summary: dict[str, Any] = {
            "best_epoch": best,
            "validation_ndcg10": round(self.state.best_ndcg10, 6),
            "validation_users": len(val.histories),
            "cooccurrence_weight": choice["weight"],
            "cooccurrence_decay": choice["decay"],
        }
        if "ndcg10" in choice:
            summary["validation_ndcg10_with_cooccurrence"] = choice["ndcg10"]
        summary["borrowed_ids"] = new_items["borrowed_ids"]
        summary["new_item_scale"] = new_items["scale"]
        if cfg.refit and best > 0:
            log.info("refit on the whole log for %d epochs", best)
            model, id_mask = self._train(data, None, epochs=best, start=time.perf_counter())
        summary["train_seconds"] = round(time.perf_counter() - t0, 1)
        summary["refit"] = bool(cfg.refit and best > 0)
        info = {
            "summary": summary,
            "validation": [vars(e) for e in self.state.history],
            "cooccurrence_choice": choice,
            "new_item_choice": new_items,
        }
        scorer = TrainedScorer(model, cfg, list(data.item_ids), id_mask, self.space, info)
        scorer.scoring.cooccurrence_weight = choice["weight"]
        scorer.scoring.cooccurrence_decay = choice["decay"]
        scorer.scoring.borrowed_ids = new_items["borrowed_ids"]
        scorer.scoring.new_item_scale = new_items["scale"]
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
        if not cfg.use_ids or (len(borrowed) == 1 and len(scales) == 1):
            return {"borrowed_ids": borrowed[0], "scale": scales[0]}
        probe = TrainedScorer(model, cfg, list(val.fit.item_ids), id_mask, self.space)
        probe.scoring.cooccurrence_weight = cooccurrence["weight"]
        probe.scoring.cooccurrence_decay = cooccurrence["decay"]
        choice = choose_new_items(
            probe.fit(val.fit), val, borrowed, scales, seed=cfg.seed, untouched=untouched
        )
        log.info(
            "new items: ids borrowed from %s text neighbours, scale %s (validation NDCG@10 "
            "%.4f; %d items scored as new)",
            choice["borrowed_ids"],
            choice["scale"],
            choice["ndcg10"],
            choice["simulated_items"],
        )
        return choice

    # ------------------------------------------------------------------ internals
    def _train(
        self, data: Dataset, val: Split | None, *, epochs: int, start: float
    ) -> tuple[TwoTowerModel, np.ndarray]:
        cfg = self.config
        gen = seed_everything(cfg.seed)
        text = torch.from_numpy(self.space.vectors).to(self.device)
        counts = item_counts(data)
        id_mask_np = counts >= cfg.id_min_count
        id_mask = torch.from_numpy(id_mask_np).to(self.device)
        model = TwoTowerModel(
            text.shape[1],
            data.n_items,
            dim=cfg.dim,
            max_len=cfg.max_len,
            layers=cfg.layers,
            heads=cfg.heads,
            dropout=cfg.dropout,
            use_ids=cfg.use_ids,
            cosine=cfg.similarity == "cosine",
            id_dropout=cfg.id_dropout,
            query_tower=bool(cfg.query_share),
        )
        model.to(self.device)
        # negatives are drawn on the training device, with their own seeded generator
        loss_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.sampled = data.n_items > cfg.sample_above
        if self.sampled:
            log.info(
                "%d items (more than sample_above, %d): each step encodes its batch's items "
                "and samples %d negatives",
                data.n_items,
                cfg.sample_above,
                cfg.negatives,
            )
        loss_fn = self._loss(torch.from_numpy(counts).to(self.device), loss_gen)
        histories = data.histories()
        inputs, targets = training_windows(histories, cfg.max_len)
        if len(inputs) == 0:
            raise ConfigError("the log has no user with 2 interactions: nothing to train on")
        logged = self._queries(data, histories) if cfg.query_share else None
        query_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = warmup_schedule(optim, cfg.warmup_steps)
        first_epoch = 1
        if val is not None:
            self.state = TrainState()
            first_epoch = self._resume(model, optim, sched)
        best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if val is not None and self.state.best_epoch > 0 and self._best_path().exists():
            best_weights = torch.load(self._best_path(), weights_only=True)
        lengths = (inputs >= 0).sum(axis=1)
        bar = tqdm(
            range(first_epoch, epochs + 1),
            disable=not self.progress,
            desc="train" if val is not None else "refit",
            unit="epoch",
        )
        for epoch in bar:
            t_epoch = time.perf_counter()
            model.train()
            total, count = 0.0, 0
            for rows in length_batches(lengths, cfg.batch_size, gen):
                width = int(lengths[rows].max())  # trim the padding this batch does not need
                inp = torch.from_numpy(inputs[rows, :width]).to(self.device)
                tgt = torch.from_numpy(targets[rows, :width]).to(self.device)
                valid = tgt >= 0
                queries = None
                if logged is not None and self.bank is not None:
                    searched = torch.from_numpy(logged[rows, :width]).to(self.device)
                    drawn = self.bank.draw(
                        tgt[valid], searched[valid], float(cfg.query_share), query_gen
                    )
                    alone = torch.rand(len(drawn), generator=query_gen, device=self.device)
                    queries = (drawn, alone < QUERY_ALONE)
                with self._autocast():
                    loss = self._step_loss(model, loss_fn, text, id_mask, inp, tgt, valid, queries)
                apply_step(loss, optim, sched, model.parameters(), cfg.grad_clip)
                total += float(loss.detach()) * int(valid.sum())
                count += int(valid.sum())
            epoch_loss = total / max(count, 1)
            ndcg = None
            if val is not None:
                ndcg = self.validate(model, text, id_mask, val)
                if ndcg > self.state.best_ndcg10:
                    self.state.best_ndcg10, self.state.best_epoch = ndcg, epoch
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if self.checkpoint_dir is not None:
                        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                        torch.save(best_weights, self._best_path())
            if val is not None:
                self.state.history.append(
                    EpochLog(
                        epoch,
                        round(epoch_loss, 5),
                        round(ndcg or 0.0, 6),
                        round(time.perf_counter() - t_epoch, 1),
                    )
                )
            bar.set_postfix(
                loss=f"{epoch_loss:.4f}",
                **({"val_ndcg10": f"{ndcg:.4f}"} if ndcg is not None else {}),
            )
            if val is not None:
                self._checkpoint(model, optim, sched, epoch)
                if epoch - self.state.best_epoch >= cfg.patience:
                    log.info(
                        "early stop at epoch %d (best %d: NDCG@10 %.4f)",
                        epoch,
                        self.state.best_epoch,
                        self.state.best_ndcg10,
                    )
                    break
            if cfg.max_minutes and time.perf_counter() - start > cfg.max_minutes * 60:
                log.warning("stopping: the %.0f-minute time cap was reached", cfg.max_minutes)
                break
        if val is not None:
            model.load_state_dict(best_weights)
        return model.cpu().eval(), id_mask_np

    def _step_loss(
        self,
        model: TwoTowerModel,
        loss_fn: torch.nn.Module,
        text: torch.Tensor,
        id_mask: torch.Tensor,
        inp: torch.Tensor,
        tgt: torch.Tensor,
        valid: torch.Tensor,
        queries: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One batch's loss: over every item's vector, or (``self.sampled``) over the vectors
        of the batch's own items (inputs, targets, negatives drawn for it) alone. ``queries``:
        per target, the query its user vector carries (see :meth:`_with_queries`)."""
        dropping = self.config.id_dropout > 0  # candidates score without some ids
        temperature = self.config.temperature
        targets = tgt[valid]
        if not self.sampled:
            item_vecs = model.item_vectors(text, id_mask)
            scored = model.item_vectors(text, id_mask, drop_ids=True) if dropping else item_vecs
            states = model.scoring(model.sequence_states(item_vecs, inp)[valid])
            users, targets = self._with_queries(model, states, targets, queries)
            return loss_fn(users / temperature, targets, model.scoring(scored))
        copies = 0 if queries is None or self.bank is None else int((queries[0] >= 0).sum())
        negatives = loss_fn.draw(len(targets) + copies, len(text), self.device)
        items = torch.unique(torch.cat([inp[inp >= 0], targets, negatives.flatten()]))
        item_vecs = model.item_vectors(text[items], id_mask[items], items)
        scored = (
            model.item_vectors(text[items], id_mask[items], items, drop_ids=True)
            if dropping
            else item_vecs
        )
        local = torch.where(inp >= 0, torch.searchsorted(items, inp.clamp_min(0)), -1)
        states = model.scoring(model.sequence_states(item_vecs, local)[valid])
        users, targets = self._with_queries(model, states, targets, queries)
        return loss_fn(
            users / temperature,
            torch.searchsorted(items, targets),
            model.scoring(scored),
            negatives=torch.searchsorted(items, negatives),
            ids=items,
        )

    def _with_queries(
        self,
        model: TwoTowerModel,
        users: torch.Tensor,
        targets: torch.Tensor,
        queries: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training positions' user vectors (as scored) and targets, followed by a copy of
        each position that carries a query, its query's vector added (through the query
        tower), as a live query's is when the model serves: every position still trains the
        history alone, and the copies train how a query and a history combine. ``queries``:
        per position, the query's row in :attr:`bank` (-1: none), and whether the copy reads
        the query without the history (a search by a user the shop does not know)."""
        if queries is None or self.bank is None or not len(self.bank.vectors):
            return users, targets
        drawn, alone = queries
        asked = drawn >= 0
        if not bool(asked.any()):
            return users, targets
        history = torch.where(alone[asked][:, None], 0.0, users[asked])
        text = self.bank.vectors[drawn[asked]].to(users.dtype)
        searched = history + model.query_vectors(text)
        return torch.cat([users, searched]), torch.cat([targets, targets[asked]])

    def _queries(self, data: Dataset, histories: Sequence[UserHistory]) -> np.ndarray:
        """The training queries of ``data`` (:attr:`bank`), and each training position's
        logged search (its row in the bank, -1: none), laid out as the training windows."""
        cfg = self.config

        def encode(strings: list[str]) -> np.ndarray:
            fresh = [q for q in strings if q not in self._encoded_queries]
            if fresh:
                log.info("encoding %d training queries", len(fresh))
                vectors = self.space.encoder.encode(
                    fresh, kind="query", batch_size=256, show_progress=self.progress
                )
                self._encoded_queries.update(zip(fresh, np.asarray(vectors), strict=True))
            return np.stack([self._encoded_queries[q] for q in strings])

        self.bank = QueryBank(data, encode, histories, seed=cfg.seed).to(self.device)
        return target_values(self.bank.logged, histories, cfg.max_len)

    def validate(
        self, model: TwoTowerModel, text: torch.Tensor, id_mask: torch.Tensor, val: Split
    ) -> float:
        """NDCG@10 on the validation users (full ranking, history excluded)."""
        model.eval()
        ranks = []
        with torch.no_grad():
            item_vecs = model.item_vectors(text, id_mask)
            scored = model.scoring(item_vecs)
            step = max(16, min(1024, 50_000_000 // len(text)))  # at most 200 MB of scores
            for start in range(0, len(val.histories), step):
                hist = val.histories[start : start + step]
                seqs = torch.from_numpy(last_items(hist, model.users.max_len)).to(self.device)
                users = model.user_vectors(item_vecs, seqs)
                scores = (users @ scored.T).float().cpu().numpy()
                ranks.append(
                    target_ranks(scores, val.targets[start : start + step], [h.items for h in hist])
                )
        return ndcg_at(np.concatenate(ranks), 10)

    def _loss(self, counts: torch.Tensor, gen: torch.Generator) -> torch.nn.Module:
        cfg = self.config
        # the temperature is applied to the user vectors before the loss (see _train)
        if cfg.loss == "softmax" and not self.sampled:
            return FullSoftmaxLoss()
        if cfg.loss in ("softmax", "sampled-softmax"):  # softmax: estimated, see sample_above
            return SampledSoftmaxLoss(counts, cfg.negatives, generator=gen)
        return SampledBCELoss(cfg.negatives, generator=gen)

    # ------------------------------------------------------------------ checkpoints
    def _best_path(self) -> Path:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / "best.pt"

    def _checkpoint(self, model, optim, sched, epoch: int) -> None:  # type: ignore[no-untyped-def]
        save_checkpoint(
            self.checkpoint_dir,
            self.config,
            self._data_key,
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "sched": sched.state_dict(),
                "state": {
                    "best_epoch": self.state.best_epoch,
                    "best_ndcg10": self.state.best_ndcg10,
                    "history": [vars(e) for e in self.state.history],
                },
            },
        )

    def _resume(self, model, optim, sched) -> int:  # type: ignore[no-untyped-def]
        ckpt = load_checkpoint(self.checkpoint_dir, self.config, self._data_key)
        if ckpt is None:
            return 1
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optim"])
        sched.load_state_dict(ckpt["sched"])
        st = ckpt["state"]
        self.state = TrainState(
            [EpochLog(**e) for e in st["history"]], st["best_epoch"], st["best_ndcg10"]
        )
        log.info("resuming after epoch %d (best %d)", ckpt["epoch"], st["best_epoch"])
        return int(ckpt["epoch"]) + 1
