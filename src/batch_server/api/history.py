"""``/v1/jobs/history``: finished batches with filters, durations and measured rates (the
queries are :mod:`batch_server.jobs.history`)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from batch_server.api.auth import Auth
from batch_server.api.deps import Ctx, Timestamp, check_limit
from batch_server.api.openapi import errors
from batch_server.db.tables import BatchRow
from batch_server.jobs.history import HistoryFilter, history_objects
from batch_server.openai_types import HistoryList

router = APIRouter(prefix="/v1/jobs", tags=["history"], responses=errors(400, 401))


@router.get("/history", responses=errors(404, 422))
def history(
    ctx: Ctx,
    who: Auth,
    status: str | None = None,
    model: str | None = None,
    since: Timestamp = None,  # created at or after (Unix seconds)
    until: Timestamp = None,  # created before
    q: str | None = Query(None, description="substring of the batch id or its metadata"),
    include_benchmarks: bool = Query(
        False, description="Also list benchmark batches (see /v1/benchmarks)"
    ),
    limit: int = Query(20),
    after: str | None = None,
) -> HistoryList:
    check_limit(limit, 100)
    filters = HistoryFilter.parse(
        status,
        model=model,
        since=since,
        until=until,
        q=q,
        include_benchmarks=include_benchmarks,
    )
    entries, more = history_objects(
        ctx.db, ctx.models.current().aliases(), filters, limit, after, who.scoper(BatchRow)
    )
    return HistoryList.of(entries, more)
