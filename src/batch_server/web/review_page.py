"""The review page, ``/ui/batches/{batch_id}/review``: one request at a time, prompt and
answer side by side, keyboard-driven. The page is a shell; its JavaScript
(static/review.js) reads ``GET /v1/batches/{id}/review`` and stores verdicts through the
annotation API with the login's cookie."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from batch_server.api.auth import OPEN
from batch_server.api.batch_creation import load
from batch_server.api.deps import Ctx
from batch_server.curation.review import FILTERS, ORDERS
from batch_server.web.pages import page_admin, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])


@router.get("/ui/batches/{batch_id}/review")
def review_page(
    request: Request,
    batch_id: str,
    ctx: Ctx,
    filter: str = "all",
    order: str = "input",  # noqa: A002
) -> HTMLResponse:
    batch = load(ctx, batch_id, OPEN)
    return render(
        request,
        "review.html",
        page="review",
        batch=batch,
        filter=filter if filter in FILTERS else "all",
        order=order if order in ORDERS else "input",
    )
