"""The plugins page, ``/ui/plugins``: what ``GET /v1/plugins`` lists, with switches that
call the admin API (static/app.js)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from batch_server.api.deps import Ctx
from batch_server.plugins.views import plugin_views
from batch_server.web.pages import page_admin, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])


@router.get("/ui/plugins")
def plugins_page(request: Request, ctx: Ctx) -> HTMLResponse:
    return render(request, "plugins.html", page="plugins", plugins=plugin_views(ctx.plugins))
