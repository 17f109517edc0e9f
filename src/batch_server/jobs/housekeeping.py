"""Keeping the database small on a server that runs for months.

Workers run :func:`run` every ``housekeeping_seconds``. Any number of workers may do so at
once: each deletion returns the rows it really removed, and only those are summed.

- Throughput samples (one per worker every few seconds) older than
  ``sample_compact_after_seconds`` are merged into one row per batch, model and hour of
  their end time. A batch's own rate sums its samples, so it stays the same; a model's
  rate over the last days sums samples by their end time, so the merged row (the latest
  end of its hour, the summed engine seconds) moves its window's edge by at most an hour.
  Keep the setting above an hour: the dashboard's chart reads the last hour's samples.
- Delivered webhook events are deleted after ``webhook_retention_days``; the dead letter
  queue is kept until an operator retries or deletes its entries.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Integer, cast, delete, func, insert, select

from batch_server.config import Settings
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import ThroughputSampleRow, WebhookDeliveryRow

log = logging.getLogger(__name__)

S = ThroughputSampleRow
COMPACTED = "(compacted)"  # the worker name of a merged sample
GROUPS_PER_PASS = 200
end_hour = cast(S.ended_at / 3600, Integer)  # the same expression picks and deletes a group


def compact_samples(db: Database, older_than: float, now: float | None = None) -> int:
    """Merge samples older than ``older_than`` seconds into one row per batch, model and
    hour; returns how many rows were removed."""
    cutoff = (time.time() if now is None else now) - older_than
    with db.read() as s:
        groups = s.execute(
            select(S.batch_id, S.model, end_hour)
            .where(S.ended_at < cutoff)
            .group_by(S.batch_id, S.model, end_hour)
            .having(func.count() > 1)
            .limit(GROUPS_PER_PASS)
        ).all()
    removed = 0
    for batch_id, model, hour in groups:
        with db.write() as s:
            rows = s.execute(
                delete(S)
                .where(
                    S.batch_id == batch_id, S.model == model, S.ended_at < cutoff, end_hour == hour
                )
                .returning(S.started_at, S.ended_at, S.requests, S.input_tokens, S.output_tokens)
            ).all()
            if not rows:
                continue
            seconds = sum(r.ended_at - r.started_at for r in rows)
            ended = max(r.ended_at for r in rows)
            s.execute(
                insert(S).values(
                    batch_id=batch_id,
                    model=model,
                    worker=COMPACTED,
                    started_at=ended - seconds,
                    ended_at=ended,
                    requests=sum(r.requests for r in rows),
                    input_tokens=sum(r.input_tokens for r in rows),
                    output_tokens=sum(r.output_tokens for r in rows),
                )
            )
            removed += len(rows) - 1
    return removed


def prune_webhooks(db: Database, older_than: float, now: float | None = None) -> int:
    """Delete delivered webhook events older than ``older_than`` seconds."""
    cutoff = (time.time() if now is None else now) - older_than
    with db.write() as s:
        result = s.execute(
            delete(WebhookDeliveryRow).where(
                WebhookDeliveryRow.status == "delivered", WebhookDeliveryRow.delivered_at < cutoff
            )
        )
        return rowcount(result)


def run(db: Database, settings: Settings) -> None:
    """One pass; failures are logged (housekeeping never stops a worker)."""
    try:
        samples = compact_samples(db, settings.sample_compact_after_seconds)
        hooks = prune_webhooks(db, settings.webhook_retention_days * 86400)
    except Exception:
        log.exception("housekeeping failed")
        return
    if samples or hooks:
        log.info(
            "housekeeping: merged %d throughput samples, deleted %d delivered webhooks",
            samples,
            hooks,
        )
