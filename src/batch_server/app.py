"""The application factory: one FastAPI app built from one ``Settings``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from batch_server import web
from batch_server.api import admin, auth, batches, benchmarks, files, health, history, models, queue
from batch_server.api import admin_models as admin_models_api
from batch_server.api import annotations as annotations_api
from batch_server.api import collections as collections_api
from batch_server.api import comparisons as comparisons_api
from batch_server.api import fine_tuning as fine_tuning_api
from batch_server.api import label_studio as label_studio_api
from batch_server.api import metrics as metrics_api
from batch_server.api import plugins as plugins_api
from batch_server.api import review as review_api
from batch_server.api import webhooks as webhooks_api
from batch_server.api.deps import invalid_parameter
from batch_server.api.guards import EdgeGuard, JSONResponse
from batch_server.api.uploads import STREAMED_UPLOADS
from batch_server.app_context import AppContext
from batch_server.config import Settings
from batch_server.errors import APIError, error_body
from batch_server.logs import RequestContextMiddleware
from batch_server.metrics import DatabaseCollector

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, run_worker: bool = True) -> FastAPI:
    """Build the app; raises :class:`~batch_server.api.auth.UnsafeExposure` when it would
    listen beyond loopback with no API key and without ``allow_open``."""
    ctx = AppContext.build(settings)
    auth.check_exposure(settings, ctx.db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services = ctx.start_services(worker=run_worker)
        try:
            yield
        finally:
            services.stop()
            ctx.db.dispose()

    app = FastAPI(
        title="vLLM Batch Server",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.ctx = ctx
    app.state.registry = CollectorRegistry()
    app.state.registry.register(DatabaseCollector(ctx.db))
    for module in (
        files,
        batches,
        models,
        health,
        admin,
        admin_models_api,
        webhooks_api,
        metrics_api,
        queue,
        history,
        annotations_api,
        collections_api,
        label_studio_api,
        review_api,
        comparisons_api,
        benchmarks,
        fine_tuning_api,
        plugins_api,
    ):
        app.include_router(module.router)
    app.add_middleware(EdgeGuard, settings=settings, streamed=STREAMED_UPLOADS)
    app.add_middleware(RequestContextMiddleware)  # outermost: the guard's answers get ids
    web.install(app)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        # loc[0] is where the value came from: "query", "path" or "body"
        error = invalid_parameter(exc.errors()[0], skip=1, type_status=422)
        return JSONResponse(error.body(), status_code=error.status_code)

    @app.exception_handler(HTTPException)
    async def _http(_req: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        return JSONResponse(error_body(str(exc.detail), code=kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("Internal server error", "server_error"), status_code=500)
