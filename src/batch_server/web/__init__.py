"""The dashboard: server-rendered pages under ``/ui`` with a little JavaScript that polls
the JSON APIs. Templates and static assets ship in the package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from batch_server.web import (
    benchmark_pages,
    collection_pages,
    comparison_pages,
    fine_tuning_pages,
    plugin_pages,
    review_page,
)
from batch_server.web.pages import LoginRequired, login_redirect, login_router, router

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.include_router(login_router)
    app.include_router(router)
    app.include_router(collection_pages.router)
    app.include_router(review_page.router)
    app.include_router(comparison_pages.router)
    app.include_router(benchmark_pages.router)
    app.include_router(fine_tuning_pages.router)
    app.include_router(plugin_pages.router)
    app.add_exception_handler(LoginRequired, login_redirect)  # type: ignore[arg-type]
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="static")
