"""Train and save in one call (what ``promptrec train`` runs)."""

from __future__ import annotations

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
) -> Scorer:
    """Train on ``data`` (its validation split by the protocol's rule) and save to ``output``.

    Checkpoints go to ``output/checkpoints``; with ``resume`` an interrupted run continues
    from its last epoch.
    """
    out = Path(output)
    ckpt = out / "checkpoints"
    if not resume and ckpt.exists():
        for f in ckpt.iterdir():
            f.unlink()
    from promptrec.train.trainer import Trainer

    scorer = Trainer(config, checkpoint_dir=ckpt, progress=progress).fit(data)
    scorer.save(out, data)  # type: ignore[attr-defined]
    return scorer
