"""Creating, finding and dry-running batches for a caller: the operations the batches
router and the dashboard's submit page share (bodies and forms in, the job manager and
the validator behind)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import Row
from starlette.datastructures import FormData, UploadFile

from batch_server import limits
from batch_server.api.auth import Principal
from batch_server.api.deps import invalid_parameter
from batch_server.api.files import get_file, store_upload
from batch_server.api.guards import check_json
from batch_server.api.uploads import form_file, form_text
from batch_server.app_context import AppContext
from batch_server.db.tables import BatchRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs import admission, lifecycle, reports
from batch_server.jobs.manager import InputGone, NewBatch
from batch_server.jobs.validation import validate_input
from batch_server.models.registry import Registry
from batch_server.openai_types import Batch, CreateBatchBody


def parse_create_body(payload: Any) -> CreateBatchBody:
    """The create call's parameters (JSON body or form fields), or OpenAI's 400."""
    try:
        return CreateBatchBody.model_validate(payload)
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def admit(
    ctx: AppContext, body: CreateBatchBody, who: Principal, registry: Registry | None = None
) -> NewBatch:
    """The caller's batch as admission accepts it (see :func:`admission.admit`), its input
    file looked up among the caller's files; ``registry``: a snapshot already taken."""
    return admission.admit(
        ctx.settings,
        registry or ctx.models.current(),
        ctx.db,
        body,
        lambda file_id: get_file(ctx, file_id, who),
        who.owner,
    )


def create(ctx: AppContext, body: CreateBatchBody, who: Principal) -> Batch:
    new = admit(ctx, body, who)
    try:
        row = ctx.jobs.create_batch(new)
    except InputGone as exc:  # deleted meanwhile
        raise NotFound("file", new.input_file_id, param="file_id") from exc
    return Batch.from_row(row)


def load(ctx: AppContext, batch_id: str, who: Principal) -> BatchRow:
    """The caller's batch; another tenant's batch is "not found"."""
    with ctx.db.read() as s:
        return visible(lifecycle.get_batch(s, batch_id), batch_id, who)


def status(ctx: AppContext, batch_id: str, who: Principal) -> Batch:
    """The caller's batch as an object, read without an ORM session (see reports.batch)."""
    return Batch.from_row(visible(reports.batch(ctx.db, batch_id), batch_id, who))


R = TypeVar("R", BatchRow, Row[Any])


def visible(row: R | None, batch_id: str, who: Principal) -> R:
    """``row``, unless there is none or it is another tenant's: then "not found"."""
    if row is None or not who.owns(row.owner):
        raise NotFound("batch", batch_id, param="batch_id")
    return row


async def create_from_form(ctx: AppContext, form: FormData, who: Principal) -> Batch:
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
        ctx.models.current(),
        endpoint=endpoint,
        model=model,
        max_requests=max_requests,
        plugins=ctx.plugins,
    )
    return {
        "object": "batch.validation",
        "valid": not result.errors,
        "total": result.total,
        "models": sorted(result.models),
        "errors": result.errors,
    }
