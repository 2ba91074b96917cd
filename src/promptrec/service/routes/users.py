"""``/users``: who is known, a user's history, and forgetting a user (all user data)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from promptrec.service.routes.common import PathId, Service, errors
from promptrec.service.schemas import ForgetOut, HistoryEntryOut, HistoryOut, UsersOut


def router(service: Service) -> APIRouter:
    """This module's endpoints, answering for ``service``."""
    engine = service.engine
    write = service.write
    read = service.read
    user_data = service.user_data
    keyed = service.keyed
    reads = service.reads
    private = service.private
    api = APIRouter()

    @api.get(
        "/users",
        response_model=UsersOut,
        dependencies=[read, user_data],
        responses=errors(422, *reads, *private),
    )
    def users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> UsersOut:
        """Users with the longest histories (for the web page's picker): user data."""
        return UsersOut(users=engine.histories.users(limit))

    @api.get(
        "/users/{user_id}/history",
        response_model=HistoryOut,
        dependencies=[read, user_data],
        responses=errors(404, 422, *reads, *private),
    )
    def history(user_id: PathId, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> HistoryOut:
        """A user's newest events: user data."""
        snap = engine.snapshot
        h = engine.histories.history(user_id, snap.data, time.time())
        if len(h) == 0 and not engine.histories.knows(user_id):
            raise HTTPException(404, f"user '{user_id}' has no history")
        labels = snap.arms[engine.arm_for(user_id)].recommender.labels
        recent = list(zip(h.items[::-1], h.events[::-1], strict=True))[:limit]
        return HistoryOut(
            user_id=user_id,
            length=len(h),
            recent=[
                HistoryEntryOut(item_id=str(snap.data.item_ids[i]), title=labels[i], event=e)
                for i, e in recent
            ],
        )

    @api.delete(
        "/users/{user_id}",
        response_model=ForgetOut,
        dependencies=[write],
        responses=errors(404, 422, *keyed),
    )
    def forget_user(user_id: PathId) -> ForgetOut:
        counts = engine.forget_user(user_id)
        if counts is None:
            raise HTTPException(404, f"user '{user_id}' is not known")
        return ForgetOut(user_id=user_id, **counts)

    return api
