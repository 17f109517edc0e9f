"""Dashboard pages of comparisons: the list with a form to start one from a batch's input,
and one comparison's rows side by side (picks are stored by the page's JavaScript through
``PUT /v1/comparisons/{id}/picks/{custom_id}``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from batch_server.api.auth import Principal
from batch_server.api.comparison_creation import rows_page, start
from batch_server.api.deps import Ctx
from batch_server.api.uploads import form_text, read_form
from batch_server.app_context import AppContext
from batch_server.errors import APIError
from batch_server.models import comparisons
from batch_server.openai_types.comparisons import CreateComparisonBody
from batch_server.web.pages import page_admin, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])
Admin = Annotated[Principal, Depends(page_admin)]
PAGE_ROWS = 50


def _list(
    request: Request,
    ctx: AppContext,
    after: str | None,
    values: dict[str, Any],
    error: str | None = None,
) -> HTMLResponse:
    rows, more = comparisons.page(ctx.db, lambda q: q, after, 25)
    batches = comparisons.batches_of(ctx.db, rows)
    items = [comparisons.comparison_object(ctx.db, r, batches) for r in rows]
    return render(
        request,
        "comparisons.html",
        page="comparisons",
        items=items,
        more=more,
        next_after=rows[-1].id if more else None,
        models=ctx.models.current().specs,
        values=values,
        error=error,
    )


@router.get("/ui/comparisons")
def comparisons_page(
    request: Request, ctx: Ctx, batch_id: str = "", after: str | None = None
) -> HTMLResponse:
    return _list(request, ctx, after or None, {"batch_id": batch_id, "models": []})


@router.post("/ui/comparisons")
async def start_comparison(request: Request, ctx: Ctx, who: Admin) -> Response:
    """The form: a batch id (or input file id) and the models to compare."""
    form = await read_form(request, ctx.settings.max_json_body_bytes)
    try:
        source = (form_text(form, "source") or "").strip()
        models = [str(m) for m in form.getlist("models")]
        values = {"batch_id": source, "models": models}
        kind = "batch_id" if source.startswith("batch_") else "input_file_id"
        body = CreateComparisonBody.model_validate({kind: source or None, "models": models})
        row = start(ctx, body, who)
    except APIError as exc:
        return _list(request, ctx, None, values, error=exc.message)
    finally:
        await form.close()
    return RedirectResponse(f"/ui/comparisons/{row.id}", status_code=303)


@router.get("/ui/comparisons/{comparison_id}")
def comparison_page(
    request: Request,
    comparison_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
    disagree: bool = False,
) -> HTMLResponse:
    row = comparisons.get(ctx.db, comparison_id, lambda _owner: True)
    batches = comparisons.batches_of(ctx.db, [row])
    agreement = comparisons.agreement(ctx.db, ctx.store, row, batches)
    obj = comparisons.comparison_object(ctx.db, row, batches, agreement)
    page = rows_page(ctx, row, after, PAGE_ROWS, disagree)
    total = max((r["request_counts"]["total"] for r in obj["runs"]), default=0)
    return render(
        request,
        "comparison.html",
        page="comparisons",
        c=obj,
        rows=page,
        total=total,
        after=after,
        disagree=disagree,
    )
