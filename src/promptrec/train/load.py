"""Loading a model folder of either mode."""

from __future__ import annotations

from pathlib import Path

from promptrec.scorers.base import Scorer
from promptrec.train.folder import read_model_config
from promptrec.train.full import FullTunedScorer
from promptrec.train.trained import TrainedScorer


def load_model(directory: str | Path) -> Scorer:
    """Load any model directory written by ``promptrec train`` (fast or full mode)."""
    path = Path(directory)
    config = read_model_config(path)
    if config.get("kind") == "lm-full":
        return FullTunedScorer.load(path, config)
    return TrainedScorer.load(path)
