"""Fine-tuning on the behaviour log: losses, the two-tower model, the trainer, model folders."""

from promptrec.train.config import TrainConfig
from promptrec.train.losses import FullSoftmaxLoss, SampledBCELoss, SampledSoftmaxLoss
from promptrec.train.model import TwoTowerModel
from promptrec.train.trained import TrainedScorer
from promptrec.train.trainer import Trainer

__all__ = [
    "FullSoftmaxLoss",
    "SampledBCELoss",
    "SampledSoftmaxLoss",
    "TrainConfig",
    "TrainedScorer",
    "Trainer",
    "TwoTowerModel",
]
