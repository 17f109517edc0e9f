"""Webhooks: a durable outbox filled in the same transaction as each status change, and a
dispatcher that delivers it, signed per the Standard Webhooks specification.

A delivery is claimed with a lease (like a work unit), so any number of processes may run
a dispatcher on one database and each attempt is made by one of them. A failed attempt is
retried with exponential backoff and jitter; after ``webhook_max_attempts`` the delivery
becomes ``dead`` (the dead letter queue of ``/v1/webhooks/dead-letter``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from batch_server import metrics
from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, RuntimeConfigRow, WebhookDeliveryRow
from batch_server.errors import APIError
from batch_server.logs import bind
from batch_server.openai_types import batch_object

log = logging.getLogger(__name__)

EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled", "batch.progress")
SECRET_KEY = "webhook_secret"


class UrlRefused(ValueError):
    """A webhook URL that may not be called."""


def check_url(url: str, allow_private: bool) -> None:
    """Refuse anything but http(s) URLs to public addresses (unless private is allowed).
    Every address the host resolves to is checked, at creation and again at delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"Webhook URL {url!r} must be an http:// or https:// URL with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"Webhook host {parts.hostname!r} does not resolve: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise UrlRefused(
                f"Webhook URL {url!r} points at a private or loopback address ({address}); "
                "set webhook_allow_private_urls to allow it (local development)"
            )


def subscription(
    settings: Settings, metadata: dict[str, str] | None
) -> tuple[str | None, str | None]:
    """The webhook URL and events of a new batch: ``metadata["webhook_url"]`` and
    ``metadata["webhook_events"]`` (comma-separated), else the server defaults."""
    metadata = metadata or {}
    url = metadata.get("webhook_url") or settings.webhook_url
    if not url:
        return None, None
    raw = metadata.get("webhook_events")
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
    except UrlRefused as exc:
        raise APIError(str(exc), param="metadata.webhook_url", code="invalid_webhook_url") from exc
    return url, ",".join(events)


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


def maybe_progress(s: Session, batch_id: str, interval: float) -> None:
    """Enqueue ``batch.progress`` at most once per ``interval`` seconds per batch."""
    now = time.time()
    due = s.execute(
        update(BatchRow)
        .where(
            BatchRow.id == batch_id,
            BatchRow.webhook_events.contains("batch.progress"),
            or_(
                BatchRow.webhook_progress_at.is_(None),
                BatchRow.webhook_progress_at <= now - interval,
            ),
        )
        .values(webhook_progress_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if due:
        enqueue(s, batch_id, "batch.progress")


# -- signing ---------------------------------------------------------------------------


def signing_secret(db: Database, settings: Settings) -> str:
    """``webhook_secret`` from the settings, else one generated once and kept in the
    database (so every process signs alike); shown by ``GET /v1/admin/webhook-secret``."""
    if settings.webhook_secret:
        return settings.webhook_secret
    with db.read() as s:
        row = s.get(RuntimeConfigRow, SECRET_KEY)
        if row is not None:
            return row.value["secret"]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        with db.write() as s:
            s.add(RuntimeConfigRow(key=SECRET_KEY, value={"secret": secret}))
    except IntegrityError:
        pass  # another process made one first
    with db.read() as s:
        return s.get(RuntimeConfigRow, SECRET_KEY).value["secret"]  # type: ignore[union-attr]


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
        with httpx.Client(timeout=self.settings.webhook_timeout_seconds) as http:
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
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            seq = s.execute(query).scalar()
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
            check_url(row.url, self.settings.webhook_allow_private_urls)
        except UrlRefused as exc:
            return f"refused: {exc}", None
        secret = signing_secret(self.db, self.settings)
        headers = signed_headers(secret, row.id, row.payload, time.time())
        try:
            response = http.post(row.url, content=row.payload.encode(), headers=headers)
        except httpx.HTTPError as exc:
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
            ours = s.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.seq == row.seq, WebhookDeliveryRow.lease_token == token)
                .values(**values)
            ).rowcount
            if ours:
                metrics.increment(s, "webhook_deliveries", {"outcome": outcome})
        level = logging.INFO if error is None else logging.WARNING
        log.log(level, "webhook %s %s attempt %d: %s", row.event, outcome, row.attempts, error)

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: base·2^(n-1), capped, times 0.5–1.0."""
        delay = min(
            self.settings.webhook_retry_base_seconds * 2 ** (attempts - 1),
            self.settings.webhook_retry_max_seconds,
        )
        return delay * random.uniform(0.5, 1.0)


def retry_dead(s: Session, delivery_id: str) -> bool:
    """Send a dead delivery again, with a fresh set of attempts."""
    return bool(
        s.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery_id, WebhookDeliveryRow.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=time.time(), last_error=None)
        ).rowcount
    )
