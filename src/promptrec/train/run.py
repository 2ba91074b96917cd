"""Train and save in one call (what ``promptrec train`` runs)."""

from __future__ import annotations

import shutil
from pathlib import Path

from promptrec.data.dataset import Dataset
from promptrec.scorers.base import Scorer
from promptrec.train.config import TrainConfig


def train_model(
    data: Dataset,
    config: TrainConfig,
    output: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    init_from: Scorer | None = None,
) -> Scorer:
    """Train on ``data`` (its validation split by the protocol's rule) and save to ``output``.

    Checkpoints go to ``output/checkpoints`` (the refit's to ``output/checkpoints/refit``); with
    ``resume`` an interrupted run continues from its last epoch, in either phase.
    ``init_from``: a fast-mode model to warm-start from (:mod:`promptrec.train.warm`).
    """
    out = Path(output)
    ckpt = out / "checkpoints"
    if not resume and ckpt.exists():
        shutil.rmtree(ckpt)  # the run's checkpoint and its refit's
    from promptrec.train.trainer import Trainer

    trainer = Trainer(config, checkpoint_dir=ckpt, progress=progress, init_from=init_from)
    scorer = trainer.fit(data)
    scorer.save(out, data)  # type: ignore[attr-defined]
    return scorer
