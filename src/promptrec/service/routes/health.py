"""``/health`` and ``/metrics``: for load balancers and Prometheus."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from promptrec.service.routes.common import Service, errors
from promptrec.service.schemas import HealthOut
from promptrec.version import __version__


def router(service: Service) -> APIRouter:
    """This module's endpoints, answering for ``service``."""
    engine = service.engine
    keys = service.keys
    read = service.read
    reads = service.reads
    api = APIRouter()

    @api.head("/health", include_in_schema=False)
    def health_probe() -> Response:  # load balancers probe with HEAD
        return Response(status_code=200)

    @api.get("/health", response_model=HealthOut, responses=errors())
    def health() -> HealthOut:
        snap = engine.snapshot
        return HealthOut(
            status="ok",
            version=__version__,
            items=snap.data.n_live,
            user_data_needs_key=not keys.public_user_data,
            reads_need_key=keys.protect_reads,
            skipped_rows=snap.skipped,
            worker=os.getpid(),
            catalogue_version=engine.catalogue_version,
        )

    @api.get(
        "/metrics",
        dependencies=[read],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **errors(*reads)},
    )
    def prometheus() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api
