"""``POST /events``: behaviour, searches and feedback on served lists."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException
from pydantic import AfterValidator

from promptrec.data.store import Event
from promptrec.service.routes.common import Service, errors
from promptrec.service.schemas import MAX_IDEMPOTENCY_KEY, EventsIn, EventsOut, optional_text


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
    def post_events(
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
        index = engine.snapshot.data.item_index
        rows, searches, request_ids = [], [], []
        for n, e in enumerate(body.events):
            stamp = e.seconds(now)
            user = e.user_id
            query = e.query if e.query and e.query.strip() else None
            if e.item_id is None:
                searches.append((user, e.query, stamp))
                continue
            item = e.item_id
            if item not in index:
                raise HTTPException(
                    404, f"events[{n}].item_id: item '{item}' is not in the catalogue"
                )
            rows.append(Event(user, item, stamp, e.event, e.value, query))
            request_ids.append(e.request_id)
        done = engine.add_events(rows, searches, request_ids, idempotency_key=key)
        return EventsOut(
            added=done.write.added,
            duplicates=done.write.duplicates,
            searches=0 if done.write.replayed else len(searches),
            attributed=done.attributed,
            unknown_request_ids=done.unknown_request_ids,
            replayed=done.write.replayed,
        )

    return api
