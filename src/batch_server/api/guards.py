"""The HTTP edge: what every request passes before any route sees it.

:class:`EdgeGuard` (pure ASGI middleware) does, in this order:

- **proxy headers**: ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` are honoured only from a
  peer in ``trusted_proxies`` (they then set the client address, the scheme and the
  ``Host``); from anyone else they are dropped, so no code behind it can trust them;
- **the URL**: a path or query string whose percent-escapes are not UTF-8 (``%ED%A0%80``,
  an encoded surrogate) or decode to a NUL is refused with 400;
- **bodies**: every body except a multipart upload to a route that streams it
  (``streamed``: :data:`~batch_server.api.uploads.STREAMED_UPLOADS`) is read here, at most
  ``max_json_body_bytes`` (413 from ``Content-Length`` at once, or as soon as a chunked
  body passes it), and replayed to the app. A JSON body whose strings hold a lone UTF-16
  surrogate (``"\\ud800"``) or a NUL is refused with 400: neither can be stored alike
  in SQLite and PostgreSQL (PostgreSQL refuses NULs in text, and a lone surrogate cannot
  be encoded as UTF-8), so such strings never reach the database.

Multipart text fields are checked by :func:`~batch_server.api.uploads.read_form` with the
same :func:`check_text`, and JSON text inside a form field with :func:`check_json`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batch_server.config import Settings
from batch_server.errors import APIError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SURROGATE = re.compile("[\ud800-\udfff]")
FORWARDED_PREFIX = b"x-forwarded-"


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


class BodyTooLarge(APIError):
    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than the limit of {limit} bytes "
            "(files are uploaded with multipart/form-data to /v1/files)",
            code="request_too_large",
        )


# -- text checks (also used for multipart fields) ---------------------------------------


def check_text(
    value: str, param: str | None, where: str | None = None, nul_ok: bool = False
) -> str:
    """``value``, unless it holds a lone surrogate (or a NUL, unless ``nul_ok``): 400.
    ``where`` names the string in the message (default: ``param``)."""
    where = where or (f"'{param}'" if param else "A string")
    if _SURROGATE.search(value):
        raise APIError(
            f"{where} holds a lone UTF-16 surrogate (such as \\ud800): strings must be "
            "valid Unicode",
            param=param,
            code="invalid_string",
        )
    if not nul_ok and "\x00" in value:
        raise APIError(
            f"{where} holds a NUL character (\\u0000), which cannot be stored",
            param=param,
            code="invalid_string",
        )
    return value


def check_json(value: Any, param: str | None = None) -> Any:
    """``value`` (parsed JSON) once every key and string in it passed :func:`check_text`.
    The error's ``param`` is the top-level key, its message names the whole path
    (``'metadata.k'``). Iterative: the parser's depth, not Python's recursion limit,
    bounds it."""
    stack: list[tuple[str | None, Any]] = [(param, value)]
    while stack:
        path, item = stack.pop()
        top = path.split(".")[0] if path else None
        if isinstance(item, str):
            check_text(item, top, f"'{path}'" if path else None)
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(key, top, f"A key in '{path}'" if path else "A key")
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((path, child) for child in item)
    return value


def _check_url(scope: Scope) -> None:
    """Percent-escapes of the path and query must decode to UTF-8 text without a NUL
    (the server decodes them leniently, and a NUL would reach database look-ups)."""
    for part, raw in (("path", scope.get("raw_path") or b""), ("query", scope["query_string"])):
        try:
            text = unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise APIError(
                f"The URL {part} is not valid UTF-8 once percent-decoded",
                param=part,
                code="invalid_encoding",
            ) from None
        check_text(text, part, f"The URL {part}")


# -- responses ------------------------------------------------------------------------


class JSONResponse(StarletteJSONResponse):
    """Starlette's JSON response, except that content JSON has no spelling for, read from
    an input file or an engine's answer, does not fail the request: strings the UTF-8
    encoder refuses (a lone surrogate, or one stored before the edge refused them) are
    sent with JSON escapes, and NaN and ±Infinity (Python's JSON reader takes ``NaN``
    and ``1e999``) as ``null``, as pydantic's JSON mode writes them."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # UnicodeEncodeError is one, as is a float out of range
            pass
        return json.dumps(_finite(content), allow_nan=False, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    """``value`` with every NaN and ±Infinity replaced by ``None``: a copy of its lists and
    dicts, made without recursion (input JSON may be nested as deep as the parser
    allows)."""
    top: list[Any] = [value]
    stack: list[list[Any] | dict[Any, Any]] = [top]
    while stack:
        node = stack.pop()
        pairs = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, item in pairs:
            if isinstance(item, float) and not math.isfinite(item):
                node[key] = None
            elif isinstance(item, dict | list | tuple):
                child: list[Any] | dict[Any, Any] = (
                    dict(item) if isinstance(item, dict) else list(item)
                )
                node[key] = child
                stack.append(child)
    return top[0]


async def _refuse(exc: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(exc.body(), status_code=exc.status_code)(scope, receive, send)


# -- the middleware ---------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    """All values of header ``name``, joined with commas as HTTP says they combine."""
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == name]
    return ",".join(values) if values else None


def _media_type(scope: Scope) -> str:
    return (_header(scope, b"content-type") or "").split(";")[0].strip().lower()


def _is_json(media_type: str) -> bool:
    """The bodies FastAPI parses as JSON: no content type, ``application/json`` or
    ``application/*+json``."""
    return media_type in ("", "application/json") or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class EdgeGuard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings, streamed: Collection[str]) -> None:
        self.app = app
        self.streamed = streamed
        self.max_body = settings.max_json_body_bytes
        self.proxies: tuple[Network, ...] = settings.proxy_networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._resolve_proxy_headers(scope)
        media_type = _media_type(scope)
        try:
            _check_url(scope)
            if not (media_type == "multipart/form-data" and scope["path"] in self.streamed):
                body = await self._read_body(scope, receive)
                if body and _is_json(media_type):
                    _check_json_body(body)
                receive = _replay(body, receive)
        except APIError as exc:
            await _refuse(exc, scope, receive, send)
            return
        except _Disconnected:
            return
        await self.app(scope, receive, send)

    # -- proxies --

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.proxies)

    def _resolve_proxy_headers(self, scope: Scope) -> None:
        headers = scope["headers"]
        if not any(k.startswith(FORWARDED_PREFIX) for k, _ in headers):
            return
        peer = scope.get("client")
        if not (peer and self._trusted(peer[0])):
            scope["headers"] = [(k, v) for k, v in headers if not k.startswith(FORWARDED_PREFIX)]
            return
        client = _forwarded_client(_items(_header(scope, b"x-forwarded-for")), self._trusted)
        if client is not None:
            scope["client"] = (client, 0)
        proto = _items(_header(scope, b"x-forwarded-proto"))
        if proto and proto[-1].lower() in ("http", "https"):
            scope["scheme"] = proto[-1].lower()
        host = _items(_header(scope, b"x-forwarded-host"))
        if host:
            rest = [(k, v) for k, v in scope["headers"] if k != b"host"]
            scope["headers"] = [(b"host", host[-1].encode("latin-1")), *rest]

    # -- bodies --

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, b"content-length")
        if declared and declared.strip().isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge(self.max_body)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            body += message.get("body", b"")
            if len(body) > self.max_body:
                raise BodyTooLarge(self.max_body)
            if not message.get("more_body", False):
                return bytes(body)


def _items(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def _forwarded_client(chain: list[str], trusted: Callable[[str], bool]) -> str | None:
    """The client address in an ``X-Forwarded-For`` chain: the right-most entry that is
    not one of our proxies (each proxy appends the address it received from)."""
    candidates = [a for a in reversed(chain) if not trusted(a)] or chain[:1]
    if not candidates:
        return None
    try:
        return str(ipaddress.ip_address(candidates[0]))
    except ValueError:
        return None


def _check_json_body(body: bytes) -> None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: the route answers that in its own words
    check_json(payload)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``body`` once, then whatever the server says next
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
