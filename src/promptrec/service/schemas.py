"""Typed request and response bodies of the HTTP API (they make the OpenAPI docs at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EventType = Literal["view", "click", "cart", "purchase", "rating", "search"]
MAX_EVENTS_PER_REQUEST = 10_000


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
    query: str | None = Field(description="the live query used (given, or a recent search)")
    cold_start: bool = Field(description="true when the user has no history and no query")
    prompt: str | None = Field(
        None, description="the user prompt the list came from (prompt strategies, with explain)"
    )
    items: list[RecommendedItemOut]


class EventIn(BaseModel):
    """One behaviour event. ``search`` events may have no item (a search with no click)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str | None = Field(None, min_length=1, max_length=256)
    event: EventType
    timestamp: float | datetime | None = Field(
        None, description="seconds since the epoch or ISO 8601; default: now"
    )
    value: float | None = Field(None, description="a rating, a price paid...")
    query: str | None = Field(None, max_length=1000, description="the search text")
    request_id: str | None = Field(
        None, max_length=64, description="the served list this event answers"
    )

    @model_validator(mode="after")
    def _check(self) -> EventIn:
        if self.item_id is None and not (self.event == "search" and self.query):
            raise ValueError("item_id is required (only a search event with a query may omit it)")
        if self.event == "rating" and self.value is None:
            raise ValueError("a rating event needs a value")
        return self

    def seconds(self, now: float) -> float:
        if self.timestamp is None:
            return now
        if isinstance(self.timestamp, datetime):
            return self.timestamp.timestamp()
        return float(self.timestamp)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="a retried request with the same key is stored once",
    )


class EventsOut(BaseModel):
    added: int
    duplicates: int = Field(description="events already stored (same content), skipped")
    searches: int = Field(description="searches with no item, stored as context")
    attributed: int = Field(description="clicks, carts and purchases linked to a served list")
    replayed: bool = Field(description="true when the idempotency key was seen before")


class ItemIn(BaseModel):
    """An item's fields: at least one text field (title, name, description...)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data:
            raise ValueError('give the item\'s fields as a JSON object, e.g. {"title": ...}')
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


class ErrorOut(BaseModel):
    detail: str
