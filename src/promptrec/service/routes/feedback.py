"""``POST /events``: behaviour, searches and feedback on served lists."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator

from promptrec.errors import DataError
from promptrec.service.routes.common import Service, errors
from promptrec.service.schemas import MAX_IDEMPOTENCY_KEY, EventsIn, EventsOut, optional_text
from promptrec.store import UnknownItemError


def router(service: Service) -> APIRouter:
    """This module's endpoints, answering for ``service``."""
    engine = service.engine
    write = service.write
    keyed = service.keyed
    api = APIRouter()

    @api.post(
        "/events",
        response_model=EventsOut,
        dependencies=[write],
        responses=errors(400, 404, 422, *keyed),
    )
    async def post_events(
        body: EventsIn,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=MAX_IDEMPOTENCY_KEY,
                description="a retried request with the same key is stored once",
            ),
            AfterValidator(optional_text(MAX_IDEMPOTENCY_KEY)),
        ] = None,
    ) -> EventsOut:
        key = idempotency_key or body.idempotency_key
        now = time.time()
        rows = []
        for n, e in enumerate(body.events):
            try:
                rows.append(e.to_event(now))
            except DataError as exc:  # a time that is no moment at all
                raise _invalid(n, exc) from None
        try:
            done = await engine.add_events(
                rows, [e.request_id for e in body.events], idempotency_key=key
            )
        except UnknownItemError as exc:
            row = (exc.row or 1) - 1
            raise HTTPException(
                404, f"events.{row}.item_id: item '{rows[row].item_id}' is not in the catalogue"
            ) from None
        except DataError as exc:
            raise _invalid((exc.row or 1) - 1, exc) from None
        return EventsOut(
            added=done.write.added,
            duplicates=done.write.duplicates,
            searches=0 if done.write.replayed else done.write.searches,
            attributed=done.attributed,
            unknown_request_ids=done.unknown_request_ids,
            replayed=done.write.replayed,
        )

    return api


def _invalid(row: int, exc: DataError) -> RequestValidationError:
    """A 422 naming ``events.ROW.FIELD``, as pydantic's own problems are named."""
    loc = ("body", "events", row, exc.column or "event")
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": exc.reason}])
