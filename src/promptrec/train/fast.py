"""Fast mode's epochs: the two-tower model over cached text vectors, as a
:class:`~promptrec.train.loop.TrainingMode` of the one training loop.

The language model is frozen: every item's text vector is computed once
(:class:`~promptrec.scorers.text.TextSpace`); the item tower, id embeddings and the sequence
user tower learn (:mod:`promptrec.train.model`). Every interaction after a user's first is a
training position (:func:`~promptrec.train.sequences.training_windows`), scored against the
whole catalogue (softmax) or sampled items (``sampled-softmax``, ``bce``; and every loss above
``sample_above`` items, where a step runs the item tower on its batch's items alone). A
``query_share`` of the positions are trained again with a query (:meth:`FastMode._with_queries`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from promptrec.data.dataset import Dataset, UserHistory
from promptrec.data.split import Split
from promptrec.errors import ConfigError
from promptrec.evaluation.metrics import ndcg_at
from promptrec.retrieval.topk import target_ranks
from promptrec.scorers.popularity import item_counts
from promptrec.train.checkpoints import seed_everything
from promptrec.train.config import TrainConfig
from promptrec.train.loop import TrainingMode, autocast
from promptrec.train.losses import FullSoftmaxLoss, SampledBCELoss, SampledSoftmaxLoss
from promptrec.train.model import TwoTowerModel
from promptrec.train.optim import LazyAdamW, apply_step, warmup_schedule
from promptrec.train.queries import QueryBank
from promptrec.train.sequences import last_items, target_values, training_windows

log = logging.getLogger("promptrec")
#: the share of training positions with a query that read it without their history, so that
#: the query tower also serves a search by a user the shop does not know yet
QUERY_ALONE = 0.2
#: a query's text vector, by query string (encoded once for the run and its refit)
QueryVectors = dict[str, np.ndarray]


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


def make_loss(
    config: TrainConfig, counts: torch.Tensor, gen: torch.Generator, sampled: bool
) -> torch.nn.Module:
    """The configured loss (``sampled``: the catalogue is above ``sample_above``, and the
    softmax is estimated by the sampled one). The temperature is applied to the user vectors
    before it (see :func:`step_loss`)."""
    if config.loss == "softmax" and not sampled:
        return FullSoftmaxLoss()
    if config.loss in ("softmax", "sampled-softmax"):
        return SampledSoftmaxLoss(counts, config.negatives, generator=gen)
    return SampledBCELoss(config.negatives, generator=gen)


def step_loss(
    model: TwoTowerModel,
    loss_fn: torch.nn.Module,
    text: torch.Tensor,
    id_mask: torch.Tensor,
    inp: torch.Tensor,
    tgt: torch.Tensor,
    valid: torch.Tensor,
    *,
    config: TrainConfig,
    sampled: bool,
    with_queries: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    copies: int = 0,
) -> torch.Tensor:
    """One batch's loss: over every item's vector, or (``sampled``) over the vectors of the
    batch's own items (inputs, targets, negatives drawn for it) alone. ``with_queries``
    appends the positions' copies that carry a query (``copies`` of them; see
    :meth:`FastMode._with_queries`)."""
    dropping = config.id_dropout > 0  # candidates score without some ids
    temperature = config.temperature
    targets = tgt[valid]
    add = with_queries or (lambda users, targets: (users, targets))
    device = text.device
    if not sampled:
        item_vecs = model.item_vectors(text, id_mask)
        scored = model.item_vectors(text, id_mask, drop_ids=True) if dropping else item_vecs
        states = model.scoring(model.sequence_states(item_vecs, inp)[valid])
        users, targets = add(states, targets)
        return loss_fn(users / temperature, targets, model.scoring(scored))
    negatives = loss_fn.draw(len(targets) + copies, len(text), device)
    items = torch.unique(torch.cat([inp[inp >= 0], targets, negatives.flatten()]))
    item_vecs = model.item_vectors(text[items], id_mask[items], items)
    scored = (
        model.item_vectors(text[items], id_mask[items], items, drop_ids=True)
        if dropping
        else item_vecs
    )
    local = torch.where(inp >= 0, torch.searchsorted(items, inp.clamp_min(0)), -1)
    states = model.scoring(model.sequence_states(item_vecs, local)[valid])
    users, targets = add(states, targets)
    return loss_fn(
        users / temperature,
        torch.searchsorted(items, targets),
        model.scoring(scored),
        negatives=torch.searchsorted(items, negatives),
        ids=items,
    )


class FastMode(TrainingMode):
    """Fast mode on ``data``, validated on ``val`` (None: a refit, not validated).

    Args:
        config: the settings.
        text: every item's text vector (``[n_items, text_dim]``, from the run's text space).
        encode: texts -> their text vectors (the training queries, when ``query_share``).
        queries: query vectors already encoded (shared by a run and its refit; filled here).
        device / precision: resolved by the trainer.
        init: the freshly initialised network -> the weights to start from instead (a warm
            start: :func:`~promptrec.train.warm.warm_weights`); validated as they are, they
            compete as epoch 0.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: Dataset,
        val: Split | None,
        *,
        text: np.ndarray,
        encode: Callable[[list[str]], np.ndarray],
        queries: QueryVectors,
        device: str,
        precision: str,
        progress: bool,
        init: Callable[[TwoTowerModel], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        cfg = self.config = config
        self.val = val
        self.device, self.precision, self.progress = device, precision, progress
        self.gen = seed_everything(cfg.seed)
        self.text = torch.from_numpy(text).to(device)
        counts = item_counts(data)
        self.id_mask_np = counts >= cfg.id_min_count
        self.id_mask = torch.from_numpy(self.id_mask_np).to(device)
        self.model = TwoTowerModel(
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
        ).to(device)
        if init is not None:
            self.model.load_state_dict(init(self.model))
        self.validates_start = init is not None and val is not None
        # negatives are drawn on the training device, with their own seeded generator
        self.loss_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.sampled = data.n_items > cfg.sample_above
        if self.sampled:
            log.info(
                "%d items (more than sample_above, %d): each step encodes its batch's items "
                "and samples %d negatives",
                data.n_items,
                cfg.sample_above,
                cfg.negatives,
            )
        self.loss_fn = make_loss(
            cfg, torch.from_numpy(counts).to(device), self.loss_gen, self.sampled
        )
        histories = data.histories()
        self.inputs, self.targets = training_windows(histories, cfg.max_len)
        if len(self.inputs) == 0:
            raise ConfigError("the log has no user with 2 interactions: nothing to train on")
        self.lengths = (self.inputs >= 0).sum(axis=1)
        self.bank: QueryBank | None = None
        self.logged: np.ndarray | None = None
        if cfg.query_share:
            self.bank, self.logged = self._queries(data, histories, encode, queries)
        self.query_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        optimiser: type[torch.optim.Optimizer] = torch.optim.AdamW
        if self.sampled and self.model.items.ids is not None:
            # a step touches its batch's rows of the id table alone: sparse gradients, and an
            # optimiser that steps those rows, not the million others (train.optim)
            self.model.items.ids.sparse = True
            optimiser = LazyAdamW
        self.optim = optimiser(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = warmup_schedule(self.optim, cfg.warmup_steps)
        # put back if no epoch validates (every NDCG@10 NaN); a refit is not validated
        self.initial = self.weights() if val is not None else None

    # ------------------------------------------------------------------ TrainingMode
    def train_epoch(self, epoch: int) -> float:
        cfg, model = self.config, self.model
        model.train()
        total, count = 0.0, 0
        for rows in length_batches(self.lengths, cfg.batch_size, self.gen):
            width = int(self.lengths[rows].max())  # trim the padding this batch does not need
            inp = torch.from_numpy(self.inputs[rows, :width]).to(self.device)
            tgt = torch.from_numpy(self.targets[rows, :width]).to(self.device)
            valid = tgt >= 0
            queries = self._draw_queries(rows, width, tgt, valid)
            with autocast(self.device, self.precision):
                loss = step_loss(
                    model,
                    self.loss_fn,
                    self.text,
                    self.id_mask,
                    inp,
                    tgt,
                    valid,
                    config=cfg,
                    sampled=self.sampled,
                    with_queries=None if queries is None else self._adder(queries),
                    copies=0 if queries is None else int((queries[0] >= 0).sum()),
                )
            apply_step(loss, self.optim, self.sched, model.parameters(), cfg.grad_clip)
            total += float(loss.detach()) * int(valid.sum())
            count += int(valid.sum())
        return total / max(count, 1)

    def validate(self) -> float:
        """NDCG@10 on the validation users (full ranking, history excluded)."""
        assert self.val is not None
        return validate(self.model, self.text, self.id_mask, self.val)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_weights(self, weights: dict[str, torch.Tensor] | None) -> None:
        chosen = self.initial if weights is None else weights
        if chosen is not None:
            self.model.load_state_dict(chosen)

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "sched": self.sched.state_dict(),
            # the batches', negatives' and queries' draws go on where they stopped
            "generators": [g.get_state() for g in self._generators],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        for g, saved in zip(self._generators, state["generators"], strict=True):
            g.set_state(saved)

    @property
    def _generators(self) -> list[torch.Generator]:
        return [self.gen, self.loss_gen, self.query_gen]

    def result(self) -> tuple[TwoTowerModel, np.ndarray]:
        """The trained model (on the CPU, in eval mode) and which items have an id."""
        return self.model.cpu().eval(), self.id_mask_np

    # ------------------------------------------------------------------ queries
    def _draw_queries(
        self, rows: np.ndarray, width: int, tgt: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per position of the batch, its query's row in the bank (-1: none) and whether its
        copy reads it without the history."""
        if self.logged is None or self.bank is None:
            return None
        searched = torch.from_numpy(self.logged[rows, :width]).to(self.device)
        drawn = self.bank.draw(
            tgt[valid], searched[valid], float(self.config.query_share), self.query_gen
        )
        alone = torch.rand(len(drawn), generator=self.query_gen, device=self.device)
        return drawn, alone < QUERY_ALONE

    def _adder(
        self, queries: tuple[torch.Tensor, torch.Tensor]
    ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        return lambda users, targets: self._with_queries(users, targets, queries)

    def _with_queries(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        queries: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training positions' user vectors (as scored) and targets, followed by a copy of
        each position that carries a query, its query's vector added (through the query
        tower), as a live query's is when the model serves: every position still trains the
        history alone, and the copies train how a query and a history combine. ``queries``:
        per position, the query's row in :attr:`bank` (-1: none), and whether the copy reads
        the query without the history (a search by a user the shop does not know)."""
        if self.bank is None or not len(self.bank.vectors):
            return users, targets
        drawn, alone = queries
        asked = drawn >= 0
        if not bool(asked.any()):
            return users, targets
        history = torch.where(alone[asked][:, None], 0.0, users[asked])
        text = self.bank.vectors[drawn[asked]].to(users.dtype)
        searched = history + self.model.query_vectors(text)
        return torch.cat([users, searched]), torch.cat([targets, targets[asked]])

    def _queries(
        self,
        data: Dataset,
        histories: Sequence[UserHistory],
        encode: Callable[[list[str]], np.ndarray],
        known: QueryVectors,
    ) -> tuple[QueryBank, np.ndarray]:
        """The training queries of ``data``, and each training position's logged search (its
        row in the bank, -1: none), laid out as the training windows. Queries in ``known``
        are not encoded again; the others are added to it."""

        def vectors(strings: list[str]) -> np.ndarray:
            fresh = [q for q in strings if q not in known]
            if fresh:
                log.info("encoding %d training queries", len(fresh))
                known.update(zip(fresh, np.asarray(encode(fresh)), strict=True))
            return np.stack([known[q] for q in strings])

        bank = QueryBank(data, vectors, histories, seed=self.config.seed).to(self.device)
        return bank, target_values(bank.logged, histories, self.config.max_len)


def validate(model: TwoTowerModel, text: torch.Tensor, id_mask: torch.Tensor, val: Split) -> float:
    """NDCG@10 of ``model`` on ``val``'s users (full ranking, history excluded)."""
    model.eval()
    ranks = []
    device = text.device
    with torch.no_grad():
        item_vecs = model.item_vectors(text, id_mask)
        scored = model.scoring(item_vecs)
        step = max(16, min(1024, 50_000_000 // len(text)))  # at most 200 MB of scores
        for start in range(0, len(val.histories), step):
            hist = val.histories[start : start + step]
            seqs = torch.from_numpy(last_items(hist, model.users.max_len)).to(device)
            users = model.user_vectors(item_vecs, seqs)
            scores = (users @ scored.T).float().cpu().numpy()
            ranks.append(
                target_ranks(scores, val.targets[start : start + step], [h.items for h in hist])
            )
    return ndcg_at(np.concatenate(ranks), 10)
