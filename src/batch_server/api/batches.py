"""Batches API, as OpenAI's, plus the one-call multipart upload for curl users."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from batch_server.api.auth import Auth, Principal
from batch_server.api.batch_creation import (
    create,
    create_from_form,
    dry_run,
    load,
    parse_create_body,
    status,
)
from batch_server.api.deps import (
    Ctx,
    Offset,
    check_limit,
    json_payload,
    verbatim,
)
from batch_server.api.files import creation_limits
from batch_server.api.guards import JSONResponse
from batch_server.api.openapi import FILE_FIELD, errors, multipart_body
from batch_server.api.uploads import form_file, form_text, read_form
from batch_server.app_context import AppContext
from batch_server.db.pages import paginate
from batch_server.db.tables import BatchRow
from batch_server.errors import APIError, Conflict, NotFound
from batch_server.jobs import reports, result_fields
from batch_server.models.provenance import runs_of
from batch_server.openai_types import (
    SUPPORTED_ENDPOINTS,
    Batch,
    BatchList,
    BatchLog,
    BatchValidation,
    CreateBatchBody,
    FailedRequests,
    PriorityBody,
    RequestPairs,
)
from batch_server.openai_types.benchmarks import BatchRun
from batch_server.statuses import BatchStatus

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=errors(400, 401))


FORM_FIELDS: dict[str, dict[str, Any]] = {
    "file": FILE_FIELD,
    "endpoint": {"type": "string", "enum": list(SUPPORTED_ENDPOINTS)},
    "model": {"type": "string"},
}
CREATE_BODY = multipart_body(
    FORM_FIELDS
    | {
        "completion_window": {"type": "string"},
        "metadata": {"type": "string", "description": "a JSON object of strings"},
        "priority": {"type": "integer"},
    },
    required=["file"],
    json_model=CreateBatchBody,
)


@router.post("", openapi_extra=CREATE_BODY, responses=errors(403, 404, 413, 415, 429))
async def create_batch(request: Request, ctx: Ctx, who: Auth) -> Batch:
    mine = creation_limits(ctx, who)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _create_from_upload(request, ctx, who, mine.max_upload_bytes)
    if not content_type.startswith("application/json"):
        raise APIError(
            "Expected an application/json (or multipart/form-data) body",
            code="invalid_content_type",
            status_code=415,
        )
    return create(ctx, parse_create_body(await json_payload(request)), who)


async def _create_from_upload(
    request: Request, ctx: AppContext, who: Principal, max_bytes: int
) -> Batch:
    """``curl -F file=@requests.jsonl -F model=…``: upload and create in one call."""
    form = await read_form(request, max_bytes)
    try:
        return await create_from_form(ctx, form, who)
    finally:
        await form.close()


@router.post(
    "/validate",
    openapi_extra=multipart_body(FORM_FIELDS, required=["file"]),
    responses=errors(403, 404, 413, 415, 429),
)
async def validate_upload(request: Request, ctx: Ctx, who: Auth) -> BatchValidation:
    """Dry run: validate a JSONL file (multipart ``file``, optional ``model`` and
    ``endpoint``) exactly as a batch would be, without storing or running anything."""
    form = await read_form(request, creation_limits(ctx, who).max_upload_bytes)
    try:
        upload = form_file(form)
        endpoint = form_text(form, "endpoint") or "/v1/chat/completions"
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise APIError(f"Unsupported endpoint '{endpoint}'", param="endpoint")
        model = form_text(form, "model")
        if model and model not in ctx.models.current().aliases():
            raise NotFound("model", model, param="model")
        result = await run_in_threadpool(dry_run, ctx, upload, endpoint, model, who)
    finally:
        await form.close()
    return BatchValidation.model_validate(result)


@router.get("", responses=errors(404, 422))
def list_batches(
    ctx: Ctx, who: Auth, limit: int = Query(20), after: str | None = None
) -> BatchList:
    check_limit(limit, 100)
    with ctx.db.read() as s:
        query = who.scope(select(BatchRow), BatchRow)
        rows, more = paginate(s, query, BatchRow, after, limit, kind="batch")
    return BatchList.of([Batch.from_row(r) for r in rows], more)


@router.get("/{batch_id}", responses=errors(404))
async def retrieve_batch(batch_id: str, ctx: Ctx, who: Auth) -> Batch:
    # Polled by dashboards, SDKs and CI by the hundred per second: one indexed SELECT run
    # on the event loop costs less than the hop to a worker thread that a plain function
    # gets, and it waits for no lock (WAL on SQLite, MVCC on PostgreSQL). Its provenance
    # (an extension) is one more indexed SELECT.
    batch = status(ctx, batch_id, who)
    batch.provenance = [BatchRun.model_validate(run) for run in runs_of(ctx.db, batch_id)]
    return batch


@router.post("/{batch_id}/cancel", responses=errors(403, 404, 409))
def cancel_batch(batch_id: str, ctx: Ctx, who: Auth) -> Batch:
    stopping = (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    row = load(ctx, batch_id, who)
    if row.status not in stopping and not ctx.jobs.cancel(batch_id):
        row = load(ctx, batch_id, who)
        if row.status not in stopping:
            raise Conflict(
                f"Cannot cancel a batch with status '{row.status}'",
                param="batch_id",
                code="invalid_state",
            )
    return Batch.from_row(load(ctx, batch_id, who))


@router.get("/{batch_id}/logs", responses=errors(404))
def batch_logs(batch_id: str, ctx: Ctx, who: Auth) -> BatchLog:
    """What happened to the batch, oldest first (status changes, units, engine errors)."""
    load(ctx, batch_id, who)
    data = reports.batch_events(ctx.db, batch_id)
    return BatchLog.model_validate({"object": "list", "batch_id": batch_id, "data": data})


def _offset_page(
    ctx: AppContext,
    who: Principal,
    batch_id: str,
    offset: int,
    limit: int,
    maximum: int,
    read: Callable[..., tuple[list[dict[str, Any]], bool]],
) -> tuple[BatchRow, dict[str, Any]]:
    check_limit(limit, maximum)
    row = load(ctx, batch_id, who)
    data, more = read(ctx.db, ctx.store, row, offset, limit)
    page = {"object": "list", "batch_id": batch_id, "data": data, "has_more": more}
    return row, page | {"next_offset": offset + len(data) if more else None}


@router.get("/{batch_id}/failed", response_model=FailedRequests, responses=errors(404, 422))
def failed_requests(
    batch_id: str, ctx: Ctx, who: Auth, limit: int = Query(100), offset: Offset = 0
) -> JSONResponse:
    """The batch's failed requests with their errors (from the results while it runs, from
    its error file once finalized); validation errors are in the batch's ``errors``."""
    row, page = _offset_page(ctx, who, batch_id, offset, limit, 1000, reports.failed_requests)
    return verbatim(FailedRequests.model_validate(page | {"validation_errors": row.errors or []}))


FIELD_FILTERS = Query(
    [],
    description="Only requests whose plugin fields pass: NAME:VALUE (equals), NAME>=N, "
    "NAME<=N, NAME>N, NAME<N; repeat for several (all must pass)",
)


@router.get("/{batch_id}/requests", response_model=RequestPairs, responses=errors(404, 422))
def request_pairs(
    batch_id: str,
    ctx: Ctx,
    who: Auth,
    limit: int = Query(20),
    offset: Offset = 0,
    field: list[str] = FIELD_FILTERS,
) -> JSONResponse:
    """Input requests next to their responses or errors and plugin fields, in input
    order; with ``field``, only those whose fields pass every filter."""
    try:
        where = [result_fields.parse_filter(f) for f in field]
    except ValueError as exc:
        raise APIError(str(exc), param="field", code="invalid_value") from exc
    read = functools.partial(reports.request_pairs, where=where)
    page = _offset_page(ctx, who, batch_id, offset, limit, 200, read)[1]
    return verbatim(RequestPairs.model_validate(page))


@router.post("/{batch_id}/priority", responses=errors(403, 404, 409, 422))
def change_priority(batch_id: str, body: PriorityBody, ctx: Ctx, who: Auth) -> Batch:
    """Re-prioritise a batch that is waiting or running: higher runs first."""
    load(ctx, batch_id, who)
    if ctx.jobs.set_priority(batch_id, body.priority) is None:
        row = load(ctx, batch_id, who)
        raise Conflict(
            f"Cannot change the priority of a batch with status '{row.status}'",
            param="batch_id",
            code="invalid_state",
        )
    return Batch.from_row(load(ctx, batch_id, who))
