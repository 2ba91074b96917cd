"""Model versions for the service: a folder of trained models and a pointer to the active one.

Layout::

    models/
      20261128-101500/     a model directory written by `promptrec train`
      20261129-101500/
      ACTIVE               {"active": "20261129-101500", "history": ["20261128-101500"]}

``promptrec train --registry models/`` writes a new version and activates it (run it from cron
for scheduled retraining); the service notices the change of ``ACTIVE`` and swaps models
atomically. :meth:`ModelRegistry.rollback` reactivates the previous version.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from promptrec.errors import ModelError

POINTER = "ACTIVE"


class ModelRegistry:
    """Versions (sub-folders with a ``config.json``) and the active one, in ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Every version, oldest first (names sort by time when made by :meth:`new_version`)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "config.json").is_file())

    def new_version(self) -> Path:
        """A fresh, not yet existing version folder named by the UTC time."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path, n = self.root / stamp, 1
        while path.exists():
            path, n = self.root / f"{stamp}-{n}", n + 1
        return path

    def _pointer(self) -> dict:
        file = self.root / POINTER
        if not file.exists():
            return {"active": None, "history": []}
        return json.loads(file.read_text())

    @property
    def active(self) -> str | None:
        """The active version; without a pointer, the newest version (None when empty)."""
        active = self._pointer()["active"]
        if active is None:
            versions = self.versions()
            return versions[-1] if versions else None
        return active

    def path(self, version: str | None = None) -> Path:
        """The folder of ``version`` (default: the active one)."""
        version = version or self.active
        if version is None:
            raise ModelError(f"{self.root}: no model yet; train one with --registry {self.root}")
        path = self.root / version
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{self.root}: no model version '{version}'; versions: {self.versions()}"
            )
        return path

    def activate(self, version: str) -> None:
        """Make ``version`` active (the previous one is remembered for :meth:`rollback`)."""
        self.path(version)  # exists?
        pointer = self._pointer()
        current = pointer["active"]
        history = list(pointer["history"])
        if current is not None and current != version:
            history.append(current)
        self._write({"active": version, "history": history[-20:]})

    def _history(self) -> list[str]:
        """Earlier active versions that still exist, oldest first."""
        history = self._pointer()["history"]
        return [v for v in history if (self.root / v / "config.json").is_file()]

    def previous(self) -> str:
        """The version :meth:`rollback` would reactivate."""
        history = self._history()
        if not history:
            raise ModelError(f"{self.root}: no earlier version to roll back to")
        return history[-1]

    def rollback(self) -> str:
        """Reactivate the version that was active before; returns it."""
        previous = self.previous()
        self._write({"active": previous, "history": self._history()[:-1]})
        return previous

    def stamp(self) -> float:
        """When the pointer last changed (0 when there is none): the service polls this."""
        file = self.root / POINTER
        return file.stat().st_mtime_ns if file.exists() else 0.0

    def _write(self, pointer: dict) -> None:
        """Atomic replace: a reader sees the old pointer or the new one, never half of one."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{POINTER}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(pointer))
        os.replace(tmp, self.root / POINTER)
