"""Batches API, as OpenAI's, plus the one-call multipart upload for curl users."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from batch_server import limits
from batch_server.api.auth import Auth, Principal
from batch_server.api.deps import (
    Ctx,
    Offset,
    check_limit,
    invalid_parameter,
    json_payload,
    paginate,
    verbatim,
)
from batch_server.api.files import creation_limits, get_file, store_upload
from batch_server.api.guards import JSONResponse, check_json
from batch_server.api.openapi import FILE_FIELD, errors, multipart_body
from batch_server.api.uploads import form_file, form_text, read_form
from batch_server.app_context import AppContext
from batch_server.db.tables import BatchEventRow, BatchRow
from batch_server.errors import APIError, Conflict, NotFound
from batch_server.jobs import admission, lifecycle, reports
from batch_server.jobs.manager import InputGone
from batch_server.jobs.validation import validate_input
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
    batch_object,
)
from batch_server.statuses import BatchStatus

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=errors(400, 401))


def parse_create_body(payload: Any) -> CreateBatchBody:
    """The create call's parameters (JSON body or form fields), or OpenAI's 400."""
    try:
        return CreateBatchBody.model_validate(payload)
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def create(ctx: AppContext, body: CreateBatchBody, who: Principal) -> dict[str, Any]:
    new = admission.admit(
        ctx.settings, ctx.db, body, lambda file_id: get_file(ctx, file_id, who), who.owner
    )
    try:
        row = ctx.jobs.create_batch(new)
    except InputGone as exc:  # deleted meanwhile
        raise NotFound("file", new.input_file_id, param="file_id") from exc
    return batch_object(row)


def load(ctx: AppContext, batch_id: str, who: Principal) -> BatchRow:
    """The caller's batch; another tenant's batch is "not found"."""
    with ctx.db.read() as s:
        row = lifecycle.get_batch(s, batch_id)
    if row is None or not who.owns(row.owner):
        raise NotFound("batch", batch_id, param="batch_id")
    return row


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
        return Batch.model_validate(
            await _create_from_upload(request, ctx, who, mine.max_upload_bytes)
        )
    if not content_type.startswith("application/json"):
        raise APIError(
            "Expected an application/json (or multipart/form-data) body",
            code="invalid_content_type",
            status_code=415,
        )
    return Batch.model_validate(create(ctx, parse_create_body(await json_payload(request)), who))


async def _create_from_upload(
    request: Request, ctx: AppContext, who: Principal, max_bytes: int
) -> dict[str, Any]:
    """``curl -F file=@requests.jsonl -F model=…``: upload and create in one call."""
    form = await read_form(request, max_bytes)
    try:
        return await create_from_form(ctx, form, who)
    finally:
        await form.close()


async def create_from_form(ctx: AppContext, form: FormData, who: Principal) -> dict[str, Any]:
    """Store the form's ``file`` and create a batch from it and the form's fields."""
    metadata_raw = form_text(form, "metadata")
    try:
        metadata = json.loads(metadata_raw) if metadata_raw else None
    except (ValueError, RecursionError) as exc:
        raise APIError("'metadata' must be a JSON object", param="metadata") from exc
    body = parse_create_body(
        {
            "input_file_id": "pending",
            "endpoint": form_text(form, "endpoint") or "/v1/chat/completions",
            "completion_window": form_text(form, "completion_window") or "24h",
            "metadata": check_json(metadata, "metadata"),
            "model": form_text(form, "model"),
            "priority": form_text(form, "priority"),
        }
    )
    upload = form_file(form)
    stored = await store_upload(ctx, upload, "batch", who)
    return create(ctx, body.model_copy(update={"input_file_id": stored.id}), who)


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
        if model and model not in ctx.settings.model_aliases():
            raise NotFound("model", model, param="model")
        result = await run_in_threadpool(dry_run, ctx, upload, endpoint, model, who)
    finally:
        await form.close()
    return BatchValidation.model_validate(result)


def dry_run(
    ctx: AppContext, upload: UploadFile, endpoint: str, model: str | None, who: Principal
) -> dict[str, Any]:
    """Validate an uploaded file as a batch of the caller's would be, without storing it."""
    with ctx.db.read() as s:
        max_requests = limits.for_owner(s, ctx.settings, who.owner).max_requests_per_batch
    upload.file.seek(0)
    result = validate_input(
        upload.file,
        ctx.settings,
        endpoint=endpoint,
        model=model,
        max_requests=max_requests,
    )
    return {
        "object": "batch.validation",
        "valid": not result.errors,
        "total": result.total,
        "models": sorted(result.models),
        "errors": result.errors,
    }


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
def retrieve_batch(batch_id: str, ctx: Ctx, who: Auth) -> Batch:
    return Batch.from_row(load(ctx, batch_id, who))


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
    with ctx.db.read() as s:
        events = s.execute(
            select(BatchEventRow)
            .where(BatchEventRow.batch_id == batch_id)
            .order_by(BatchEventRow.id)
        ).scalars()
        data = [{"at": e.at, "kind": e.kind, "message": e.message} for e in events]
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


@router.get("/{batch_id}/requests", response_model=RequestPairs, responses=errors(404, 422))
def request_pairs(
    batch_id: str, ctx: Ctx, who: Auth, limit: int = Query(20), offset: Offset = 0
) -> JSONResponse:
    """Input requests next to their responses or errors, in input order."""
    page = _offset_page(ctx, who, batch_id, offset, limit, 200, reports.request_pairs)[1]
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
