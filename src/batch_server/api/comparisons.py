"""Comparisons API (an extension): run one input on 2..N models, read the answers side by
side with the agreement between the models, store the pick of the better answer, and
export the picks as preference data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from batch_server.api.auth import Auth, Principal
from batch_server.api.comparison_creation import rows_page, start
from batch_server.api.deps import Ctx, check_limit, invalid_parameter, json_payload, verbatim
from batch_server.api.guards import JSONResponse
from batch_server.api.openapi import errors, json_body
from batch_server.app_context import AppContext
from batch_server.db.tables import ComparisonRow
from batch_server.errors import APIError, NotFound
from batch_server.models import comparisons, preferences
from batch_server.openai_types.comparisons import (
    Comparison,
    ComparisonExport,
    ComparisonExportBody,
    ComparisonList,
    ComparisonRows,
    CreateComparisonBody,
    Pick,
    PickBody,
    PickDeleted,
)

router = APIRouter(prefix="/v1/comparisons", tags=["comparisons"], responses=errors(400, 401))


def _body(payload: Any) -> CreateComparisonBody:
    try:
        return CreateComparisonBody.model_validate(payload)
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def _object(ctx: AppContext, row: ComparisonRow, with_agreement: bool) -> Comparison:
    batches = comparisons.batches_of(ctx.db, [row])
    agreement = None
    if with_agreement:
        agreement = comparisons.agreement(ctx.db, ctx.store, row, batches)
    return Comparison.model_validate(comparisons.comparison_object(ctx.db, row, batches, agreement))


@router.post("", openapi_extra=json_body(CreateComparisonBody), responses=errors(404, 429))
async def create_comparison(request: Request, ctx: Ctx, who: Auth) -> Comparison:
    """One linked batch per model on the same input, through the normal queue."""
    row = start(ctx, _body(await json_payload(request)), who)
    return _object(ctx, row, with_agreement=False)


@router.get("", responses=errors(404))
def list_comparisons(
    ctx: Ctx, who: Auth, limit: int = Query(20), after: str | None = None
) -> ComparisonList:
    """Newest first; ``agreement`` is left null (``GET /v1/comparisons/{id}`` computes it)."""
    check_limit(limit, 100)
    rows, more = comparisons.page(ctx.db, who.scoper(ComparisonRow), after, limit)
    batches = comparisons.batches_of(ctx.db, rows)
    items = [
        Comparison.model_validate(comparisons.comparison_object(ctx.db, r, batches)) for r in rows
    ]
    return ComparisonList.of(items, more)


@router.get("/{comparison_id}", responses=errors(404))
def retrieve_comparison(comparison_id: str, ctx: Ctx, who: Auth) -> Comparison:
    """Each model's run (status, counts, throughput, tokens, cost) and the agreement."""
    row = comparisons.get(ctx.db, comparison_id, who.owns)
    return _object(ctx, row, with_agreement=True)


@router.get("/{comparison_id}/rows", response_model=ComparisonRows, responses=errors(404, 422))
def comparison_rows_route(
    comparison_id: str,
    ctx: Ctx,
    who: Auth,
    after: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
    limit: int = Query(20),
    disagree: bool = False,
) -> JSONResponse:
    """Per request (in input order, after input position ``after``): the prompt, each
    model's answer or error, whether they agree, and the stored pick."""
    check_limit(limit, 200)
    row = comparisons.get(ctx.db, comparison_id, who.owns)
    return verbatim(ComparisonRows.model_validate(rows_page(ctx, row, after, limit, disagree)))


def _pick_target(
    ctx: AppContext, comparison_id: str, custom_id: str, who: Principal
) -> ComparisonRow:
    row = comparisons.get(ctx.db, comparison_id, who.owns)
    if not comparisons.has_request(ctx.store, row.input_file_id, custom_id):
        raise NotFound("request", custom_id, param="custom_id")
    return row


@router.put(
    "/{comparison_id}/picks/{custom_id}", openapi_extra=json_body(PickBody), responses=errors(404)
)
async def put_pick(
    comparison_id: str, custom_id: str, request: Request, ctx: Ctx, who: Auth
) -> Pick:
    """Store the better answer's model for one request (``null``: a tie, or neither)."""
    try:
        body = PickBody.model_validate(await json_payload(request))
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc
    return await run_in_threadpool(_store_pick, ctx, comparison_id, custom_id, body, who)


def _store_pick(
    ctx: AppContext, comparison_id: str, custom_id: str, body: PickBody, who: Principal
) -> Pick:
    row = _pick_target(ctx, comparison_id, custom_id, who)
    model = body.model
    if model is not None:
        model = ctx.models.current().resolve(model) or model
        if model not in row.batches:
            raise APIError(
                f"'{body.model}' is not one of this comparison's models ({', '.join(row.batches)})",
                param="model",
                code="invalid_value",
            )
    rater = who.name if who.key_id is not None else None
    pick = comparisons.set_pick(ctx.db, row.id, custom_id, model, rater)
    return Pick.model_validate(comparisons.pick_object(pick))


@router.delete("/{comparison_id}/picks/{custom_id}", responses=errors(404))
def delete_pick(comparison_id: str, custom_id: str, ctx: Ctx, who: Auth) -> PickDeleted:
    """Remove the pick of one request (undo)."""
    row = comparisons.get(ctx.db, comparison_id, who.owns)
    deleted = comparisons.delete_pick(ctx.db, row.id, custom_id)
    return PickDeleted(comparison_id=row.id, custom_id=custom_id, deleted=deleted)


@router.post(
    "/{comparison_id}/exports", openapi_extra=json_body(ComparisonExportBody), responses=errors(404)
)
async def export_preferences(
    comparison_id: str, request: Request, ctx: Ctx, who: Auth
) -> ComparisonExport:
    """The picks as OpenAI preference fine-tuning JSONL, written as a File (purpose
    ``fine-tune``)."""
    try:
        body = ComparisonExportBody.model_validate(await json_payload(request) or {})
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc
    return await run_in_threadpool(_export, ctx, comparison_id, body, who)


def _export(
    ctx: AppContext, comparison_id: str, body: ComparisonExportBody, who: Principal
) -> ComparisonExport:
    row = comparisons.get(ctx.db, comparison_id, who.owns)
    done = preferences.export(ctx.db, ctx.store, row, comparisons.batches_of(ctx.db, [row]))
    return ComparisonExport(
        comparison_id=row.id,
        file_id=done.file.id,
        filename=done.file.filename,
        purpose=done.file.purpose,
        bytes=done.file.bytes,
        format=body.format,
        count=done.count,
        skipped=done.skipped,
        ties=done.ties,
        created_at=done.file.created_at,
    )
