"""Typed request and response bodies of the HTTP API (they make the OpenAPI docs at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from promptrec.data.limits import (
    MAX_ABS_NUMBER,
    MAX_ID_LENGTH,
    MAX_QUERY_LENGTH,
    check_fields,
    check_id,
    check_text,
)
from promptrec.store.events import Event, new_event

EventType = Literal["view", "click", "cart", "purchase", "rating", "search"]
MAX_EVENTS_PER_REQUEST = 10_000
MAX_IDEMPOTENCY_KEY = 200


class HistoryReasonOut(BaseModel):
    item_id: str
    title: str
    similarity: float


class ExplanationOut(BaseModel):
    because: list[HistoryReasonOut] = Field(
        description="history items that pulled this item up, most similar first"
    )
    query_terms: list[str] = Field(description="words of the live query found in the item text")
    text: str = Field(description="the explanation as one sentence")
    reason: str | None = Field(
        None, description="a written reason from a language model (when asked for and ready)"
    )


class RecommendedItemOut(BaseModel):
    item_id: str
    title: str
    score: float
    explanation: ExplanationOut | None = None


class RecommendationOut(BaseModel):
    request_id: str = Field(description="quote it in POST /events to attribute clicks")
    user_id: str
    arm: str
    model_version: str
    strategy: str
    query: str | None = Field(
        description="the live query the list answers: the one given, or the user's latest "
        "search of the last half hour (user data: shown only to a caller who may read it)"
    )
    cold_start: bool = Field(description="true when the user has no history and no query")
    prompt: str | None = Field(
        None, description="the user prompt the list came from (prompt strategies, with explain)"
    )
    items: list[RecommendedItemOut]


def valid_id(value: str) -> str:
    """A pydantic/FastAPI validator: the value as a storable id (a ValueError if not)."""
    return check_id(value, "id")


def optional_text(limit: int):
    """A validator of optional text that the store can keep, at most ``limit`` characters."""

    def check(value: str | None) -> str | None:
        return None if value is None else check_text(value, "text", max_length=limit)

    return check


#: a user or item id: 1-256 characters of storable text (see :mod:`promptrec.data.limits`)
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(valid_id)]


class EventIn(BaseModel):
    """One behaviour event. ``search`` events may have no item (a search with no click).

    The body is parsed here (types, the event's kind); the values are checked once, by the
    store, as for every other writer: a problem is a 422 naming ``events.N.FIELD``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(json_schema_extra={"minLength": 1, "maxLength": MAX_ID_LENGTH})
    item_id: str | None = Field(
        None,
        json_schema_extra={"minLength": 1, "maxLength": MAX_ID_LENGTH},
        description="the item (none only for a search with a query)",
    )
    event: EventType
    timestamp: float | datetime | None = Field(
        None,
        description="seconds since the epoch or ISO 8601 (naive times are UTC); from 1970 to "
        "one day from now; default: now",
    )
    value: float | None = Field(
        None,
        description=f"a rating, a price paid... (finite, within ±{MAX_ABS_NUMBER:g}); a rating "
        "needs one",
    )
    query: str | None = Field(
        None,
        json_schema_extra={"maxLength": MAX_QUERY_LENGTH},
        description="the search text (stripped; a search with no item needs one that is not blank)",
    )
    request_id: Annotated[
        str | None,
        Field(max_length=64, description="the served list this event answers"),
        AfterValidator(optional_text(64)),
    ] = None

    def to_event(self, now: float) -> Event:
        """The event as the store takes it (:func:`~promptrec.store.events.new_event`)."""
        return new_event(
            self.user_id,
            self.item_id,
            self.event,
            timestamp=self.timestamp,
            value=self.value,
            query=self.query,
            now=now,
        )


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)
    idempotency_key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY,
            description="a retried request with the same key is stored once (the header "
            "Idempotency-Key does the same)",
        ),
        AfterValidator(optional_text(MAX_IDEMPOTENCY_KEY)),
    ] = None


class EventsOut(BaseModel):
    added: int
    duplicates: int = Field(description="events already stored (same content), skipped")
    searches: int = Field(description="searches with no item, stored as context")
    attributed: int = Field(description="clicks, carts and purchases linked to a served list")
    unknown_request_ids: int = Field(
        0,
        description="events quoting a request_id of no list served to their user (lost in a "
        "crash, pruned, or mistyped): stored all the same, attributed by the fallback rule "
        "(the user's latest list with the item, within an hour) where it applies",
    )
    replayed: bool = Field(description="true when the idempotency key was seen before")


class ItemIn(BaseModel):
    """An item's fields: at least one text field (title, name, description...). Values are
    text, numbers (finite; integers within 64 bits), true/false, null, lists or objects."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data:
            raise ValueError('give the item\'s fields as a JSON object, e.g. {"title": ...}')
        check_fields({k: v for k, v in data.items() if k != "item_id"})
        text = [k for k, v in data.items() if isinstance(v, str) and v.strip()]
        if not text:
            raise ValueError("the item needs at least one non-empty text field (e.g. title)")
        return data


class ItemOut(BaseModel):
    item_id: str
    created: bool


class ForgetOut(BaseModel):
    user_id: str
    events: int
    searches: int
    impressions: int
    attributions: int


class ActivateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1)


class UsersOut(BaseModel):
    users: list[str] = Field(description="user ids, longest histories first")


class HistoryEntryOut(BaseModel):
    item_id: str
    title: str
    event: str


class HistoryOut(BaseModel):
    user_id: str
    length: int = Field(description="events in the user's history")
    recent: list[HistoryEntryOut] = Field(description="the newest events first")


class HealthOut(BaseModel):
    status: str
    version: str
    items: int = Field(description="items served")
    user_data_needs_key: bool = Field(
        description="user ids, histories and explanations need the API key"
    )
    reads_need_key: bool = Field(description="every read endpoint needs the API key")
    skipped_rows: dict[str, int] = Field(
        description="stored rows that cannot be served, skipped at the last build (fix or "
        "delete them)"
    )
    worker: int = Field(description="the process id of the worker that answered")
    catalogue_version: int = Field(
        description="the newest catalogue change (in the store's log) this worker serves"
    )


class ErrorOut(BaseModel):
    detail: str


class FieldErrorOut(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: str = Field(description="every problem, each naming its field")
    errors: list[FieldErrorOut] = []
