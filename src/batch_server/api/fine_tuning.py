"""Fine-tuning jobs API, as OpenAI's: create, list, retrieve, cancel, events, checkpoints."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select

from batch_server.api.auth import Auth, Principal
from batch_server.api.deps import Ctx, check_limit, invalid_parameter, json_payload
from batch_server.api.files import creation_limits, get_file
from batch_server.api.openapi import errors, json_body
from batch_server.app_context import AppContext
from batch_server.db.pages import paginate
from batch_server.db.tables import (
    FineTuningCheckpointRow,
    FineTuningEventRow,
    FineTuningJobRow,
)
from batch_server.errors import APIError, NotFound
from batch_server.fine_tuning import base_models, hyperparameters, jobs
from batch_server.jobs.admission import check_available, check_metadata
from batch_server.openai_types.fine_tuning import (
    CreateFineTuningJobBody,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], responses=errors(400, 401))

MAX_LIMIT = 100
KIND = "fine-tuning job"


def parse_body(payload: object) -> CreateFineTuningJobBody:
    try:
        return CreateFineTuningJobBody.model_validate(payload)
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def _check_file(ctx: AppContext, file_id: str, param: str, who: Principal) -> None:
    try:
        row = get_file(ctx, file_id, who)
    except NotFound as exc:
        raise APIError(f"invalid {param}: {file_id}", param=param, code="invalid_file") from exc
    if row.purpose != "fine-tune":
        raise APIError(
            f"File {file_id} has purpose '{row.purpose}'; a {param} needs purpose 'fine-tune'",
            param=param,
            code="invalid_file_purpose",
        )


@router.post("", openapi_extra=json_body(CreateFineTuningJobBody), responses=errors(404, 429))
async def create_job(request: Request, ctx: Ctx, who: Auth) -> FineTuningJob:
    creation_limits(ctx, who)
    body = parse_body(await json_payload(request))
    registry = ctx.models.current()
    model_id = registry.resolve(body.model)
    spec = registry.get(model_id) if model_id else None
    if model_id is None or spec is None:
        raise APIError(
            f"Model {body.model} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    check_available(registry, model_id)  # its latest test load did not fail
    if reason := base_models.trainable(spec):
        raise APIError(
            f"Model {body.model} cannot be fine-tuned: {reason}",
            param="model",
            code="model_not_available",
        )
    if body.integrations:
        raise APIError(
            "Integrations are not supported here", param="integrations", code="invalid_value"
        )
    requested = body.requested_hyperparameters()
    try:
        hyperparameters.check(requested)
    except hyperparameters.HyperparameterError as exc:
        raise APIError(
            str(exc), param=f"hyperparameters.{exc.param}", code="invalid_value"
        ) from exc
    _check_file(ctx, body.training_file, "training_file", who)
    if body.validation_file:
        _check_file(ctx, body.validation_file, "validation_file", who)
    row = jobs.create(
        ctx.db,
        owner=who.owner,
        model=model_id,
        training_file=body.training_file,
        validation_file=body.validation_file,
        requested=requested,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        metadata=check_metadata(body.metadata),
    )
    ctx.wake.notify()
    return FineTuningJob.from_row(row)


def get_job(ctx: AppContext, job_id: str, who: Principal) -> FineTuningJobRow:
    """A job of the caller's; another tenant's job is "not found"."""
    row = jobs.get(ctx.db, job_id)
    if row is None or not who.owns(row.owner):
        raise NotFound("fine-tuning job", job_id, param="fine_tuning_job_id")
    return row


def metadata_filter(request: Request) -> dict[str, str]:
    """``metadata[k]=v`` query parameters (the SDK's ``metadata={"k": "v"}``)."""
    found = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            found[key[len("metadata[") : -1]] = value
    return found


@router.get("", responses=errors(404))
def list_jobs(
    request: Request, ctx: Ctx, who: Auth, after: str | None = None, limit: int = Query(20)
) -> FineTuningJobList:
    """Newest first; ``metadata[k]=v`` keeps the jobs whose metadata has each pair."""
    check_limit(limit, MAX_LIMIT)
    query = who.scope(select(FineTuningJobRow), FineTuningJobRow)
    wanted = metadata_filter(request)
    with ctx.db.read() as s:
        if not wanted:
            rows, more = paginate(s, query, FineTuningJobRow, after, limit, True, KIND)
        else:  # few jobs: filtered here, across the dialects' JSON differences
            every, _ = paginate(s, query, FineTuningJobRow, after, 2**31 - 1, True, KIND)
            kept = [r for r in every if wanted.items() <= (r.metadata_ or {}).items()]
            rows, more = kept[:limit], len(kept) > limit
    return FineTuningJobList.of([FineTuningJob.from_row(r) for r in rows], more)


@router.get("/{fine_tuning_job_id}", responses=errors(404))
def retrieve_job(fine_tuning_job_id: str, ctx: Ctx, who: Auth) -> FineTuningJob:
    return FineTuningJob.from_row(get_job(ctx, fine_tuning_job_id, who))


@router.post("/{fine_tuning_job_id}/cancel", responses=errors(404, 409))
def cancel_job(fine_tuning_job_id: str, ctx: Ctx, who: Auth) -> FineTuningJob:
    row = get_job(ctx, fine_tuning_job_id, who)
    if row.status in jobs.ENDED:
        raise APIError(
            f"Job {row.id} has already {row.status} and cannot be cancelled",
            code="invalid_state",
            status_code=409,
        )
    cancelled = jobs.cancel(ctx.db, row.id)
    assert cancelled is not None
    return FineTuningJob.from_row(cancelled)


@router.get("/{fine_tuning_job_id}/events", responses=errors(404))
def list_events(
    fine_tuning_job_id: str, ctx: Ctx, who: Auth, after: str | None = None, limit: int = Query(20)
) -> FineTuningJobEventList:
    """The job's events, newest first (OpenAI's order)."""
    check_limit(limit, MAX_LIMIT)
    row = get_job(ctx, fine_tuning_job_id, who)
    query = select(FineTuningEventRow).where(FineTuningEventRow.job_id == row.id)
    with ctx.db.read() as s:
        rows, more = paginate(s, query, FineTuningEventRow, after, limit, True, "event")
    return FineTuningJobEventList.of([FineTuningJobEvent.from_row(r) for r in rows], more)


@router.get("/{fine_tuning_job_id}/checkpoints", responses=errors(404))
def list_checkpoints(
    fine_tuning_job_id: str, ctx: Ctx, who: Auth, after: str | None = None, limit: int = Query(10)
) -> FineTuningJobCheckpointList:
    """The job's checkpoints, newest first."""
    check_limit(limit, MAX_LIMIT)
    row = get_job(ctx, fine_tuning_job_id, who)
    query = select(FineTuningCheckpointRow).where(FineTuningCheckpointRow.job_id == row.id)
    with ctx.db.read() as s:
        rows, more = paginate(s, query, FineTuningCheckpointRow, after, limit, True, "checkpoint")
    items = [FineTuningJobCheckpoint.from_row(r) for r in rows]
    return FineTuningJobCheckpointList.of(items, more)
