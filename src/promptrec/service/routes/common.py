"""What every router of the HTTP API shares: the service it answers for, the error answers
it documents, and the parameter types of ids and lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from fastapi import Path as PathParam
from pydantic import AfterValidator

from promptrec.data.limits import MAX_ID_LENGTH, check_text
from promptrec.service.engine import Engine
from promptrec.service.metrics import Metrics
from promptrec.service.reasons import ReasonWriter
from promptrec.service.schemas import ErrorOut, ValidationErrorOut, valid_id
from promptrec.service.security import ApiKeys

MAX_K = 500
MAX_LIST_PARAM = 4000  # characters of a filter's comma-separated values

_WHY = {
    400: "bad request: the body is not valid JSON, or a setting is off",
    401: "no API key",
    403: "a wrong API key",
    404: "no such item, user or route",
    409: "a model version that cannot be served",
    413: "the body is over the size limit",
    422: "invalid fields (each problem names its field)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers an endpoint gives (every body is JSON)."""
    return {
        code: {"model": ValidationErrorOut if code == 422 else ErrorOut, "description": _WHY[code]}
        for code in sorted({*codes, 413})
    }


#: an id in a path or a query: what the store accepts (see :mod:`promptrec.data.limits`)
PathId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(valid_id)]


def split_values(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated query values as one list."""
    if values is None:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


ListParam = Annotated[
    list[str] | None,
    AfterValidator(
        lambda values: (
            None
            if values is None
            else [check_text(v, "text", max_length=MAX_LIST_PARAM) for v in values]
        )
    ),
]


@dataclass(frozen=True)
class Service:
    """What the routers answer for: the engine, its keys and metrics, and the options.

    Attributes:
        keyed: the errors of an endpoint that needs a key (401, 403).
        reads: those of an endpoint that reads (keyed when reads are protected).
        private: those of an endpoint that shows user data (keyed unless it is public).
    """

    engine: Engine
    keys: ApiKeys
    metrics: Metrics
    reasons: ReasonWriter | None = None
    evaluation: Path | None = None

    @property
    def write(self) -> Any:
        return Depends(self.keys.write)

    @property
    def read(self) -> Any:
        return Depends(self.keys.read)

    @property
    def user_data(self) -> Any:
        return Depends(self.keys.user_data)

    @property
    def keyed(self) -> tuple[int, ...]:
        return (401, 403)

    @property
    def reads(self) -> tuple[int, ...]:
        return self.keyed if self.keys.protect_reads else ()

    @property
    def private(self) -> tuple[int, ...]:
        return () if self.keys.public_user_data else self.keyed
