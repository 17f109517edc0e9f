"""Batches API, as OpenAI's, plus the one-call multipart upload for curl users."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from batch_server import ids, limits, webhooks
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
from batch_server.api.files import creation_limits, get_file, lock_live_file, store_upload
from batch_server.api.guards import JSONResponse, check_json
from batch_server.api.openapi import FILE_FIELD, errors, multipart_body
from batch_server.api.uploads import form_file, form_text, read_form
from batch_server.app_context import AppContext
from batch_server.db.tables import BatchEventRow, BatchRow
from batch_server.errors import APIError, Conflict, NotFound
from batch_server.jobs import lifecycle, reports
from batch_server.jobs.queue import set_priority
from batch_server.jobs.validation import validate_input
from batch_server.openai_types import (
    MAX_COMPLETION_WINDOW_SECONDS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    SUPPORTED_ENDPOINTS,
    Batch,
    BatchList,
    BatchLog,
    BatchValidation,
    CreateBatchBody,
    FailedRequests,
    Priority,
    PriorityBody,
    RequestPairs,
    batch_object,
)

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=errors(400, 401))

_WINDOW = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PRIORITY = TypeAdapter(Priority)


def window_seconds(window: str) -> int:
    """OpenAI accepts "24h"; other durations ("90m", "30s", "7d") up to 30 days are an
    extension."""
    match = _WINDOW.match(window)
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_COMPLETION_WINDOW_SECONDS:
        raise APIError(
            f"Invalid completion_window '{window}'; use '24h' (or a duration like '90m', "
            f"at most {MAX_COMPLETION_WINDOW_SECONDS // 86400} days)",
            param="completion_window",
            code="invalid_value",
        )
    return seconds


def parse_create_body(payload: Any) -> CreateBatchBody:
    """The create call's parameters (JSON body or form fields), or OpenAI's 400."""
    try:
        return CreateBatchBody.model_validate(payload)
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def batch_priority(body: CreateBatchBody, metadata: dict[str, str] | None) -> int:
    """``priority``, else ``metadata["priority"]``, else 0; within the same bounds."""
    if body.priority is not None:
        return body.priority
    if not metadata or "priority" not in metadata:
        return 0
    try:
        return _PRIORITY.validate_python(int(metadata["priority"]))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise APIError(
            f"metadata 'priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}",
            param="metadata",
            code="invalid_value",
        ) from exc


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    if len(metadata) > 16:
        raise APIError(
            "'metadata' may have at most 16 keys", param="metadata", code="invalid_value"
        )
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise APIError(
                "'metadata' keys are strings of at most 64 characters and values "
                "strings of at most 512",
                param="metadata",
                code="invalid_value",
            )
    return metadata


def create(ctx: AppContext, body: CreateBatchBody, who: Principal) -> dict[str, Any]:
    if body.endpoint not in SUPPORTED_ENDPOINTS:
        raise APIError(
            f"Unsupported endpoint '{body.endpoint}'; supported: {', '.join(SUPPORTED_ENDPOINTS)}",
            param="endpoint",
            code="invalid_value",
        )
    window = window_seconds(body.completion_window)
    metadata = check_metadata(body.metadata)
    model = None
    if body.model:
        model = ctx.settings.model_aliases().get(body.model)
        if model is None:
            raise NotFound("model", body.model, param="model")
    priority = batch_priority(body, metadata)
    hook_url, hook_events = webhooks.subscription(ctx.settings, metadata)
    source = get_file(ctx, body.input_file_id, who)
    if source.purpose != "batch":
        raise APIError(
            f"File '{source.id}' has purpose '{source.purpose}'; batch input files "
            "need purpose 'batch'",
            param="input_file_id",
            code="invalid_value",
        )
    with ctx.db.read() as s:
        mine = limits.for_owner(s, ctx.settings, who.owner)
        queued = limits.queued_requests(s, who.owner)
    if mine.max_queued_requests is not None and queued >= mine.max_queued_requests:
        raise limits.TooManyRequests(
            f"This key already has {queued} requests queued, the limit is "
            f"{mine.max_queued_requests}. Wait for running batches to finish.",
            code="queue_limit_exceeded",
        )
    now = int(time.time())
    row = BatchRow(
        id=ids.batch_id(),
        status="validating",
        endpoint=body.endpoint,
        input_file_id=source.id,
        completion_window=body.completion_window,
        model=model,
        metadata_=metadata,
        priority=priority,
        created_at=now,
        expires_at=now + window,
        total=0,
        completed=0,
        failed=0,
        input_tokens=0,
        cached_tokens=0,
        output_tokens=0,
        owner=who.owner,
        webhook_url=hook_url,
        webhook_events=hook_events,
    )
    with ctx.db.write() as s:
        if not lock_live_file(s, source.id):  # deleted meanwhile
            raise NotFound("file", source.id, param="file_id")
        s.add(row)
        s.flush()
        lifecycle.log_event(s, row.id, "status", "created; status → validating")
    ctx.wake.notify()
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
    row = load(ctx, batch_id, who)
    if row.status not in ("cancelling", "cancelled"):
        with ctx.db.write() as s:
            moved = lifecycle.transition(s, batch_id, "cancelling", "cancel requested")
        if not moved:
            row = load(ctx, batch_id, who)
            if row.status not in ("cancelling", "cancelled"):
                raise Conflict(
                    f"Cannot cancel a batch with status '{row.status}'",
                    param="batch_id",
                    code="invalid_state",
                )
        ctx.wake.notify()
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
    with ctx.db.write() as s:
        old = set_priority(s, batch_id, body.priority)
    if old is None:
        row = load(ctx, batch_id, who)
        raise Conflict(
            f"Cannot change the priority of a batch with status '{row.status}'",
            param="batch_id",
            code="invalid_state",
        )
    ctx.wake.notify()
    return Batch.from_row(load(ctx, batch_id, who))
