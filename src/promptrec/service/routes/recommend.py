"""``GET /recommend``: a user's list, with a live query, filters and explanations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import AfterValidator, ValidationError

from promptrec.data.limits import MAX_ID_LENGTH, MAX_QUERY_LENGTH
from promptrec.recommender import RecommendedItem
from promptrec.retrieval.filters import Filters, item_facets
from promptrec.service.engine import Engine
from promptrec.service.routes.common import MAX_K, ListParam, Service, errors, split_values
from promptrec.service.schemas import (
    ExplanationOut,
    HistoryReasonOut,
    RecommendationOut,
    RecommendedItemOut,
    optional_text,
    valid_id,
)


def router(service: Service) -> APIRouter:
    """This module's endpoints, answering for ``service``."""
    engine = service.engine
    keys = service.keys
    read = service.read
    reads = service.reads
    private = service.private
    api = APIRouter()

    @api.get(
        "/recommend",
        response_model=RecommendationOut,
        dependencies=[read],
        responses=errors(400, 422, *reads, *private),
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
                categories=split_values(category),
                price_min=price_min,
                price_max=price_max,
                allow=split_values(allow),
                deny=split_values(deny),
            )
        except ValidationError as exc:
            raise HTTPException(422, f"bad filters: {exc.errors()[0]['msg']}") from exc
        if filters.categories is not None:
            _check_categories(engine, filters.categories)
        if reasons_ and service.reasons is None:
            raise HTTPException(400, "written reasons are off: start the service with --reasons")
        if explain or reasons_ or keep_seen:  # they quote or show the user's own history
            keys.check_user_data(request)
        served = engine.recommend(
            user_id,
            k=k,
            query=q,
            filters=None if filters.is_empty else filters,
            explain=explain or reasons_,
            keep_seen=keep_seen,
        )
        items = [_item_out(i) for i in served.recommendation.items]
        prompt = served.recommendation.prompt
        if reasons_ and service.reasons is not None and items:
            written = service.reasons.write_many(
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
            # a query taken from the user's stored searches is user data: echoed only to a
            # caller who may read it (the caller's own query always is)
            query=served.query
            if served.query_source == "request" or keys.may_read_user_data(request)
            else None,
            cold_start=served.cold_start,
            prompt=prompt.text if explain and prompt is not None else None,
            items=items,
        )

    return api


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
    known = item_facets(engine.snapshot.data).all_categories
    unknown = [c for c in categories if c.strip().lower() not in known]
    if unknown:
        raise HTTPException(422, f"unknown category {unknown[0]!r}: no item has it")
