"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import text

from batch_server import version
from batch_server.api.deps import Ctx
from batch_server.api.openapi import errors
from batch_server.gpu import host_status
from batch_server.jobs import reports
from batch_server.openai_types import Health, Ready, ReadyChecks

router = APIRouter(tags=["health"], responses=errors(400))

# response_model_exclude_unset: the keys that are sometimes left out (``gpu.reason``,
# ``checks.reason``) stay left out; every other key is always set.


@router.get("/health", response_model_exclude_unset=True)
def health(ctx: Ctx) -> Health:
    return Health.model_validate(
        {
            "status": "ok",
            "version": version(),
            "workers": reports.workers(ctx.db),
            "gpu": ctx.gpu.status(),
            "host": host_status(ctx.settings.host_max_memory_percent),
        }
    )


@router.get(
    "/ready",
    responses={503: {"model": Ready, "description": "Not ready (see checks.reason)"}},
    response_model_exclude_unset=True,
)
def ready(ctx: Ctx, response: Response) -> Ready:
    checks: dict[str, Any] = {}
    try:
        with ctx.db.read() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise: this endpoint exists to say so
        checks["database"] = f"error: {exc}"
    workers = reports.workers(ctx.db) if checks["database"] == "ok" else []
    checks["workers"] = len(workers)
    ok = checks["database"] == "ok" and bool(workers)
    if not workers:
        checks["reason"] = "no worker has sent a heartbeat in the last 15 s"
    response.status_code = 200 if ok else 503
    return Ready(status="ready" if ok else "not_ready", checks=ReadyChecks(**checks))
