"""The queue (live batches in run order, with ETAs) and measured throughput."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query

from batch_server import estimates
from batch_server.api.deps import Ctx
from batch_server.app_context import AppContext
from batch_server.errors import APIError, NotFound
from batch_server.jobs import reports

router = APIRouter(tags=["queue"])


def snapshot(ctx: AppContext) -> dict:
    return reports.queue(ctx.db, ctx.store, ctx.settings.model_aliases())


@router.get("/v1/queue")
def get_queue(ctx: Ctx) -> dict:
    """Running and waiting batches in the order they will run, and the workers."""
    return snapshot(ctx)


@router.get("/v1/queue/{batch_id}")
def get_queue_entry(batch_id: str, ctx: Ctx) -> dict:
    """One batch's queue entry (position, progress, ETA); 404 once it has finished."""
    for entry in snapshot(ctx)["data"]:
        if entry["id"] == batch_id:
            return entry
    raise NotFound("queued batch", batch_id, param="batch_id")


@router.get("/v1/stats/throughput")
def throughput(ctx: Ctx, window: int = Query(3600), bucket: int = Query(60)) -> dict:
    """Requests and tokens per second of all workers over the last ``window`` seconds, in
    ``bucket``-second steps; and each model's learned rate."""
    if not 60 <= window <= 7 * 86400 or not 10 <= bucket <= window or window // bucket > 1000:
        raise APIError(
            "'window' must be 60 s to 7 days and 'bucket' 10 s to 'window', at most 1000 buckets",
            param="bucket",
            code="invalid_value",
        )
    now = time.time()
    with ctx.db.read() as s:
        data = estimates.series(s, now, window, bucket)
        models = estimates.model_rates(s, now)
    return {
        "object": "throughput",
        "window": window,
        "bucket": bucket,
        "data": data,
        "models": {m: r.as_dict() for m, r in models.items()},
    }
