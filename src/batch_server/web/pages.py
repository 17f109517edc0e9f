"""Dashboard pages. Each handler gathers data through the same functions as the JSON APIs
and renders one template; the pages' JavaScript then polls those APIs for live values."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from batch_server import estimates, keys, version
from batch_server.api.auth import (
    OPEN,
    SESSION_COOKIE,
    Principal,
    Unauthorized,
    check_not_cross_site,
    principal,
    require_admin,
)
from batch_server.api.batch_creation import create_from_form, dry_run, load
from batch_server.api.deps import Ctx, Offset
from batch_server.api.uploads import form_file, form_text, read_form
from batch_server.app_context import AppContext
from batch_server.errors import APIError
from batch_server.jobs import reports
from batch_server.jobs.history import ALL_STATUSES, HistoryFilter, history_entry, history_page
from batch_server.jobs.lifecycle import LIVE
from batch_server.models import provenance
from batch_server.models import tests as model_tests
from batch_server.openai_types import SUPPORTED_ENDPOINTS
from batch_server.plugins.results import render as render_result


class LoginRequired(Exception):
    """A browser without a (valid, admin) key asked for a page: it goes to the login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


async def page_admin(request: Request) -> Principal:
    """The pages see every batch, so they need an admin key once keys exist: a bearer
    token (scripts, a proxy that adds it) or the login's cookie. A browser without one
    is sent to the login page; a script gets OpenAI's 401/403."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    browser = "authorization" not in request.headers
    try:
        who = await principal(request)
    except Unauthorized:
        if browser:
            raise LoginRequired(target) from None
        raise
    if browser and not who.admin:
        raise LoginRequired(target)
    return require_admin(who)


def login_redirect(_request: Request, exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/ui/login?{urlencode({'next': exc.next_url})}", status_code=303)


router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])
login_router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["session_cookie"] = SESSION_COOKIE


def _datetime(ts: float | None) -> str:
    if not ts:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return estimates.human_duration(seconds)


templates.env.filters["datetime"] = _datetime
templates.env.filters["duration"] = _duration


def render(request: Request, name: str, **context: Any) -> HTMLResponse:
    try:
        return templates.TemplateResponse(request, name, context)
    except UnicodeEncodeError:  # a lone surrogate read from an input file: show U+FFFD
        html = templates.get_template(name).render({"request": request, **context})
        return HTMLResponse(html.encode("utf-8", "replace"))


def _queue(ctx: AppContext) -> dict[str, Any]:
    """The whole queue (the dashboard is for admins)."""
    return reports.visible_queue(ctx.db, ctx.store, ctx.models.current().aliases())


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
def overview(request: Request, ctx: Ctx) -> HTMLResponse:
    queue = _queue(ctx)
    with ctx.db.read() as s:
        rates = estimates.model_rates(s)
    return render(
        request,
        "overview.html",
        page="overview",
        queue=queue,
        version=version(),
        uptime=time.time() - ctx.started_at,
        gpu=ctx.gpu.status(),
        models=ctx.models.current().specs,
        rates=rates,
    )


def _with_queue(request: Request, ctx: AppContext, template: str, **context: Any) -> HTMLResponse:
    return render(request, template, queue=_queue(ctx), **context)


@router.get("/ui/fragments/status")
def status_fragment(request: Request, ctx: Ctx) -> HTMLResponse:
    """The overview's live part (workers and queue depth), re-fetched by the page."""
    return _with_queue(request, ctx, "_status.html")


@router.get("/ui/queue")
def queue_page(request: Request, ctx: Ctx) -> HTMLResponse:
    return _with_queue(request, ctx, "queue.html", page="queue")


@router.get("/ui/queue/rows")
def queue_rows(request: Request, ctx: Ctx) -> HTMLResponse:
    """The queue table's rows, re-fetched when batches join, leave or change order."""
    return _with_queue(request, ctx, "_queue_rows.html")


@router.get("/ui/batches")
def batches_page(
    request: Request,
    ctx: Ctx,
    status: str = "all",
    model: str = "",
    q: str = "",
    since: str = "",
    until: str = "",
    after: str | None = None,
    include_benchmarks: bool = False,
) -> HTMLResponse:
    error = None
    try:
        filters = HistoryFilter.parse(
            status or "all",
            model=model or None,
            q=q or None,
            since=_date(since, "since"),
            until=_date(until, "until", end_of_day=True),
            include_benchmarks=include_benchmarks,
        )
        rows, more = history_page(
            ctx.db, ctx.models.current().aliases(), filters, 25, after or None
        )
    except APIError as exc:
        error, rows, more = exc.message, [], False
    form = {"status": status, "model": model, "q": q, "since": since, "until": until}
    if include_benchmarks:
        form["include_benchmarks"] = "true"
    return render(
        request,
        "batches.html",
        page="batches",
        rows=rows,
        more=more,
        error=error,
        form=form,
        next_query=urlencode(form | {"after": rows[-1]["id"]}) if more else "",
        statuses=ALL_STATUSES,
        models=ctx.models.current().specs,
    )


def _date(value: str, param: str, end_of_day: bool = False) -> int | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise APIError(f"'{param}' must be a date (YYYY-MM-DD)", param=param) from exc
    return int(day.timestamp()) + (86400 if end_of_day else 0)


@router.get("/ui/batches/{batch_id}")
def batch_page(request: Request, batch_id: str, ctx: Ctx, offset: Offset = 0) -> HTMLResponse:
    row = load(ctx, batch_id, OPEN)
    with ctx.db.read() as s:
        rate = estimates.batch_rates(s, [batch_id]).get(batch_id)
    events = reports.batch_events(ctx.db, batch_id)
    failures, more_failures = reports.failed_requests(ctx.db, ctx.store, row, 0, 50)
    pairs, more_pairs = reports.request_pairs(ctx.db, ctx.store, row, offset, 10)
    for p in pairs:  # a plugin's fragment (its error box if it raised)
        p["rendered"] = render_result(
            ctx.plugins, p["template"], p["fields"], p["response"], p["plugin_error"]
        )
    entry = next(
        (e for e in _queue(ctx)["data"] if e["id"] == batch_id),
        None,
    )
    return render(
        request,
        "batch.html",
        page="batches",
        batch=history_entry(row, rate),
        live=row.status in LIVE,
        entry=entry,
        events=events,
        failures=failures,
        more_failures=more_failures,
        pairs=pairs,
        offset=offset,
        more_pairs=more_pairs,
        provenance=provenance.runs_of(ctx.db, batch_id),
    )


@router.get("/ui/submit")
def submit_page(request: Request, ctx: Ctx) -> HTMLResponse:
    return _submit_form(request, ctx)


def _submit_form(
    request: Request,
    ctx: Ctx,
    result: dict[str, Any] | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "submit.html",
        page="submit",
        models=ctx.models.current().specs,
        endpoints=SUPPORTED_ENDPOINTS,
        result=result,
        values=values or {"priority": "0", "completion_window": "24h"},
    )


async def _check(ctx: Ctx, form: FormData) -> tuple[dict[str, str], dict[str, Any]]:
    """The form's values and the dry-run validation of its file."""
    values = {k: form_text(form, k) or "" for k in ("model", "priority", "endpoint")}
    values["completion_window"] = form_text(form, "completion_window") or "24h"
    try:
        upload = form_file(form)
        endpoint = values["endpoint"] or SUPPORTED_ENDPOINTS[0]
        model = values["model"] or None
        result = await run_in_threadpool(dry_run, ctx, upload, endpoint, model, OPEN)
    except APIError as exc:
        result = {"valid": False, "total": 0, "errors": [{"line": None, **exc.body()["error"]}]}
    return values, result


@router.post("/ui/submit/check")
async def check_file(request: Request, ctx: Ctx) -> HTMLResponse:
    """The validation of a chosen file, shown before the form is submitted."""
    form = await read_form(request, ctx.settings.max_upload_bytes)
    try:
        _values, result = await _check(ctx, form)
    finally:
        await form.close()
    return render(request, "_validation.html", result=result)


@router.post("/ui/submit")
async def submit_form(request: Request, ctx: Ctx) -> Response:
    """Validate first: a file with errors is shown again with its line numbers and no
    batch is created; a valid one becomes a batch and the browser goes to its page."""
    form = await read_form(request, ctx.settings.max_upload_bytes)
    try:
        values, result = await _check(ctx, form)
        if result["valid"]:
            try:
                batch = await create_from_form(ctx, form, OPEN)
            except APIError as exc:
                error = {"line": None, **exc.body()["error"]}
                result = {"valid": False, "total": 0, "errors": [error]}
            else:
                return RedirectResponse(f"/ui/batches/{batch.id}", status_code=303)
    finally:
        await form.close()
    return _submit_form(request, ctx, result, values)


@router.get("/ui/models")
def models_page(request: Request, ctx: Ctx) -> HTMLResponse:
    with ctx.db.read() as s:
        rates = estimates.model_rates(s)
    loaded: dict[str, list[str]] = {}
    for w in reports.workers(ctx.db):
        if w["loaded_model"]:
            loaded.setdefault(w["loaded_model"], []).append(w["id"])
    registry = ctx.models.current()
    return render(
        request,
        "models.html",
        page="models",
        models=registry.specs,
        rates=rates,
        loaded=loaded,
        states=registry.states,  # origin and test status (the registry's admin view)
        tests=model_tests.latest(ctx.db),
    )


# -- login -------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a path of the dashboard itself (no open redirect to another site)."""
    if value and value.startswith("/ui") and not value.startswith("//"):
        return value
    return "/ui"


@login_router.get("/ui/login")
def login_page(request: Request, ctx: Ctx, next: str | None = None) -> Response:  # noqa: A002
    if not keys.any_active(ctx.db):  # an open server needs no login
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", page="login", next=_safe_next(next), error=None)


LOGIN_FORM_LIMIT = 16 * 1024


@login_router.post("/ui/login")
async def login(request: Request, ctx: Ctx) -> Response:
    """Check the key and keep it in an HttpOnly, SameSite=Lax cookie (a link from another
    site still opens the dashboard; changes need this server's Origin, see auth)."""
    check_not_cross_site(request, require_origin=False)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_FORM_LIMIT:
            raise APIError("The login form is too large", code="file_too_large", status_code=413)
    form = parse_qs(body.decode("utf-8", errors="replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or [""])[0])
    row = keys.lookup(ctx.db, key) if key else None
    error = None
    if row is None:
        error = "This API key is not valid (or was revoked)."
    elif not row.admin:
        error = "The dashboard shows every batch: it needs an admin API key."
    if error:
        refused = render(request, "login.html", page="login", next=target, error=error)
        refused.status_code = 401 if row is None else 403
        return refused
    response = RedirectResponse(target, status_code=303)
    https = request.url.scheme == "https"  # a trusted proxy's X-Forwarded-Proto counts
    response.set_cookie(SESSION_COOKIE, key, httponly=True, samesite="lax", secure=https, path="/")
    return response


@login_router.post("/ui/logout")
def logout(request: Request) -> RedirectResponse:
    check_not_cross_site(request, require_origin=False)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
