"""Seeds and checkpoints: what every trainer uses to start the same way and to resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptrec.errors import ConfigError
from promptrec.train.config import TrainConfig


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; returns a torch generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def save_checkpoint(
    directory: Path | None, config: TrainConfig, data_key: str, state: dict
) -> None:
    """Write ``directory/last.pt`` with the settings and the training log's fingerprint it was
    made with, atomically: a crash mid-write leaves the previous checkpoint whole. No
    directory: no checkpoint."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "last.pt.tmp"
    torch.save({**state, "config": config.model_dump(), "data": data_key}, tmp)
    tmp.replace(directory / "last.pt")


def load_checkpoint(
    directory: Path | None, config: TrainConfig, data_key: str, *, mmap: bool = False
) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` (None when there is none); one made with other settings
    or on another log is a :class:`ConfigError`. ``mmap``: the file memory-mapped, its tensors
    read only when used (:func:`check_checkpoint`)."""
    if directory is None or not (directory / "last.pt").exists():
        return None
    ckpt = torch.load(directory / "last.pt", weights_only=False, mmap=mmap)
    if ckpt["config"] != config.model_dump() or ckpt.get("data") != data_key:
        raise ConfigError(
            f"{directory}: the checkpoint was made with other settings or another log; "
            "use another --output, --restart, or the same settings and data to resume"
        )
    return ckpt


def check_checkpoint(directory: Path | None, config: TrainConfig, data_key: str) -> None:
    """Raise :func:`load_checkpoint`'s :class:`ConfigError` now, before the costly set-up of a
    run (item texts encoded, a language model loaded) that could not resume from it; the
    tensors are not read."""
    load_checkpoint(directory, config, data_key, mmap=True)
