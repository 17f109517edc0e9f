"""Review API (an extension): ``GET /v1/batches/{batch_id}/review``, what the review page
reads. Tenancy as for batches: another key's batch is "not found"."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from batch_server.api.annotations import annotation_object
from batch_server.api.auth import Auth
from batch_server.api.batch_creation import load
from batch_server.api.deps import Ctx, Offset, check_limit, verbatim
from batch_server.api.openapi import errors
from batch_server.app_context import AppContext
from batch_server.curation import annotations as annotation_store
from batch_server.curation import review
from batch_server.curation.requests import RequestPair
from batch_server.errors import APIError
from batch_server.openai_types.review import ReviewCounts, ReviewItem, ReviewPage
from batch_server.plugins.results import render

router = APIRouter(tags=["review"], responses=errors(400, 401, 403, 404, 422))


def _choice(value: str, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        raise APIError(
            f"'{param}' must be one of {', '.join(allowed)}", param=param, code="invalid_value"
        )
    return value


def _storable(custom_id: str) -> bool:
    """Whether the database can hold ``custom_id``: one with a lone surrogate (read from
    an input file as it is) can have no annotation, and cannot be a query parameter."""
    try:
        custom_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def _rendered(ctx: AppContext, pair: RequestPair) -> str | None:
    fragment = render(ctx.plugins, pair.template, pair.fields, pair.response, pair.plugin_error)
    return None if fragment is None else str(fragment)


@router.get("/v1/batches/{batch_id}/review", response_model=ReviewPage)
def review_batch(
    batch_id: str,
    ctx: Ctx,
    who: Auth,
    filter_name: str = Query("all", alias="filter"),
    order: str = Query("input"),
    offset: Offset = 0,
    limit: int = Query(20),
) -> JSONResponse:
    """The batch's requests with their answers, annotations, confidence (mean token
    logprob) and disagreement between compared models; filtered (``unreviewed``, a label,
    ``failed``) and ordered (``input`` or ``least_confident`` first), with review counts."""
    _choice(filter_name, review.FILTERS, "filter")
    _choice(order, review.ORDERS, "order")
    check_limit(limit, 100)
    batch = load(ctx, batch_id, who)
    found = review.page(ctx.db, ctx.store, batch, filter_name, order, offset, limit)
    counts = review.counts(ctx.db, batch)
    notes = annotation_store.for_batch(
        ctx.db, batch.id, [i.pair.custom_id for i in found.items if _storable(i.pair.custom_id)]
    )
    items = []
    for item in found.items:
        pair, text = item.pair, item.answer_text
        value, is_json = review.parsed(text)
        note = notes.get(pair.custom_id)
        items.append(
            ReviewItem(
                index=pair.index,
                custom_id=pair.custom_id,
                model=pair.model or batch.model,
                prompt=review.prompt(pair.request),
                status_code=pair.status_code,
                answer=value,
                answer_text=text,
                answer_is_json=is_json,
                error=pair.error,
                annotation=annotation_object(note) if note is not None else None,
                confidence=item.confidence,
                disagreement=item.disagreement,
                template=pair.template,
                fields=pair.fields,
                plugin_error=pair.plugin_error,
                ratings=pair.ratings,
                rendered=_rendered(ctx, pair),
            )
        )
    return verbatim(
        ReviewPage(
            batch_id=batch.id,
            filter=filter_name,
            order=order,
            offset=offset,
            limit=limit,
            counts=ReviewCounts(
                total=counts.total,
                reviewed=counts.reviewed,
                labels=counts.labels,
                failed=counts.failed,
                matching=found.matching,
            ),
            data=items,
            has_more=found.has_more,
        )
    )
