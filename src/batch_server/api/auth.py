"""Who is calling: API keys as bearer tokens, tenant filters, admin-only endpoints.

``Auth`` is a FastAPI dependency for any router: it yields a :class:`Principal`. With no
active keys in the database the server is open (every caller is an anonymous admin): the
local developer experience. Once a key exists, every request needs one. ``create_app``
refuses to start open on a non-loopback address unless ``allow_open`` is set.

A key comes as a bearer token, or from the dashboard's login as an HttpOnly, SameSite
cookie. A request that changes something without a bearer token must not come from
another site: with the cookie it must name this server in ``Origin`` or ``Referer``; on
an open server (no keys) one that names another site is refused, so a web page cannot
make a visitor's browser submit or cancel batches on a local server. Clients that send
neither header (curl, the SDKs) are not browsers and are not affected.

An open server also answers only to its own names (``allowed_hosts``): a site whose name
was made to resolve to this machine (DNS rebinding) would otherwise be "this server" for
the browser, Origin and all. ``Host`` is the one a trusted proxy forwarded, if any (the
edge guard, api/guards.py, drops forwarded headers from anyone else).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy import Select

from batch_server import keys
from batch_server.api.deps import app_context
from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.errors import APIError

log = logging.getLogger(__name__)


class Unauthorized(APIError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")


class Forbidden(APIError):
    status_code = 403

    def __init__(self, message: str) -> None:
        super().__init__(message, code="permission_denied")


@dataclass(frozen=True)
class Principal:
    """The caller. ``key_id`` is None when the server runs without keys."""

    key_id: str | None
    admin: bool
    name: str = "anonymous"

    @property
    def owner(self) -> str | None:
        """The owner written on objects this caller creates."""
        return self.key_id

    def owns(self, owner: str | None) -> bool:
        return self.admin or owner == self.key_id

    def scope(self, query: Select[Any], model: Any) -> Select[Any]:
        """Restrict ``query`` to this caller's rows (admins see everything)."""
        return query if self.admin else query.where(model.owner == self.key_id)

    def scoper(self, model: Any) -> Callable[[Select[Any]], Select[Any]]:
        """:meth:`scope` for ``model``, as a function for the domain's queries."""
        return lambda query: self.scope(query, model)


OPEN = Principal(key_id=None, admin=True)
SESSION_COOKIE = "batch_server_key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def request_source(request: Request) -> str | None:
    """The site a browser says the request comes from (``Origin``, else ``Referer``)."""
    return request.headers.get("origin") or request.headers.get("referer")


def same_origin(request: Request) -> bool:
    """Whether the request comes from a page of this server."""
    source = request_source(request)
    return bool(source) and urlsplit(source).netloc == request.headers.get("host")


def host_name(value: str) -> str | None:
    """The name in a ``Host`` value or an ``allowed_hosts`` entry, lower case, without
    port or brackets (``"[::1]:4080"`` and ``"::1"`` → ``"::1"``); None if unparsable."""
    value = value.strip()
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"  # a bare IPv6 address
    try:
        name = urlsplit(f"//{value}").hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def check_host(request: Request, settings: Settings) -> None:
    """Refuse a request whose ``Host`` is not one of ``settings.host_names`` (``*``: any).
    A request without ``Host`` (HTTP/1.0) comes from no browser and passes."""
    host = request.headers.get("host")
    names = settings.host_names
    if host is None or "*" in names or host_name(host) in {host_name(n) for n in names} - {None}:
        return
    raise APIError(
        f"This server does not answer to the host name in 'Host: {host}'. Add it to "
        "allowed_hosts (BATCH_SERVER_ALLOWED_HOSTS), or create API keys.",
        code="host_not_allowed",
    )


def check_not_cross_site(request: Request, require_origin: bool) -> None:
    """Refuse a state-changing browser request from another site (see module doc)."""
    if request.method in SAFE_METHODS:
        return
    if same_origin(request) or (not require_origin and request_source(request) is None):
        return
    raise Forbidden(
        "Cross-site request refused: the dashboard's login and an open server accept "
        "changes only from this server's own pages (send the key as a bearer token instead)."
    )


async def principal(request: Request) -> Principal:
    """The caller. Async, so that FastAPI runs it on the event loop: its database reads
    are cached (``ctx.keys``), and a thread hop would cost more than the work."""
    ctx = app_context(request)
    bearer = _bearer(request)
    token = bearer or request.cookies.get(SESSION_COOKIE) or None
    from_cookie = bearer is None and token is not None
    if token is not None:
        key = ctx.keys.lookup(token)
        if key is not None:
            if from_cookie:
                check_not_cross_site(request, require_origin=True)
            return Principal(key_id=key.id, admin=key.admin, name=key.name)
    if not ctx.keys.any_active():
        check_host(request, ctx.settings)
        if bearer is None:
            check_not_cross_site(request, require_origin=False)
        return OPEN
    if token is None:
        raise Unauthorized(
            "Missing API key: send it as 'Authorization: Bearer <key>' "
            "(create one with 'batch-server keys create')."
        )
    raise Unauthorized("Incorrect API key provided, or the key was revoked.")


def require_admin(who: Principal) -> Principal:
    if not who.admin:
        raise Forbidden("This endpoint needs an admin API key.")
    return who


async def admin_principal(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return require_admin(who)


Auth = Annotated[Principal, Depends(principal)]
AdminAuth = Annotated[Principal, Depends(admin_principal)]


class UnsafeExposure(RuntimeError):
    """Listening beyond loopback with no API key and without ``allow_open``."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, db: Database) -> None:
    if is_loopback(settings.host) or keys.any_active(db):
        return
    if settings.allow_open:
        if settings.allowed_hosts is None:
            log.warning(
                "Open server on %s answers only to the host names %s; list the names "
                "clients use in allowed_hosts (or '*').",
                settings.host,
                ", ".join(settings.host_names),
            )
        return
    raise UnsafeExposure(
        f"Refusing to listen on {settings.host} without API keys: anyone who can reach it "
        "could read every file. Create a key with 'batch-server keys create NAME', or set "
        "allow_open (BATCH_SERVER_ALLOW_OPEN=true / --allow-open) to run open on purpose."
    )
