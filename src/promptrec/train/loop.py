"""The one training loop of both modes.

:class:`EpochLoop` runs the epochs of a :class:`TrainingMode` (fast mode:
:class:`~promptrec.train.fast.FastMode`; full mode: :class:`~promptrec.train.full.FullMode`):
validation NDCG@10 after every epoch, early stopping with the best epoch's weights kept, a
checkpoint after every epoch and a resume from it, the wall-clock guard, the log of every
epoch and a progress bar. A mode says what an epoch does, how it validates, and what its
weights and the rest of its state (optimiser, schedule, random state) are. Precision and device
are resolved here for both (:func:`resolve_precision`, :func:`autocast`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from promptrec.encoders.sentence_transformer import cpu_has_native_bf16
from promptrec.train.checkpoints import load_checkpoint, save_checkpoint
from promptrec.train.config import TrainConfig

log = logging.getLogger("promptrec")


def resolve_device(device: str | None) -> str:
    """``device``, or a GPU when there is one, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: str, cpu_bf16: bool = True) -> str:
    """``auto``: bf16 where the hardware does it natively (a GPU, or, with ``cpu_bf16``, a CPU
    with AVX512-BF16/AMX), fp32 elsewhere; ``fp32`` and ``bf16`` as they are."""
    if precision != "auto":
        return precision
    native = device.startswith("cuda") or (cpu_bf16 and cpu_has_native_bf16())
    return "bf16" if native else "fp32"


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``precision`` is bf16; nothing otherwise."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)


@dataclass
class EpochLog:
    """One epoch: its mean training loss (None: the untrained model, epoch 0), validation
    NDCG@10 (None: not validated, as in a refit) and seconds."""

    epoch: int
    loss: float | None
    ndcg10: float | None
    seconds: float | None = None


@dataclass
class TrainState:
    """Where early stopping stands: every epoch's log, the best epoch and its NDCG@10."""

    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_ndcg10: float = -1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "history": [asdict(e) for e in self.history],
            "best_epoch": self.best_epoch,
            "best_ndcg10": self.best_ndcg10,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        history = [EpochLog(**e) for e in state["history"]]
        return cls(history, state["best_epoch"], state["best_ndcg10"])


class TrainingMode(ABC):
    """What a mode supplies to :class:`EpochLoop`."""

    #: validate the model before any training (epoch 0), which competes with the epochs:
    #: full mode, where the untrained model is a pretrained language model
    validates_start: bool = False

    @abstractmethod
    def train_epoch(self, epoch: int) -> float:
        """Train one epoch; its mean loss."""

    @abstractmethod
    def validate(self) -> float:
        """Validation NDCG@10 of the model as it is now."""

    @abstractmethod
    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the weights that training changes (what the best epoch keeps)."""

    @abstractmethod
    def load_weights(self, weights: dict[str, torch.Tensor] | None) -> None:
        """Put back weights from :meth:`weights` (None: the model before any training)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The rest of what a resume needs (optimiser, schedule, the mode's own generators;
        the loop keeps torch's global ones)."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Put back :meth:`state` and the weights of the checkpoint's epoch."""


class EpochLoop:
    """Runs a :class:`TrainingMode`'s epochs (see the module docstring).

    Args:
        config: the run's settings (``patience``, ``max_minutes``; checkpoints are made with
            them and resume only with the same).
        checkpoint_dir: ``last.pt`` after every epoch (with the best epoch's weights),
            resumed from when present; None: none. A refit keeps its own (the trainer gives it
            ``refit/`` inside the run's).
        data_key: the training log's fingerprint (a checkpoint resumes only on the same log).
        progress: a progress bar over the epochs.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        checkpoint_dir: Path | None,
        data_key: str,
        progress: bool,
    ) -> None:
        self.config = config
        self.checkpoint_dir = checkpoint_dir
        self.data_key = data_key
        self.progress = progress
        self.state = TrainState()

    def run(
        self, mode: TrainingMode, *, epochs: int, start: float, validating: bool = True
    ) -> TrainState:
        """Train ``mode`` for at most ``epochs`` epochs; with ``validating``, stop early and
        leave the best epoch's weights in the model (without: every epoch, as in a refit).
        Either way a checkpoint follows every epoch, and a run resumes from it.
        ``start``: when the run began (the wall-clock guard counts from it)."""
        cfg = self.config
        self.state = TrainState()
        first, best = self._resume(mode, epochs, validating)
        if validating:
            if first == 1 and mode.validates_start:
                ndcg = mode.validate()
                self.state.history.append(EpochLog(0, None, round(ndcg, 6)))
                self.state.best_ndcg10 = ndcg
        bar = tqdm(
            range(first, epochs + 1),
            initial=first - 1,
            total=epochs,
            disable=not self.progress,
            desc="train" if validating else "refit",
            unit="epoch",
        )
        for epoch in bar:
            t_epoch = time.perf_counter()
            loss = mode.train_epoch(epoch)
            ndcg = mode.validate() if validating else None
            seconds = round(time.perf_counter() - t_epoch, 1)
            bar.set_postfix(
                loss=f"{loss:.4f}", **({"val_ndcg10": f"{ndcg:.4f}"} if ndcg is not None else {})
            )
            if ndcg is None:
                self._save(mode, epoch, None)
            else:
                best = self._record(mode, epoch, loss, ndcg, seconds, best)
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
        if validating:
            mode.load_weights(best)
        return self.state

    def _record(
        self,
        mode: TrainingMode,
        epoch: int,
        loss: float,
        ndcg: float,
        seconds: float,
        best: dict[str, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor] | None:
        """Log a validated epoch, keep its weights when it is the best so far, write the
        checkpoint; the best weights."""
        # the progress bar shows it; a run without one logs it
        level = logging.DEBUG if self.progress else logging.INFO
        log.log(level, "epoch %d: loss %.4f, validation NDCG@10 %.4f", epoch, loss, ndcg)
        self.state.history.append(EpochLog(epoch, round(loss, 5), round(ndcg, 6), seconds))
        if ndcg > self.state.best_ndcg10:
            self.state.best_ndcg10, self.state.best_epoch = ndcg, epoch
            best = mode.weights()
        self._save(mode, epoch, best)
        return best

    def _save(self, mode: TrainingMode, epoch: int, best: dict[str, torch.Tensor] | None) -> None:
        """The checkpoint after ``epoch``: the mode's state, the loop's, the best weights."""
        save_checkpoint(
            self.checkpoint_dir,
            self.config,
            self.data_key,
            {
                "epoch": epoch,
                "mode": mode.state(),
                "state": self.state.as_dict(),
                "best": best,  # in the same file: a crash never splits them
                # the global generators (dropout, and whatever a mode draws from them)
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        )

    def _resume(
        self, mode: TrainingMode, epochs: int, validating: bool
    ) -> tuple[int, dict[str, torch.Tensor] | None]:
        """The first epoch to train and the best weights so far, from the checkpoint."""
        ckpt = load_checkpoint(self.checkpoint_dir, self.config, self.data_key)
        if ckpt is None:
            return 1, None
        if "mode" not in ckpt:  # written by an earlier promptrec: its layout is another
            log.warning("%s: a checkpoint of an earlier version, not resumed", self.checkpoint_dir)
            return 1, None
        mode.load_state(ckpt["mode"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.state = TrainState.from_dict(ckpt["state"])
        best = ckpt["best"]
        log.info("resuming after epoch %d (best %d)", ckpt["epoch"], self.state.best_epoch)
        if validating and ckpt["epoch"] - self.state.best_epoch >= self.config.patience:
            return epochs + 1, best  # it had stopped early: nothing left to train
        return int(ckpt["epoch"]) + 1, best
