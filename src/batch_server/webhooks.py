"""Webhooks: a durable outbox filled in the same transaction as each status change, and a
dispatcher that delivers it, signed per the Standard Webhooks specification.

A delivery is claimed with a lease (like a work unit), so any number of processes may run
a dispatcher on one database and each attempt is made by one of them. A failed attempt is
retried with exponential backoff and jitter; after ``webhook_max_attempts`` the delivery
becomes ``dead`` (the dead letter queue of ``/v1/webhooks/dead-letter``).

URLs are checked when a batch is created and before every attempt: well-formed http(s),
and (unless ``webhook_allow_private_urls``) every address the host resolves to globally
routable unicast. An attempt resolves the host once and connects only to an address it
checked, so a name that resolves elsewhere a moment later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from batch_server import metrics
from batch_server.config import Settings
from batch_server.db.dialect import skip_locked
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import BatchRow, RuntimeConfigRow, WebhookDeliveryRow
from batch_server.errors import APIError
from batch_server.logs import bind
from batch_server.openai_types import batch_object

log = logging.getLogger(__name__)

EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled", "batch.progress")
SECRET_KEY = "webhook_secret"


MAX_URL_LENGTH = 2048  # the size of the URL columns
# RFC 3986 characters; anything else (spaces, controls, backslashes, non-ASCII) is refused
# rather than left to parsers that may disagree about where the host ends.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.IGNORECASE)
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.IGNORECASE)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the low bits
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated


class UrlInvalid(ValueError):
    """A webhook URL that is not a well-formed http(s) URL."""


class UrlRefused(ValueError):
    """A webhook URL whose host may not be called."""


class UrlUnresolvable(ValueError):
    """A webhook URL whose host name does not resolve (now)."""


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL: where to send, and the host name it names."""

    url: httpx.URL
    host: str  # ASCII: an IP address or a host name (IDNA)
    port: int

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")


def parse_url(url: object) -> Target:
    """Parse a webhook URL, or raise :class:`UrlInvalid` saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise UrlInvalid("Webhook URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlInvalid(f"Webhook URL is longer than {MAX_URL_LENGTH} characters")
    if not _URL_CHARS.fullmatch(url):
        raise UrlInvalid(
            f"Webhook URL {url!r} has characters a URL may not contain "
            "(percent-encode them; write host names in punycode)"
        )
    try:
        parsed = httpx.URL(url)
        port = parsed.port if parsed.port is not None else _DEFAULT_PORTS.get(parsed.scheme, 0)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlInvalid(f"Webhook URL {url!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UrlInvalid(f"Webhook URL {url!r} must be an http:// or https:// URL")
    if parsed.userinfo or "@" in _authority(url):
        raise UrlInvalid("Webhook URL must not carry credentials (user:password@)")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise UrlInvalid(f"Webhook URL {url!r} has no host")
    if not 0 < port < 65536:
        raise UrlInvalid(f"Webhook URL {url!r} has port {port}, outside 1-65535")
    if not _valid_host(host, bracketed=parsed.netloc.startswith(b"[")):
        raise UrlInvalid(f"Webhook URL {url!r} has an invalid host {host!r}")
    return Target(parsed, host, port)


def _authority(url: str) -> str:
    """The ``user@host:port`` part of a URL."""
    return re.split(r"[/?#]", url.partition("//")[2], maxsplit=1)[0]


def _valid_host(host: str, bracketed: bool) -> bool:
    """An IPv6 literal in brackets, a dotted-quad IPv4 address or a DNS name (whose last
    label is not numeric: ``127.1`` or ``0x7f000001`` would be read as IPv4 by resolvers)."""
    if bracketed:
        return _ip(host) is not None
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    name = host.removesuffix(".")
    labels = name.split(".")
    return (
        len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not _NUMERIC_LABEL.fullmatch(labels[-1])
    )


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def refusal(address: IPAddress) -> str | None:
    """Why no webhook may go to ``address``; ``None`` for a globally routable unicast
    address. IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4) are refused when
    that IPv4 address is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return "Teredo tunnel"
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(embedded)
            if reason or address.sixtofour is None:  # mapped, NAT64: the IPv4 address decides
                return reason and f"{reason} (as embedded IPv4 {embedded})"
    kinds = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_multicast", "multicast"),
        ("is_link_local", "link-local"),
        ("is_site_local", "site-local"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    )
    for attribute, kind in kinds:
        if getattr(address, attribute, False):
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address in _IPV4_COMPATIBLE:
        return "IPv4-compatible, deprecated"
    if not address.is_global:  # shared (100.64/10) and other special-purpose ranges
        return "not globally routable"
    return None


def resolve(target: Target) -> list[IPAddress]:
    """Every address of the target's host (an IP literal is its own), in the resolver's
    order, without duplicates."""
    literal = _ip(target.host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlUnresolvable(f"Webhook host {target.host!r} does not resolve: {exc}") from exc
    found = [ipaddress.ip_address(info[4][0]) for info in infos]
    return list(dict.fromkeys(found))


def checked_addresses(target: Target, allow_private: bool) -> list[IPAddress]:
    """Resolve the target once and check every address it resolves to (unless private
    addresses are allowed); a delivery then connects only to these."""
    addresses = resolve(target)
    if not addresses:
        raise UrlUnresolvable(f"Webhook host {target.host!r} has no address")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise UrlRefused(
                    f"Webhook URL {str(target.url)!r} points at {address} ({reason}); "
                    "set webhook_allow_private_urls to allow it (local development)"
                )
    return addresses


def check_url(url: str, allow_private: bool) -> Target:
    """Parse ``url`` and refuse it unless every address of its host may be called."""
    target = parse_url(url)
    if not allow_private:
        try:
            checked_addresses(target, allow_private)
        except UrlUnresolvable as exc:
            raise UrlRefused(str(exc)) from exc
    return target


def subscription(
    settings: Settings, metadata: dict[str, str] | None
) -> tuple[str | None, str | None]:
    """The webhook URL and events of a new batch: ``metadata["webhook_url"]`` and
    ``metadata["webhook_events"]`` (comma-separated), else the server defaults. Raises
    only :class:`APIError`: 400 ``invalid_value`` for a malformed URL or event list, 400
    ``invalid_webhook_url`` for a URL whose host may not be called."""
    metadata = metadata or {}
    url = metadata.get("webhook_url") or settings.webhook_url
    if not url:
        return None, None
    raw = metadata.get("webhook_events")
    if raw is not None and not isinstance(raw, str):
        raise APIError(
            "'webhook_events' must be a comma-separated string",
            param="metadata.webhook_events",
            code="invalid_value",
        )
    events = [e.strip() for e in raw.split(",") if e.strip()] if raw else settings.webhook_events
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise APIError(
            f"Unknown webhook event(s) {unknown}; choose from {', '.join(EVENTS)}",
            param="metadata.webhook_events",
            code="invalid_value",
        )
    try:
        check_url(url, settings.webhook_allow_private_urls)
    except UrlInvalid as exc:
        raise APIError(str(exc), param="metadata.webhook_url", code="invalid_value") from exc
    except UrlRefused as exc:
        raise APIError(str(exc), param="metadata.webhook_url", code="invalid_webhook_url") from exc
    return url, ",".join(e for e in EVENTS if e in events)  # each once, in a known order


# -- the outbox (called inside the status writer's transaction) --------------------------


def enqueue(s: Session, batch_id: str, event: str) -> bool:
    """Add ``event`` for ``batch_id`` to the outbox if the batch subscribed to it."""
    batch = s.execute(
        select(BatchRow).where(BatchRow.id == batch_id).execution_options(populate_existing=True)
    ).scalar()
    subscribed = (batch.webhook_events or "").split(",") if batch is not None else []
    if batch is None or not batch.webhook_url or event not in subscribed:
        return False
    now = time.time()
    payload = {
        "type": event,
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "data": batch_object(batch),
    }
    s.execute(
        insert(WebhookDeliveryRow).values(
            id=f"msg_{secrets.token_hex(12)}",
            batch_id=batch_id,
            owner=batch.owner,
            event=event,
            url=batch.webhook_url,
            payload=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return True


def status_changed(s: Session, batch_id: str, status: str) -> None:
    event = f"batch.{status}"
    if event in EVENTS:
        enqueue(s, batch_id, event)


# -- signing ---------------------------------------------------------------------------


def signing_secret(db: Database, settings: Settings) -> str:
    """``webhook_secret`` from the settings, else one generated once and kept in the
    database (so every process signs alike); shown by ``GET /v1/admin/webhook-secret``."""
    if settings.webhook_secret:
        return settings.webhook_secret
    with db.read() as s:
        stored = _stored_secret(s)
    if stored is not None:
        return stored
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        with db.write() as s:
            s.add(RuntimeConfigRow(key=SECRET_KEY, value={"secret": secret}))
    except IntegrityError:
        pass  # another process made one first
    with db.read() as s:
        stored = _stored_secret(s)
    if stored is None:
        raise RuntimeError("the generated webhook secret was not stored")
    return stored


def _stored_secret(s: Session) -> str | None:
    row = s.get(RuntimeConfigRow, SECRET_KEY)
    return None if row is None else str(row.value["secret"])


def signed_headers(secret: str, msg_id: str, payload: str, at: float) -> dict[str, str]:
    stamp = datetime.fromtimestamp(int(at), UTC)
    return {
        "content-type": "application/json",
        "user-agent": "vllm-batch-server-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": Webhook(secret).sign(msg_id, stamp, payload),
    }


# -- the dispatcher --------------------------------------------------------------------


def delivery_client(timeout: float) -> httpx.Client:
    """The dispatcher's HTTP client: no redirects (a redirect could lead anywhere), and no
    connection kept open, since connections go to pinned addresses and one address may
    serve several host names (a TLS connection is verified for one of them only)."""
    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def post_pinned(
    http: httpx.Client,
    target: Target,
    addresses: list[IPAddress],
    content: bytes,
    headers: dict[str, str],
) -> httpx.Response:
    """POST ``content`` to the first of the checked ``addresses`` that accepts a connection,
    without resolving the host name again (no DNS rebinding between check and send). The
    request names the host in its ``Host`` header and, over TLS, in SNI, against which the
    server's certificate is verified."""
    headers = {**headers, "host": target.host_header}
    extensions = {"sni_hostname": target.host} if _ip(target.host) is None else {}
    error: httpx.ConnectError | None = None
    for address in addresses:
        url = target.url.copy_with(host=str(address))
        try:
            return http.post(url, content=content, headers=headers, extensions=extensions)
        except httpx.ConnectError as exc:
            error = exc
    assert error is not None
    raise error


class Dispatcher:
    """Delivers due outbox rows; one per process (``serve`` and ``worker``)."""

    def __init__(self, settings: Settings, db: Database, poll_seconds: float = 0.5) -> None:
        self.settings = settings
        self.db = db
        self.poll_seconds = poll_seconds
        self.lease_seconds = settings.webhook_timeout_seconds + 10.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_seconds + 5)

    def run(self) -> None:
        with delivery_client(self.settings.webhook_timeout_seconds) as http:
            while not self._stop.is_set():
                try:
                    claimed = self.claim()
                    if claimed is not None:
                        self.deliver(http, *claimed)
                        continue
                except Exception:
                    log.exception("webhook dispatcher step failed")
                self._stop.wait(self.poll_seconds)

    def claim(self) -> tuple[WebhookDeliveryRow, str] | None:
        now = time.time()
        free = or_(
            WebhookDeliveryRow.lease_token.is_(None), WebhookDeliveryRow.lease_expires_at < now
        )
        due = and_(
            WebhookDeliveryRow.status == "pending", WebhookDeliveryRow.next_attempt_at <= now
        )
        query = (
            select(WebhookDeliveryRow.seq)
            .where(due, free)
            .order_by(WebhookDeliveryRow.next_attempt_at)
            .limit(1)
        )
        with self.db.read() as s:  # idle polls take no write lock
            if s.execute(query).scalar() is None:
                return None
        with self.db.write() as s:
            seq = s.execute(skip_locked(s, query)).scalar()
            if seq is None:
                return None
            token = secrets.token_hex(16)
            row = s.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.seq == seq, due, free)
                .values(
                    lease_token=token,
                    lease_expires_at=now + self.lease_seconds,
                    attempts=WebhookDeliveryRow.attempts + 1,
                )
                .returning(WebhookDeliveryRow)
            ).scalar_one_or_none()
            return (row, token) if row is not None else None

    def deliver(self, http: httpx.Client, row: WebhookDeliveryRow, token: str) -> None:
        with bind(batch_id=row.batch_id, request_id=row.id):
            error, code = self._send(http, row)
            self._record(row, token, error, code)

    def _send(self, http: httpx.Client, row: WebhookDeliveryRow) -> tuple[str | None, int | None]:
        try:
            target = parse_url(row.url)
            addresses = checked_addresses(target, self.settings.webhook_allow_private_urls)
        except (UrlInvalid, UrlRefused) as exc:
            return f"refused: {exc}", None
        except UrlUnresolvable as exc:
            return str(exc), None  # perhaps a passing DNS failure: retried
        secret = signing_secret(self.db, self.settings)
        headers = signed_headers(secret, row.id, row.payload, time.time())
        try:
            response = post_pinned(http, target, addresses, row.payload.encode(), headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"{type(exc).__name__}: {exc}", None
        if 200 <= response.status_code < 300:
            return None, response.status_code
        return f"HTTP {response.status_code}: {response.text[:500]}", response.status_code

    def _record(
        self, row: WebhookDeliveryRow, token: str, error: str | None, code: int | None
    ) -> None:
        now = time.time()
        values: dict[str, Any] = {
            "lease_token": None,
            "lease_expires_at": None,
            "last_error": error,
            "last_status_code": code,
        }
        if error is None:
            outcome = "delivered"
            values.update(status="delivered", delivered_at=now)
        elif row.attempts >= self.settings.webhook_max_attempts or error.startswith("refused"):
            outcome = "dead"
            values.update(status="dead")
        else:
            outcome = "failed"
            values.update(next_attempt_at=now + self.backoff(row.attempts))
        with self.db.write() as s:
            ours = rowcount(
                s.execute(
                    update(WebhookDeliveryRow)
                    .where(
                        WebhookDeliveryRow.seq == row.seq, WebhookDeliveryRow.lease_token == token
                    )
                    .values(**values)
                )
            )
            if ours:
                metrics.increment(s, "webhook_deliveries", {"outcome": outcome})
        level = logging.INFO if error is None else logging.WARNING
        log.log(level, "webhook %s %s attempt %d: %s", row.event, outcome, row.attempts, error)

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: base·2^(n-1), capped, times 0.5–1.0."""
        delay = min(
            self.settings.webhook_retry_base_seconds * 2.0 ** (attempts - 1),
            self.settings.webhook_retry_max_seconds,
        )
        return delay * random.uniform(0.5, 1.0)


def retry_dead(s: Session, delivery_id: str) -> bool:
    """Send a dead delivery again, with a fresh set of attempts."""
    return bool(
        rowcount(
            s.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery_id, WebhookDeliveryRow.status == "dead")
                .values(status="pending", attempts=0, next_attempt_at=time.time(), last_error=None)
            )
        )
    )
