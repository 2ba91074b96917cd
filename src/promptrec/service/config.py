"""The service's settings, typed: one pydantic model per component, read and written as JSON by
pydantic itself (``promptrec serve --workers N`` hands them to its worker processes so).

* :class:`ArmSpec`: one arm of an A/B test;
* :class:`EngineConfig`: how the engine serves (arms, registry, encoder, retention, index...);
* :class:`ServeSettings`: what every worker needs: the store, the engine's settings, the app's.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from promptrec.errors import ConfigError
from promptrec.retrieval.index import IndexConfig
from promptrec.scorers import SCORERS
from promptrec.service.histories import HISTORY_LIMIT

#: the source of an arm that serves the model registry's active version
REGISTRY = "registry"


@dataclass(frozen=True)
class ArmSpec:
    """One arm of an A/B test.

    Attributes:
        name: the arm's name (reported in responses and metrics).
        source: a strategy name (``mean-of-items``, ``sectioned``...), a trained model folder,
            or ``"registry"``: the registry's active model, swapped when a new one is activated.
        weight: share of users (relative to the other arms).
    """

    name: str
    source: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str, weight: float = 1.0) -> ArmSpec:
        """``NAME=SOURCE`` (or just ``SOURCE``, named after itself)."""
        name, _, source = text.partition("=") if "=" in text else (text, "", text)
        if not name or not source:
            raise ConfigError(f"arm '{text}': expected NAME=SOURCE")
        return cls(name.strip(), source.strip(), weight)


class EngineConfig(BaseModel):
    """How the engine serves (see ``promptrec serve --help``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    arms: list[ArmSpec] = Field(default_factory=lambda: [ArmSpec("main", "mean-of-items")])
    registry: Path | None = None
    encoder: str = "default"
    item_template: str | None = None
    salt: str = ""
    poll_seconds: float = 2.0
    #: served lists (and their attributions) are deleted this long after they were served
    keep_served_seconds: float | None = 7 * 86400.0
    #: idempotency keys are forgotten this long after their request (a later retry is new)
    keep_idempotency_seconds: float | None = 86400.0
    #: how often the retention sweep runs
    prune_seconds: float = 60.0
    #: served lists are written to the store in a batch this often (a crash loses at most this
    #: much of them; a graceful stop loses none)
    flush_seconds: float = 0.25
    #: who this engine is, written beside the store's service lock (for a second one's message)
    owner: str = ""
    #: how the vector arms' lists are searched (exact, or an approximate HNSW graph)
    index: IndexConfig = Field(default_factory=IndexConfig)
    #: the newest events of a user each request reads from the store
    history_limit: int = HISTORY_LIMIT
    #: how often the engine reads the store's catalogue change log, to apply the changes other
    #: engines on the store made (every worker serves a change within about this long)
    follow_seconds: float = 0.25
    #: take the store's service lock (``promptrec serve`` takes it once for all its workers,
    #: whose engines do not)
    claim_service: bool = True
    #: a catalogue change edits the served snapshot (the cost of one item) until this share of
    #: its rows are retired versions of changed or removed items; the next change then
    #: rebuilds from the store, which compacts them away (the cost of the catalogue)
    max_retired_share: float = 0.25

    def check(self) -> None:
        """Raise a ConfigError for arms that cannot be served (before anything is built)."""
        if not self.arms:
            raise ConfigError("give at least one arm")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"arm names must differ: {names}")
        for arm in self.arms:
            if arm.source == REGISTRY:
                if self.registry is None:
                    raise ConfigError(f"arm '{arm.name}' serves the registry: give --models DIR")
            elif arm.source not in SCORERS and not Path(arm.source).is_dir():
                raise ConfigError(
                    f"arm '{arm.name}': '{arm.source}' is neither a strategy {list(SCORERS)}, "
                    "a model folder, nor 'registry'"
                )


class ServeSettings(BaseModel):
    """What every worker needs to serve: the store, the engine's settings, the app's."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    db: str
    engine: EngineConfig
    keys: list[str]
    protect_reads: bool = False
    public_user_data: bool = False
    max_body_bytes: int = 1 << 20
    reasons: str | None = None
    evaluation: str | None = None
