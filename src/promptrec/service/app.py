"""The HTTP API (FastAPI): recommendations, events, catalogue and user management, metrics, models.

Build it with :func:`create_app` around an :class:`~promptrec.service.engine.Engine`; run it
with ``promptrec serve`` (uvicorn). Interactive docs are at ``/docs``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptrec import __version__
from promptrec.data.limits import MAX_ID_LENGTH, MAX_QUERY_LENGTH, check_text
from promptrec.data.store import Event
from promptrec.errors import ConfigError, DataError, ModelError
from promptrec.recommender import RecommendedItem
from promptrec.retrieval.filters import Filters
from promptrec.service.engine import Engine
from promptrec.service.metrics import Metrics, ObserveRequests
from promptrec.service.reasons import ReasonWriter
from promptrec.service.schemas import (
    MAX_IDEMPOTENCY_KEY,
    ActivateIn,
    ErrorOut,
    EventsIn,
    EventsOut,
    ExplanationOut,
    ForgetOut,
    HealthOut,
    HistoryEntryOut,
    HistoryOut,
    HistoryReasonOut,
    ItemIn,
    ItemOut,
    RecommendationOut,
    RecommendedItemOut,
    UsersOut,
    ValidationErrorOut,
    optional_text,
    valid_id,
)
from promptrec.service.security import ApiKeys, BodyLimit

log = logging.getLogger("promptrec.service")
STATIC = Path(str(resources.files("promptrec.service") / "static"))
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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers an endpoint gives (every body is JSON)."""
    return {
        code: {"model": ValidationErrorOut if code == 422 else ErrorOut, "description": _WHY[code]}
        for code in sorted({*codes, 413})
    }


#: an id in a path or a query: what the store accepts (see :mod:`promptrec.data.limits`)
PathId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(valid_id)]


def _split(values: list[str] | None) -> list[str] | None:
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
    write, read, user_data = Depends(keys.write), Depends(keys.read), Depends(keys.user_data)
    keyed = (401, 403)
    reads = keyed if keys.protect_reads else ()
    private = () if keys.public_user_data else keyed

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

    # ------------------------------------------------------------------ recommendations
    @app.get(
        "/recommend",
        response_model=RecommendationOut,
        dependencies=[read],
        responses=_errors(400, 422, *reads, *private),
    )
    def recommend(
        request: Request,
        user_id: Annotated[
            str, Query(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(valid_id)
        ],
        q: Annotated[
            str | None,
            Query(max_length=MAX_QUERY_LENGTH, description="a live query"),
            AfterValidator(optional_text(MAX_QUERY_LENGTH)),
        ] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        category: Annotated[ListParam, Query()] = None,
        price_min: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        price_max: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        allow: Annotated[ListParam, Query(description="item ids (comma-separated)")] = None,
        deny: Annotated[ListParam, Query(description="item ids (comma-separated)")] = None,
        explain: Annotated[
            bool,
            Query(description="explain each item (quotes the user's history: user data)"),
        ] = False,
        reasons_: Annotated[
            bool, Query(alias="reasons", description="add a written reason (needs explain)")
        ] = False,
        keep_seen: Annotated[
            bool, Query(description="allow items of the user's history (user data)")
        ] = False,
    ) -> RecommendationOut:
        try:
            filters = Filters(
                categories=_split(category),
                price_min=price_min,
                price_max=price_max,
                allow=_split(allow),
                deny=_split(deny),
            )
        except ValidationError as exc:
            raise HTTPException(422, f"bad filters: {exc.errors()[0]['msg']}") from exc
        if filters.categories is not None:
            _check_categories(engine, filters.categories)
        if reasons_ and reasons is None:
            raise HTTPException(400, "written reasons are off: start the service with --reasons")
        if explain or reasons_ or keep_seen:  # they quote or show the user's own history
            keys.check_user_data(request)
        served = engine.recommend(
            user_id,
            k=k,
            query=q.strip() or None if q is not None else None,
            filters=None if filters.is_empty else filters,
            explain=explain or reasons_,
            keep_seen=keep_seen,
        )
        items = [_item_out(i) for i in served.recommendation.items]
        prompt = served.recommendation.prompt
        if reasons_ and reasons is not None and items:
            written = reasons.write_many(
                [(i.title, i.explanation.text) for i in items if i.explanation is not None],
                served.query,
            )
            for item, text in zip(
                [i for i in items if i.explanation is not None], written, strict=True
            ):
                item.explanation.reason = text  # type: ignore[union-attr]
        return RecommendationOut(
            request_id=served.request_id,
            user_id=user_id,
            arm=served.arm,
            model_version=served.model_version,
            strategy=served.strategy,
            # a query taken from the user's stored searches is user data
            query=served.query if q or keys.may_read_user_data(request) else None,
            cold_start=served.cold_start,
            prompt=prompt.text if explain and prompt is not None else None,
            items=items,
        )

    # ------------------------------------------------------------------ feedback
    @app.post(
        "/events",
        response_model=EventsOut,
        dependencies=[write],
        responses=_errors(400, 404, 422, *keyed),
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

    # ------------------------------------------------------------------ catalogue
    @app.get(
        "/items/{item_id}",
        response_model=dict[str, Any],
        dependencies=[read],
        responses=_errors(404, 422, *reads),
    )
    def get_item(item_id: PathId) -> dict[str, Any]:
        item = engine.item(item_id)
        if item is None:
            raise HTTPException(404, f"item '{item_id}' is not in the catalogue")
        return item

    @app.put(
        "/items/{item_id}",
        response_model=ItemOut,
        dependencies=[write],
        responses=_errors(400, 422, *keyed),
    )
    def put_item(item_id: PathId, body: ItemIn) -> ItemOut:
        fields = body.model_dump()
        fields.pop("item_id", None)
        created = engine.upsert_item(item_id, fields)
        return ItemOut(item_id=item_id, created=created)

    @app.delete(
        "/items/{item_id}",
        status_code=204,
        dependencies=[write],
        responses=_errors(404, 422, *keyed),
    )
    def delete_item(item_id: PathId) -> Response:
        if not engine.delete_item(item_id):
            raise HTTPException(404, f"item '{item_id}' is not in the catalogue")
        return Response(status_code=204)

    # ------------------------------------------------------------------ users
    @app.get(
        "/users",
        response_model=UsersOut,
        dependencies=[read, user_data],
        responses=_errors(422, *reads, *private),
    )
    def users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> UsersOut:
        """Users with the longest histories (for the web page's picker): user data."""
        return UsersOut(users=engine.histories.users(limit))

    @app.get(
        "/users/{user_id}/history",
        response_model=HistoryOut,
        dependencies=[read, user_data],
        responses=_errors(404, 422, *reads, *private),
    )
    def history(user_id: PathId, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> HistoryOut:
        """A user's newest events: user data."""
        snap = engine.snapshot
        h = engine.histories.history(user_id, snap.data, time.time())
        if len(h) == 0 and not engine.histories.knows(user_id):
            raise HTTPException(404, f"user '{user_id}' has no history")
        labels = snap.arms[engine.arm_for(user_id)].recommender._labels()
        recent = list(zip(h.items[::-1], h.events[::-1], strict=True))[:limit]
        return HistoryOut(
            user_id=user_id,
            length=len(h),
            recent=[
                HistoryEntryOut(item_id=str(snap.data.item_ids[i]), title=labels[i], event=e)
                for i, e in recent
            ],
        )

    @app.delete(
        "/users/{user_id}",
        response_model=ForgetOut,
        dependencies=[write],
        responses=_errors(404, 422, *keyed),
    )
    def forget_user(user_id: PathId) -> ForgetOut:
        counts = engine.forget_user(user_id)
        if counts is None:
            raise HTTPException(404, f"user '{user_id}' is not known")
        return ForgetOut(user_id=user_id, **counts)

    # ------------------------------------------------------------------ models and health
    @app.get(
        "/model", response_model=dict[str, Any], dependencies=[read], responses=_errors(*reads)
    )
    def model() -> dict[str, Any]:
        return engine.describe()

    @app.post(
        "/admin/models/activate",
        response_model=dict[str, Any],
        dependencies=[write],
        responses=_errors(400, 404, 409, 422, *keyed),
    )
    def activate(body: ActivateIn) -> dict[str, Any]:
        engine.activate(body.version)
        return engine.describe()

    @app.post(
        "/admin/models/rollback",
        response_model=dict[str, Any],
        dependencies=[write],
        responses=_errors(400, 404, 409, *keyed),
    )
    def rollback() -> dict[str, Any]:
        engine.rollback()
        return engine.describe()

    @app.head("/health", include_in_schema=False)
    def health_probe() -> Response:  # load balancers probe with HEAD
        return Response(status_code=200)

    @app.get("/health", response_model=HealthOut, responses=_errors())
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

    @app.get(
        "/metrics",
        dependencies=[read],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **_errors(*reads)},
    )
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ web page and dashboard
    from promptrec.service import dashboard

    dashboard.mount(app, engine, metrics, read, evaluation, _errors(422, *reads))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


class ErrorResponse(JSONResponse):
    """An error's JSON, all ASCII: a message that quotes the caller's input (even a lone
    surrogate, which UTF-8 cannot encode) always renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _item_out(item: RecommendedItem) -> RecommendedItemOut:
    e = item.explanation
    explanation = None
    if e is not None:
        explanation = ExplanationOut(
            because=[HistoryReasonOut(**vars(r)) for r in e.because],
            query_terms=e.query_terms,
            text=e.to_text(),
        )
    return RecommendedItemOut(
        item_id=item.item_id, title=item.title, score=item.score, explanation=explanation
    )


def _check_categories(engine: Engine, categories: list[str] | tuple[str, ...]) -> None:
    from promptrec.retrieval.filters import item_facets

    known = item_facets(engine.snapshot.data).all_categories
    unknown = [c for c in categories if c.strip().lower() not in known]
    if unknown:
        raise HTTPException(422, f"unknown category {unknown[0]!r}: no item has it")


def _plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
