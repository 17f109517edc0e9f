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
- Files past their ``expires_at`` (an upload's ``expires_after``, a batch's
  ``output_expires_after``) are deleted as ``DELETE /v1/files/{id}`` deletes them (one
  rule, :func:`batch_server.jobs.retention.mark_deleted`): the row is marked deleted and
  the bytes leave the store. The input file of a live batch waits for a later pass.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Integer, cast, delete, func, insert, select

from batch_server.config import Settings
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import FileRow, ThroughputSampleRow, WebhookDeliveryRow
from batch_server.errors import Conflict, NotFound
from batch_server.jobs.retention import mark_deleted
from batch_server.storage import FileStore, make_store

log = logging.getLogger(__name__)

S = ThroughputSampleRow
COMPACTED = "(compacted)"  # the worker name of a merged sample
GROUPS_PER_PASS = 200
FILES_PER_PAGE = 200
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


def delete_expired_files(db: Database, store: FileStore, now: int | None = None) -> int:
    """Delete the files whose ``expires_at`` has passed; returns how many this call
    deleted. Each is deleted in a transaction of its own, under the rule of ``DELETE
    /v1/files/{id}``: one deleted meanwhile (by a user, or another worker's pass) or
    still the input of a live batch is passed over."""
    cutoff = int(time.time()) if now is None else now
    deleted, after = 0, 0
    while True:
        with db.read() as s:
            page = s.execute(
                select(FileRow.seq, FileRow.id)
                .where(
                    FileRow.deleted.is_(False),
                    FileRow.expires_at <= cutoff,
                    FileRow.seq > after,
                )
                .order_by(FileRow.seq)
                .limit(FILES_PER_PAGE)
            ).all()
        if not page:
            return deleted
        after = page[-1].seq
        for _, file_id in page:
            try:
                with db.write() as s:
                    mark_deleted(s, file_id)
            except (NotFound, Conflict):
                continue
            deleted += 1
            try:
                store.delete(file_id)
            except Exception:  # the row is gone already; the next file is not held up
                log.exception("could not remove the bytes of expired file %s", file_id)


def run(db: Database, settings: Settings, store: FileStore | None = None) -> None:
    """One pass; failures are logged (housekeeping never stops a worker). ``store``: the
    worker's file store (one is opened from ``settings`` when not given)."""
    try:
        samples = compact_samples(db, settings.sample_compact_after_seconds)
        hooks = prune_webhooks(db, settings.webhook_retention_days * 86400)
        files = delete_expired_files(db, make_store(settings) if store is None else store)
    except Exception:
        log.exception("housekeeping failed")
        return
    if samples or hooks or files:
        log.info(
            "housekeeping: merged %d throughput samples, deleted %d delivered webhooks "
            "and %d expired files",
            samples,
            hooks,
            files,
        )
