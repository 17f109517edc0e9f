"""The dashboard's benchmarks page: the runs of a model (or all) as a table and their
history as a chart, and a form that queues a new one through ``POST /v1/benchmarks``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from batch_server.api.deps import Ctx
from batch_server.db.tables import BenchmarkRow
from batch_server.models import benchmarks
from batch_server.web.pages import page_admin, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])

PAGE_SIZE = 100  # newest benchmarks shown (and charted)


@router.get("/ui/benchmarks")
def benchmarks_page(request: Request, ctx: Ctx, model: str = "") -> HTMLResponse:
    registry = ctx.models.current()
    wanted = registry.aliases().get(model, model) if model else ""
    query = select(BenchmarkRow).order_by(BenchmarkRow.seq.desc()).limit(PAGE_SIZE)
    if wanted:
        query = query.where(BenchmarkRow.model == wanted)
    with ctx.db.read() as s:
        rows = list(s.execute(query).scalars())
    runs = benchmarks.objects(ctx.db, rows)
    chart = [
        {
            "id": b["id"],
            "model": b["model"],
            "created_at": b["created_at"],
            "requests_per_second": b["figures"]["requests_per_second"],
            "output_tokens_per_second": b["figures"]["output_tokens_per_second"],
        }
        for b in reversed(runs)
        if b["figures"] and b["figures"]["output_tokens_per_second"]
    ]
    return render(
        request,
        "benchmarks.html",
        page="benchmarks",
        runs=runs,
        chart=chart,
        model=wanted,
        models=registry.specs,
    )
