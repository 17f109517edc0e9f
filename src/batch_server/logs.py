"""Structured logs: every line carries the batch id and a request id (``-`` when none).

HTTP requests get a request id from ``X-Request-ID`` (or a fresh one, echoed back); the
worker binds the batch it works on and an id per step. ``log_json`` switches the output
to one JSON object per line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

batch_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("batch_id", default="-")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [batch=%(batch_id)s req=%(request_id)s] %(message)s"
)


@contextmanager
def bind(*, batch_id: str | None = None, request_id: str | None = None) -> Iterator[None]:
    """Tag every log line inside the block."""
    tokens = []
    if batch_id is not None:
        tokens.append((batch_id_var, batch_id_var.set(batch_id)))
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.batch_id = batch_id_var.get()
        record.request_id = request_id_var.get()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "batch_id": getattr(record, "batch_id", "-"),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JSONFormatter() if as_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


_BATCH_IN_PATH = re.compile(r"/v1/batches/(batch_[A-Za-z0-9]+)")


class RequestContextMiddleware:
    """ASGI middleware binding a request id (and the batch id in the path) for the log lines
    of one HTTP request, and returning the request id as ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given[:64] if re.fullmatch(r"[\w.-]{1,64}", given) else None
        request_id = request_id or f"req_{secrets.token_hex(8)}"
        match = _BATCH_IN_PATH.match(scope.get("path", ""))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        with bind(batch_id=match.group(1) if match else None, request_id=request_id):
            await self.app(scope, receive, send_with_id)
