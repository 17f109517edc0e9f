"""Admin endpoints (admin keys only): workers, stuck work, limits, keys, webhook secret."""

from __future__ import annotations

from fastapi import APIRouter, Request

from batch_server import keys, limits, webhooks
from batch_server.api.auth import AdminAuth
from batch_server.api.deps import Ctx, json_payload
from batch_server.api.openapi import errors, json_body
from batch_server.db.tables import ApiKeyRow, RuntimeConfigRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs import reports
from batch_server.openai_types import (
    ApiKey,
    ApiKeyList,
    KeyLimitsUpdate,
    LimitsObject,
    LimitsUpdate,
    ResetResult,
    WebhookSecret,
    WorkerList,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=errors(400, 401, 403))


@router.get("/workers")
def workers(ctx: Ctx, _who: AdminAuth) -> WorkerList:
    data = reports.workers(ctx.db, include_stale=True)
    return WorkerList.model_validate({"object": "list", "data": data})


@router.post("/reset-stuck")
def reset_stuck(ctx: Ctx, _who: AdminAuth) -> ResetResult:
    return ResetResult.model_validate({"object": "admin.reset", **ctx.jobs.reset_stuck()})


@router.get("/limits")
def get_limits(ctx: Ctx, _who: AdminAuth) -> LimitsObject:
    with ctx.db.read() as s:
        server = limits.server_limits(s, ctx.settings)
    return LimitsObject.model_validate({"object": "limits", **server.as_dict()})


@router.patch("/limits", openapi_extra=json_body(LimitsUpdate))
async def set_limits(request: Request, ctx: Ctx, _who: AdminAuth) -> LimitsObject:
    """Change server-wide limits at run time (kept in the database, for every process)."""
    values = limits.check_overrides(await json_payload(request))
    with ctx.db.write() as s:
        row = s.get(RuntimeConfigRow, limits.RUNTIME_KEY)
        if row is None:
            s.add(RuntimeConfigRow(key=limits.RUNTIME_KEY, value=values))
        else:
            row.value = {**row.value, **values}
    return get_limits(ctx, _who)


@router.get("/keys")
def list_keys(ctx: Ctx, _who: AdminAuth) -> ApiKeyList:
    return ApiKeyList(data=[ApiKey.from_row(k) for k in keys.list_keys(ctx.db)])


@router.patch("/keys/{key_id}", openapi_extra=json_body(KeyLimitsUpdate), responses=errors(404))
async def set_key_limits(key_id: str, request: Request, ctx: Ctx, _who: AdminAuth) -> ApiKey:
    """Per-key limits: ``{"limits": {"max_queued_requests": 100, …}}`` (null removes one)."""
    values = await json_payload(request)
    if not isinstance(values, dict) or set(values) - {"limits"}:
        raise APIError('The body is {"limits": {…}}', param="limits", code="invalid_value")
    new = limits.check_overrides(values.get("limits") or {})
    with ctx.db.write() as s:
        row = s.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFound("key", key_id, param="key_id")
        merged = {**(row.limits or {}), **new}
        row.limits = {k: v for k, v in merged.items() if v is not None} or None
        return ApiKey.from_row(row)


@router.get("/webhook-secret")
def webhook_secret(ctx: Ctx, _who: AdminAuth) -> WebhookSecret:
    """The whsec_ secret receivers verify deliveries with."""
    return WebhookSecret(secret=webhooks.signing_secret(ctx.db, ctx.settings))
