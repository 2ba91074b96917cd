"""The real-time service: :class:`~promptrec.service.engine.Engine` (live histories, A/B arms,
model swaps, feedback) behind a FastAPI app (:func:`~promptrec.service.app.create_app`).
Run it with ``promptrec serve``."""

from promptrec.service.config import ArmSpec, EngineConfig, ServeSettings
from promptrec.service.engine import Engine
from promptrec.service.registry import ModelRegistry

__all__ = ["ArmSpec", "Engine", "EngineConfig", "ModelRegistry", "ServeSettings"]
