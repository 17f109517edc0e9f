"""The dashboard's fine-tuning pages: the jobs, and one job with its loss curve (an SVG
drawn on the server from the job's step events, so it needs no script), its events and
checkpoints. While a job runs, its page reloads itself every few seconds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from batch_server.api.deps import Ctx
from batch_server.db.tables import FineTuningCheckpointRow, FineTuningEventRow, FineTuningJobRow
from batch_server.errors import NotFound
from batch_server.fine_tuning import jobs
from batch_server.openai_types.fine_tuning import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
)
from batch_server.web.pages import page_admin, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])

PAGE_SIZE = 100
WIDTH, HEIGHT, PAD = 640, 220, 36


def loss_curve(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Polylines of the training and validation loss by step, in the SVG's coordinates."""
    points = [(int(d["step"]), d.get("train_loss"), d.get("valid_loss")) for d in steps]
    losses = [v for _, t, v in points for v in (t, v) if v is not None]
    if not points or not losses:
        return None
    last, top = max(p[0] for p in points), max(losses) or 1.0

    def xy(step: int, loss: float) -> str:
        x = PAD + (WIDTH - 2 * PAD) * (step - 1) / max(1, last - 1)
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * loss / top
        return f"{x:.1f},{y:.1f}"

    return {
        "width": WIDTH,
        "height": HEIGHT,
        "pad": PAD,
        "train": " ".join(xy(s, t) for s, t, _ in points if t is not None),
        "valid": " ".join(xy(s, v) for s, _, v in points if v is not None),
        "top": top,
        "last": last,
        "first_loss": next((t for _, t, _ in points if t is not None), None),
        "last_loss": next((t for _, t, _ in reversed(points) if t is not None), None),
    }


@router.get("/ui/fine-tuning")
def jobs_page(request: Request, ctx: Ctx) -> HTMLResponse:
    query = select(FineTuningJobRow).order_by(FineTuningJobRow.seq.desc()).limit(PAGE_SIZE)
    with ctx.db.read() as s:
        rows = list(s.execute(query).scalars())
    found = [FineTuningJob.from_row(r) for r in rows]
    return render(request, "fine_tuning_jobs.html", page="fine-tuning", jobs=found)


@router.get("/ui/fine-tuning/{job_id}")
def job_page(request: Request, ctx: Ctx, job_id: str) -> HTMLResponse:
    row = jobs.get(ctx.db, job_id)
    if row is None:
        raise NotFound("fine-tuning job", job_id)
    with ctx.db.read() as s:
        events = s.execute(
            select(FineTuningEventRow)
            .where(FineTuningEventRow.job_id == job_id, FineTuningEventRow.type == "message")
            .order_by(FineTuningEventRow.seq.desc())
            .limit(PAGE_SIZE)
        ).scalars()
        messages = [FineTuningJobEvent.from_row(e) for e in events]
        checkpoints = [
            FineTuningJobCheckpoint.from_row(c)
            for c in s.execute(
                select(FineTuningCheckpointRow)
                .where(FineTuningCheckpointRow.job_id == job_id)
                .order_by(FineTuningCheckpointRow.step.desc())
            ).scalars()
        ]
    return render(
        request,
        "fine_tuning_job.html",
        page="fine-tuning",
        job=FineTuningJob.from_row(row),
        curve=loss_curve(jobs.step_metrics(ctx.db, job_id)),
        messages=messages,
        checkpoints=checkpoints,
        live=row.status not in jobs.ENDED,
    )
