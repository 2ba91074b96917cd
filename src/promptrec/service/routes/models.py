"""``/model`` and ``/admin/models``: what is served, and model swaps through the registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from promptrec.service.routes.common import Service, errors
from promptrec.service.schemas import ActivateIn


def router(service: Service) -> APIRouter:
    """This module's endpoints, answering for ``service``."""
    engine = service.engine
    write = service.write
    read = service.read
    keyed = service.keyed
    reads = service.reads
    api = APIRouter()

    @api.get("/model", response_model=dict[str, Any], dependencies=[read], responses=errors(*reads))
    def model() -> dict[str, Any]:
        return engine.describe()

    @api.post(
        "/admin/models/activate",
        response_model=dict[str, Any],
        dependencies=[write],
        responses=errors(400, 404, 409, 422, *keyed),
    )
    def activate(body: ActivateIn) -> dict[str, Any]:
        engine.activate(body.version)
        return engine.describe()

    @api.post(
        "/admin/models/rollback",
        response_model=dict[str, Any],
        dependencies=[write],
        responses=errors(400, 404, 409, *keyed),
    )
    def rollback() -> dict[str, Any]:
        engine.rollback()
        return engine.describe()

    return api
