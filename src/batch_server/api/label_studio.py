"""Label Studio round trip (an extension): send a batch's requests to a Label Studio
project as tasks, and read the annotations made there back. Tenancy as for batches.
Label Studio's failures are answered in OpenAI's error shape, with its URL and the reason
and never the token."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from batch_server.api.auth import Auth
from batch_server.api.batch_creation import load
from batch_server.api.deps import Ctx, invalid_parameter, json_payload
from batch_server.api.openapi import errors, json_body
from batch_server.app_context import AppContext
from batch_server.curation import label_studio
from batch_server.curation.label_studio_client import LabelStudio, LabelStudioError
from batch_server.errors import APIError
from batch_server.openai_types import ErrorResponse
from batch_server.openai_types.label_studio import (
    LabelStudioExport,
    LabelStudioExportBody,
    LabelStudioImport,
    LabelStudioImportBody,
)

UPSTREAM = {"model": ErrorResponse, "description": "Label Studio is unreachable or refused"}
router = APIRouter(tags=["label studio"], responses={**errors(400, 401, 403, 404), 502: UPSTREAM})

PATH = "/v1/batches/{batch_id}/label-studio"
B = TypeVar("B", bound=BaseModel)
R = TypeVar("R")


@router.post(f"{PATH}/export", openapi_extra=json_body(LabelStudioExportBody))
async def export_to_label_studio(
    batch_id: str, request: Request, ctx: Ctx, who: Auth
) -> LabelStudioExport:
    """Send the batch's requests (those the filter selects) to a Label Studio project as
    tasks with the model's answer as a prediction. A request already sent to that project
    is not sent again."""
    body = await _body(request, LabelStudioExportBody)
    batch = load(ctx, batch_id, who)
    f = body.filter
    flt = label_studio.Filter(f.labels, f.custom_ids, f.failed, f.limit)
    with _client(ctx) as ls:
        out = await _upstream(
            lambda: label_studio.export(ctx.db, ctx.store, ls, batch, body.project_id, flt)
        )
        url = ls.project_url(out.project_id)
    return LabelStudioExport(
        batch_id=batch.id,
        project_id=out.project_id,
        project_url=url,
        project_created=out.project_created,
        tasks_created=out.tasks_created,
        already_sent=out.already_sent,
        task_ids=out.task_ids,
    )


@router.post(f"{PATH}/import", openapi_extra=json_body(LabelStudioImportBody))
async def import_from_label_studio(
    batch_id: str, request: Request, ctx: Ctx, who: Auth
) -> LabelStudioImport:
    """Read the annotations of the tasks sent from this batch and write them here as
    annotations (source ``label_studio``, rater the Label Studio user)."""
    body = await _body(request, LabelStudioImportBody)
    batch = load(ctx, batch_id, who)
    with _client(ctx) as ls:
        out = await _upstream(
            lambda: label_studio.pull(ctx.db, ctx.store, ls, batch, body.project_id)
        )
    return LabelStudioImport(
        batch_id=batch.id,
        project_id=body.project_id,
        imported=out.imported,
        unchanged=out.unchanged,
        not_annotated=out.not_annotated,
        skipped=sum(out.skipped.values()),
        skipped_reasons=out.skipped,
    )


async def _body(request: Request, model: type[B]) -> B:
    raw = await request.body()
    try:
        return model.model_validate(await json_payload(request) if raw.strip() else {})
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def _client(ctx: AppContext) -> LabelStudio:
    url, token = ctx.settings.label_studio_url, ctx.settings.label_studio_token
    if not url or token is None or not token.get_secret_value():
        raise APIError(
            "Label Studio is not configured: set label_studio_url and label_studio_token "
            "(BATCH_SERVER_LABEL_STUDIO_URL, BATCH_SERVER_LABEL_STUDIO_TOKEN)",
            code="label_studio_not_configured",
        )
    if not url.startswith(("http://", "https://")):
        raise APIError(
            f"label_studio_url must be an http(s) URL, not {url!r}",
            code="label_studio_not_configured",
        )
    return LabelStudio(url, token.get_secret_value())


async def _upstream(call: Callable[[], R]) -> R:
    """Run a blocking round trip to Label Studio off the event loop; its failures as
    OpenAI-shaped errors."""
    try:
        return await run_in_threadpool(call)
    except LabelStudioError as exc:
        param = "project_id" if exc.code == "label_studio_not_found" else None
        raise APIError(exc.message, param=param, code=exc.code, status_code=exc.status) from None
