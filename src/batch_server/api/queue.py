"""The queue (live batches in run order, with ETAs) and measured throughput."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query

from batch_server import estimates
from batch_server.api.auth import Auth, Principal
from batch_server.api.deps import Ctx
from batch_server.api.openapi import errors
from batch_server.app_context import AppContext
from batch_server.db.tables import BatchRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs import reports
from batch_server.openai_types import MeasuredRate, Queue, QueueEntry, Throughput

router = APIRouter(tags=["queue"], responses=errors(400, 401))


def snapshot(ctx: AppContext, who: Principal) -> dict[str, Any]:
    return reports.visible_queue(
        ctx.db,
        ctx.store,
        ctx.models.current().aliases(),
        None if who.admin else who.scoper(BatchRow),
    )


@router.get("/v1/queue")
def get_queue(ctx: Ctx, who: Auth) -> Queue:
    """Running and waiting batches in the order they will run, and the workers."""
    return Queue.model_validate(snapshot(ctx, who))


@router.get("/v1/queue/{batch_id}", responses=errors(404))
def get_queue_entry(batch_id: str, ctx: Ctx, who: Auth) -> QueueEntry:
    """One batch's queue entry (position, progress, ETA); 404 once it has finished."""
    for entry in snapshot(ctx, who)["data"]:
        if entry["id"] == batch_id:
            return QueueEntry.model_validate(entry)
    raise NotFound("queued batch", batch_id, param="batch_id")


@router.get("/v1/stats/throughput", responses=errors(422))
def throughput(
    ctx: Ctx, who: Auth, window: int = Query(3600), bucket: int = Query(60)
) -> Throughput:
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
    return Throughput.model_validate(
        {
            "object": "throughput",
            "window": window,
            "bucket": bucket,
            "data": data,
            "models": {m: MeasuredRate.model_validate(r.as_dict()) for m, r in models.items()},
        }
    )
