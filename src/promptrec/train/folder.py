"""A model folder's format: its version, the fingerprints of the catalogue and the log it was
trained on, and the reading of its ``config.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from promptrec.data.dataset import Dataset
from promptrec.errors import ModelError
from promptrec.version import __version__

FORMAT_VERSION = 1


def catalogue_fingerprint(data: Dataset) -> dict[str, Any]:
    ids = "\n".join(map(str, data.item_ids)).encode()
    return {"n_items": data.n_items, "item_ids_sha1": hashlib.sha1(ids).hexdigest()}


def log_fingerprint(data: Dataset) -> str:
    """A hash of the behaviour log a model was trained on (to catch evaluation leaks)."""
    ev = data.events
    h = hashlib.sha1()
    for col in ("user_id", "item_id"):
        h.update("\x00".join(ev[col].tolist()).encode())
    h.update(ev["timestamp"].to_numpy().tobytes())
    return h.hexdigest()


def read_model_config(path: Path) -> dict[str, Any]:
    """A model directory's ``config.json``, checked to exist and to be of a readable format."""
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelError(
            f"{path}: not a promptrec model (no config.json); train one with "
            "`promptrec train --output DIR`"
        )
    config = json.loads(config_file.read_text())
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{path}: model format {version} is not supported by promptrec {__version__} "
            f"(format {FORMAT_VERSION}); retrain it or use the promptrec version "
            f"{config.get('promptrec_version')} that wrote it"
        )
    return config
