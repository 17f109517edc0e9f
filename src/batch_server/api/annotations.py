"""Annotations API (an extension): ``…/requests/{custom_id}/annotation`` on a batch, and
``GET /v1/annotations`` across batches. Tenancy as for batches: another key's batch, and
its annotations, are "not found"."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select

from batch_server.api.auth import Auth, Principal
from batch_server.api.batch_creation import load
from batch_server.api.deps import Ctx, check_limit, invalid_parameter, json_payload
from batch_server.api.openapi import errors, json_body
from batch_server.app_context import AppContext
from batch_server.curation import annotations as store
from batch_server.curation import requests
from batch_server.db.tables import AnnotationEventRow, AnnotationRow, BatchRow
from batch_server.errors import APIError, NotFound
from batch_server.openai_types.annotations import (
    Annotation,
    AnnotationBody,
    AnnotationChange,
    AnnotationDeleted,
    AnnotationList,
)

router = APIRouter(tags=["annotations"], responses=errors(400, 401, 403, 404))

ID_PREFIX = "annot_"
PATH = "/v1/batches/{batch_id}/requests/{custom_id:path}/annotation"


def annotation_object(
    row: AnnotationRow, history: list[AnnotationEventRow] | None = None
) -> Annotation:
    return Annotation(
        id=f"{ID_PREFIX}{row.id}",
        batch_id=row.batch_id,
        custom_id=row.custom_id,
        request_index=row.request_index,
        model=row.model,
        label=row.label,
        fixed_answer=row.fixed_answer,
        note=row.note,
        rating=row.rating,
        rater=row.rater,
        source=row.source,
        created_at=int(row.created_at),
        updated_at=int(row.updated_at),
        history=None
        if history is None
        else [
            AnnotationChange(
                at=e.at,
                rater=e.rater,
                action=e.action,
                before=e.before,
                after=e.after,
            )
            for e in history
        ],
    )


def _target(ctx: AppContext, batch: BatchRow, custom_id: str) -> store.Target:
    pair = requests.find(ctx.db, ctx.store, batch, custom_id)
    if pair is None:
        raise NotFound("request", custom_id, param="custom_id")
    model = pair.model or batch.model
    return store.Target(batch.id, custom_id, pair.index, batch.owner, model)


def rater_name(who: Principal) -> str | None:
    return who.name if who.key_id is not None else None


@router.put(PATH, openapi_extra=json_body(AnnotationBody))
async def put_annotation(
    batch_id: str, custom_id: str, request: Request, ctx: Ctx, who: Auth
) -> Annotation:
    """Set the annotation of one request (the whole annotation: fields left out are
    cleared). The change is kept in the annotation's history."""
    try:
        body = AnnotationBody.model_validate(await json_payload(request))
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc
    return put(ctx, who, batch_id, custom_id, body, "api")


def put(
    ctx: AppContext,
    who: Principal,
    batch_id: str,
    custom_id: str,
    body: AnnotationBody,
    source: str,
) -> Annotation:
    batch = load(ctx, batch_id, who)
    target = _target(ctx, batch, custom_id)
    verdict = store.Verdict(body.label, body.fixed_answer, body.note, body.rating)
    try:
        row = store.put(ctx.db, target, verdict, rater_name(who), source)
    except store.InvalidAnnotation as exc:
        raise APIError(str(exc), param=exc.param, code="invalid_value") from exc
    return annotation_object(row)


@router.get(PATH)
def get_annotation(batch_id: str, custom_id: str, ctx: Ctx, who: Auth) -> Annotation:
    """One request's annotation with its history."""
    load(ctx, batch_id, who)
    row = store.get(ctx.db, batch_id, custom_id)
    if row is None:
        raise NotFound("annotation", custom_id, param="custom_id")
    return annotation_object(row, store.history(ctx.db, batch_id, custom_id))


@router.delete(PATH)
def delete_annotation(batch_id: str, custom_id: str, ctx: Ctx, who: Auth) -> AnnotationDeleted:
    load(ctx, batch_id, who)
    if not store.delete(ctx.db, batch_id, custom_id, rater_name(who)):
        raise NotFound("annotation", custom_id, param="custom_id")
    return AnnotationDeleted(batch_id=batch_id, custom_id=custom_id, deleted=True)


@router.get("/v1/annotations", responses=errors(422))
def list_annotations(
    ctx: Ctx,
    who: Auth,
    batch_id: str | None = None,
    label: str | None = None,
    rater: str | None = None,
    model: str | None = None,
    after: str | None = None,
    limit: int = Query(20),
) -> AnnotationList:
    """Annotations, newest change first, filtered by batch, label, rater and model."""
    check_limit(limit, 100)
    query = who.scope(select(AnnotationRow), AnnotationRow)
    if batch_id is not None:
        query = query.where(AnnotationRow.batch_id == batch_id)
    if label is not None:
        query = query.where(AnnotationRow.label == label)
    if rater is not None:
        query = query.where(AnnotationRow.rater == rater)
    if model is not None:
        resolved = ctx.models.current().resolve(model) or model
        query = query.where(AnnotationRow.model == resolved)
    if after is not None:
        cursor = _cursor(after)
        found = None
        with ctx.db.read() as s:
            found = s.execute(query.where(AnnotationRow.id == cursor)).scalar()
        if found is None:
            raise NotFound("annotation", after, param="after")
        query = query.where(AnnotationRow.id < cursor)
    with ctx.db.read() as s:
        rows = list(s.execute(query.order_by(AnnotationRow.id.desc()).limit(limit + 1)).scalars())
    return AnnotationList.of([annotation_object(r) for r in rows[:limit]], len(rows) > limit)


def _cursor(after: str) -> int:
    digits = after.removeprefix(ID_PREFIX)
    if not after.startswith(ID_PREFIX) or not digits.isdigit() or len(digits) > 18:
        raise NotFound("annotation", after, param="after")
    return int(digits)
