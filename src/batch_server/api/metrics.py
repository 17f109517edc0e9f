"""``GET /metrics`` in the Prometheus text format (open, like /health: scrapers carry no
API key; it holds counts, never file contents or ids)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batch_server.api.openapi import binary_response, errors

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses=errors(400) | binary_response(CONTENT_TYPE_LATEST, "Prometheus metrics"),
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
