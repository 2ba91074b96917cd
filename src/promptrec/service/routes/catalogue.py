"""``/items``: read, add, change and remove catalogue items (each served at once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from promptrec.service.routes.common import PathId, Service, errors
from promptrec.service.schemas import ItemIn, ItemOut


def router(service: Service) -> APIRouter:
    """This module's endpoints, answering for ``service``."""
    engine = service.engine
    write = service.write
    read = service.read
    keyed = service.keyed
    reads = service.reads
    api = APIRouter()

    @api.get(
        "/items/{item_id}",
        response_model=dict[str, Any],
        dependencies=[read],
        responses=errors(404, 422, *reads),
    )
    def get_item(item_id: PathId) -> dict[str, Any]:
        item = engine.item(item_id)
        if item is None:
            raise HTTPException(404, f"item '{item_id}' is not in the catalogue")
        return item

    @api.put(
        "/items/{item_id}",
        response_model=ItemOut,
        dependencies=[write],
        responses=errors(400, 422, *keyed),
    )
    def put_item(item_id: PathId, body: ItemIn) -> ItemOut:
        fields = body.model_dump()
        fields.pop("item_id", None)
        created = engine.upsert_item(item_id, fields)
        return ItemOut(item_id=item_id, created=created)

    @api.delete(
        "/items/{item_id}",
        status_code=204,
        dependencies=[write],
        responses=errors(404, 422, *keyed),
    )
    def delete_item(item_id: PathId) -> Response:
        if not engine.delete_item(item_id):
            raise HTTPException(404, f"item '{item_id}' is not in the catalogue")
        return Response(status_code=204)

    return api
