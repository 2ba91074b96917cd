"""The HTTP API (FastAPI): recommendations, events, catalogue and user management, metrics, models.

Build it with :func:`create_app` around an :class:`~promptrec.service.engine.Engine`; run it
with ``promptrec serve`` (uvicorn). Interactive docs are at ``/docs``.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from promptrec import __version__
from promptrec.errors import ConfigError, DataError, ModelError
from promptrec.privacy import pseudonym
from promptrec.recommender import RecommendedItem
from promptrec.retrieval.filters import Filters
from promptrec.service.engine import Engine
from promptrec.service.metrics import Metrics
from promptrec.service.reasons import ReasonWriter
from promptrec.service.schemas import (
    ActivateIn,
    EventsIn,
    EventsOut,
    ExplanationOut,
    ForgetOut,
    HistoryReasonOut,
    ItemIn,
    ItemOut,
    RecommendationOut,
    RecommendedItemOut,
)
from promptrec.service.security import ApiKeys, BodyLimit

log = logging.getLogger("promptrec.service")
STATIC = Path(str(resources.files("promptrec.service") / "static"))
MAX_K = 500


def _split(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated query values as one list."""
    if values is None:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def create_app(
    engine: Engine,
    keys: ApiKeys,
    *,
    max_body_bytes: int = 1 << 20,
    reasons: ReasonWriter | None = None,
    evaluation: Path | None = None,
) -> FastAPI:
    """The service around ``engine``.

    Args:
        engine: the serving engine.
        keys: API keys (every write endpoint requires one).
        max_body_bytes: larger request bodies get 413.
        reasons: a writer of one-sentence reasons (``reasons=true`` on /recommend).
        evaluation: a ``promptrec evaluate --output`` JSON shown on the dashboard.
    """
    app = FastAPI(
        title="promptrec",
        version=__version__,
        description="Real-time recommendations from behaviour and live queries, with "
        "explanations, feedback, A/B arms and hot model swaps.",
    )
    metrics = Metrics(engine)
    app.state.engine, app.state.metrics = engine, metrics
    write, read = Depends(keys.write), Depends(keys.read)

    # ------------------------------------------------------------------ middleware and errors
    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        seconds = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.observe(route, request.method, response.status_code, seconds)
        if log.isEnabledFor(logging.DEBUG):  # the pseudonym's HMAC only when it is logged
            user = request.path_params.get("user_id") or request.query_params.get("user_id")
            log.debug(
                "%s %s %d %.1fms user=%s",
                request.method,
                route,
                response.status_code,
                seconds * 1000,
                pseudonym(user, engine.log_key) if user else "-",
            )
        return response

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = next(e for e in errors if e.get("type") == "json_invalid")
            where = first.get("ctx", {}).get("error", "")
            return JSONResponse({"detail": f"request body is not valid JSON: {where}"}, 400)
        parts = []
        for e in errors:
            loc = ".".join(str(p) for p in e["loc"] if p != "body")
            parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
        return JSONResponse({"detail": "; ".join(parts), "errors": _plain_errors(errors)}, 422)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(ModelError)
    async def model_error(request: Request, exc: ModelError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409)

    # ------------------------------------------------------------------ recommendations
    @app.get("/recommend", response_model=RecommendationOut, dependencies=[read])
    def recommend(
        user_id: Annotated[str, Query(min_length=1, max_length=256)],
        q: Annotated[str | None, Query(max_length=1000, description="a live query")] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        category: Annotated[list[str] | None, Query()] = None,
        price_min: Annotated[float | None, Query(ge=0)] = None,
        price_max: Annotated[float | None, Query(ge=0)] = None,
        allow: Annotated[list[str] | None, Query(description="item ids (comma-separated)")] = None,
        deny: Annotated[list[str] | None, Query(description="item ids (comma-separated)")] = None,
        explain: bool = False,
        reasons_: Annotated[
            bool, Query(alias="reasons", description="add a written reason (needs explain)")
        ] = False,
        keep_seen: bool = False,
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
            query=served.query,
            cold_start=served.cold_start,
            prompt=prompt.text if explain and prompt is not None else None,
            items=items,
        )

    # ------------------------------------------------------------------ feedback
    @app.post("/events", response_model=EventsOut, dependencies=[write])
    def post_events(body: EventsIn, request: Request) -> EventsOut:
        key = request.headers.get("idempotency-key") or body.idempotency_key
        now = time.time()
        index = engine.snapshot.data.item_index
        rows, searches, request_ids = [], [], []
        for n, e in enumerate(body.events):
            stamp = e.seconds(now)
            if e.item_id is None:
                searches.append((e.user_id, e.query, stamp))
                continue
            if e.item_id not in index:
                raise HTTPException(
                    404, f"events[{n}].item_id: item '{e.item_id}' is not in the catalogue"
                )
            rows.append(
                {
                    "user_id": e.user_id,
                    "item_id": e.item_id,
                    "timestamp": stamp,
                    "event": e.event,
                    "value": e.value,
                    "query": e.query,
                }
            )
            request_ids.append(e.request_id)
        frame = pd.DataFrame(
            rows, columns=["user_id", "item_id", "timestamp", "event", "value", "query"]
        )
        result, attributed = engine.add_events(frame, searches, request_ids, idempotency_key=key)
        return EventsOut(
            added=result.added,
            duplicates=result.duplicates,
            searches=0 if result.replayed else len(searches),
            attributed=attributed,
            replayed=result.replayed,
        )

    # ------------------------------------------------------------------ catalogue
    @app.get("/items/{item_id}", dependencies=[read])
    def get_item(item_id: str) -> dict[str, Any]:
        item = engine.item(item_id)
        if item is None:
            raise HTTPException(404, f"item '{item_id}' is not in the catalogue")
        return item

    @app.put("/items/{item_id}", response_model=ItemOut, dependencies=[write])
    def put_item(item_id: str, body: ItemIn) -> ItemOut:
        fields = body.model_dump()
        fields.pop("item_id", None)
        created = engine.upsert_item(item_id, fields)
        return ItemOut(item_id=item_id, created=created)

    @app.delete("/items/{item_id}", status_code=204, dependencies=[write])
    def delete_item(item_id: str) -> Response:
        if not engine.delete_item(item_id):
            raise HTTPException(404, f"item '{item_id}' is not in the catalogue")
        return Response(status_code=204)

    # ------------------------------------------------------------------ users
    @app.get("/users", dependencies=[read])
    def users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, list[str]]:
        """Users with the longest histories (for the web page's picker)."""
        return {"users": engine.live.users(limit)}

    @app.get("/users/{user_id}/history", dependencies=[read])
    def history(user_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        snap = engine.snapshot
        h = engine.live.history(user_id, snap.data, time.time())
        if len(h) == 0 and not engine.live.knows(user_id):
            raise HTTPException(404, f"user '{user_id}' has no history")
        labels = snap.arms[engine.arm_for(user_id)].recommender._labels()
        recent = list(zip(h.items[::-1], h.events[::-1], strict=True))[:limit]
        return {
            "user_id": user_id,
            "length": len(h),
            "recent": [
                {"item_id": str(snap.data.item_ids[i]), "title": labels[i], "event": e}
                for i, e in recent
            ],
        }

    @app.delete("/users/{user_id}", response_model=ForgetOut, dependencies=[write])
    def forget_user(user_id: str) -> ForgetOut:
        counts = engine.forget_user(user_id)
        if counts is None:
            raise HTTPException(404, f"user '{user_id}' is not known")
        return ForgetOut(user_id=user_id, **counts)

    # ------------------------------------------------------------------ models and health
    @app.get("/model", dependencies=[read])
    def model() -> dict[str, Any]:
        return engine.describe()

    @app.post("/admin/models/activate", dependencies=[write])
    def activate(body: ActivateIn) -> dict[str, Any]:
        engine.activate(body.version)
        return engine.describe()

    @app.post("/admin/models/rollback", dependencies=[write])
    def rollback() -> dict[str, Any]:
        engine.rollback()
        return engine.describe()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "items": engine.snapshot.data.n_items}

    @app.get("/metrics", dependencies=[read])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ web page and dashboard
    from promptrec.service import dashboard

    dashboard.mount(app, engine, metrics, read, evaluation)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


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
