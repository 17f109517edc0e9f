"""Liveness and readiness."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from batch_server.api.deps import Ctx
from batch_server.app_context import AppContext
from batch_server.db.tables import WorkerRow

router = APIRouter(tags=["health"])

WORKER_FRESH_SECONDS = 15.0


def _workers(ctx: AppContext) -> list[dict]:
    cutoff = time.time() - WORKER_FRESH_SECONDS
    with ctx.db.read() as s:
        rows = s.execute(select(WorkerRow).where(WorkerRow.heartbeat_at >= cutoff)).scalars()
        return [
            {
                "id": w.id,
                "state": w.state,
                "loaded_model": w.loaded_model,
                "current_batch_id": w.current_batch_id,
                "heartbeat_age_seconds": round(time.time() - w.heartbeat_at, 1),
            }
            for w in rows
        ]


@router.get("/health")
def health(ctx: Ctx) -> dict:
    return {
        "status": "ok",
        "version": _version(),
        "workers": _workers(ctx),
        "gpu": ctx.gpu.status() if ctx.gpu else {"available": False, "monitoring": "off"},
    }


@router.get("/ready")
def ready(ctx: Ctx) -> JSONResponse:
    checks: dict[str, object] = {}
    try:
        with ctx.db.read() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise: this endpoint exists to say so
        checks["database"] = f"error: {exc}"
    workers = _workers(ctx) if checks["database"] == "ok" else []
    checks["workers"] = len(workers)
    ok = checks["database"] == "ok" and bool(workers)
    if not workers:
        checks["reason"] = "no worker has sent a heartbeat in the last 15 s"
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm-batch-server")
    except PackageNotFoundError:
        return "dev"
