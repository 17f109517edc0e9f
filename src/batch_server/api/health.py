"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from batch_server.api.deps import Ctx
from batch_server.app_context import AppContext
from batch_server.gpu import host_status
from batch_server.jobs import reports

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Ctx) -> dict:
    return {
        "status": "ok",
        "version": version(),
        "workers": reports.workers(ctx.db),
        "gpu": gpu_status(ctx),
        "host": host_status(ctx.settings.host_max_memory_percent),
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
    workers = reports.workers(ctx.db) if checks["database"] == "ok" else []
    checks["workers"] = len(workers)
    ok = checks["database"] == "ok" and bool(workers)
    if not workers:
        checks["reason"] = "no worker has sent a heartbeat in the last 15 s"
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )


def gpu_status(ctx: AppContext) -> dict:
    return ctx.gpu.status() if ctx.gpu else {"available": False, "monitoring": "off"}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vllm-batch-server")
    except PackageNotFoundError:
        return "dev"
