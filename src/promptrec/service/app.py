"""The HTTP API (FastAPI): recommendations, events, catalogue and user management, metrics, models.

Build it with :func:`create_app` around an :class:`~promptrec.service.engine.Engine`; run it
with ``promptrec serve`` (uvicorn). Interactive docs are at ``/docs``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptrec.errors import ConfigError, DataError, ModelError
from promptrec.service.engine import Engine
from promptrec.service.metrics import Metrics, ObserveRequests
from promptrec.service.reasons import ReasonWriter
from promptrec.service.routes import ROUTERS, Service
from promptrec.service.routes.common import errors
from promptrec.service.security import ApiKeys, BodyLimit
from promptrec.version import __version__

log = logging.getLogger("promptrec.service")
STATIC = Path(str(resources.files("promptrec.service") / "static"))


def create_app(
    engine: Engine,
    keys: ApiKeys,
    *,
    max_body_bytes: int = 1 << 20,
    reasons: ReasonWriter | None = None,
    evaluation: Path | None = None,
    close_on_shutdown: bool = False,
) -> FastAPI:
    """The service around ``engine``.

    Args:
        engine: the serving engine.
        keys: API keys (every write endpoint requires one; user data too, by default).
        max_body_bytes: larger request bodies get 413.
        reasons: a writer of one-sentence reasons (``reasons=true`` on /recommend).
        evaluation: a ``promptrec evaluate --output`` JSON shown on the dashboard.
        close_on_shutdown: close the engine and its store when the server stops (a worker
            process owns them; otherwise whoever made the engine closes it).

    When the server stops (SIGTERM, Ctrl-C), requests in flight finish, then every served
    list still buffered is written to the store before the process exits.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # the server has stopped taking requests and finished those in flight: store every
        # served list still buffered (uvicorn re-raises the signal after this, so nothing
        # later in the process would run)
        engine.flush()
        if close_on_shutdown:
            engine.close()
            engine.store.close()

    # the docs' Swagger UI assets come from the fastapi-offline package, not a CDN (its ReDoc
    # page still fetches a logo from one: not offered)
    app = FastAPIOffline(
        redoc_url=None,
        title="promptrec",
        version=__version__,
        description="Real-time recommendations from behaviour and live queries, with "
        "explanations, feedback, A/B arms and hot model swaps.",
        lifespan=lifespan,
    )
    metrics = Metrics(engine)
    app.state.engine, app.state.metrics = engine, metrics
    service = Service(engine, keys, metrics, reasons, evaluation)

    # ------------------------------------------------------------------ middleware and errors
    # outermost last: every request is observed, even one the body limit refuses
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ObserveRequests, metrics=metrics, log_key=engine.log_key)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = next(e for e in errors if e.get("type") == "json_invalid")
            where = first.get("ctx", {}).get("error", "")
            return ErrorResponse({"detail": f"request body is not valid JSON: {where}"}, 400)
        parts = []
        for e in errors:
            loc = ".".join(str(p) for p in e["loc"] if p != "body")
            parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
        return ErrorResponse({"detail": "; ".join(parts), "errors": _plain_errors(errors)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ErrorResponse({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        return ErrorResponse({"detail": str(exc)}, 422)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> JSONResponse:
        return ErrorResponse({"detail": str(exc)}, 400)

    @app.exception_handler(ModelError)
    async def model_error(request: Request, exc: ModelError) -> JSONResponse:
        return ErrorResponse({"detail": str(exc)}, 409)

    # ------------------------------------------------------------------ the endpoints
    for routes in ROUTERS:
        app.include_router(routes.router(service))

    # ------------------------------------------------------------------ web page and dashboard
    from promptrec.service import dashboard

    dashboard.mount(app, engine, metrics, service.read, evaluation, errors(422, *service.reads))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


class ErrorResponse(JSONResponse):
    """An error's JSON, all ASCII: a message that quotes the caller's input (even a lone
    surrogate, which UTF-8 cannot encode) always renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
