"""Fine-tuning on the behaviour log: losses, the two-tower model, the trainer, model folders."""

from promptrec.train.config import ScoringConfig, TrainConfig
from promptrec.train.load import load_model
from promptrec.train.losses import FullSoftmaxLoss, SampledBCELoss, SampledSoftmaxLoss
from promptrec.train.model import TwoTowerModel
from promptrec.train.trained import TrainedScorer
from promptrec.train.trainer import Trainer

__all__ = [
    "FullSoftmaxLoss",
    "SampledBCELoss",
    "SampledSoftmaxLoss",
    "ScoringConfig",
    "TrainConfig",
    "TrainedScorer",
    "Trainer",
    "TwoTowerModel",
    "load_model",
]
