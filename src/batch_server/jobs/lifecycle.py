"""Batch status transitions: the only code that writes ``batches.status``.

Each transition is one guarded ``UPDATE … WHERE status IN (legal sources)``; a transition
that lost a race changes nothing and returns ``False``. Every change is logged as an event,
and its webhook (if the batch subscribed) enters the outbox in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from batch_server import webhooks
from batch_server.db.tables import BatchEventRow, BatchRow

LIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")

# target status -> statuses it may be reached from
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "in_progress": ("validating",),
    "finalizing": ("in_progress",),
    "completed": ("finalizing",),
    "failed": ("validating", "in_progress", "finalizing"),
    "cancelling": ("validating", "in_progress"),
    "cancelled": ("cancelling",),
    "expired": ("validating", "in_progress", "finalizing"),
}

# Outcomes decided while a batch runs, carried out by finalization.
OUTCOME_OF_STATUS = {"finalizing": "completed", "cancelling": "cancelled"}


def transition(session: Session, batch_id: str, to: str, message: str = "", **fields: Any) -> bool:
    """Move ``batch_id`` to ``to`` if its current status allows it; set ``<to>_at``."""
    sources = TRANSITIONS[to]
    now = int(time.time())
    values: dict[str, Any] = {"status": to, f"{to}_at": now, **fields}
    result = session.execute(
        update(BatchRow)
        .where(BatchRow.id == batch_id, BatchRow.status.in_(sources))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    log_event(session, batch_id, "status", message or f"status → {to}")
    webhooks.status_changed(session, batch_id, to)
    return True


def log_event(session: Session, batch_id: str, kind: str, message: str) -> None:
    session.execute(
        insert(BatchEventRow).values(batch_id=batch_id, at=time.time(), kind=kind, message=message)
    )


def get_batch(session: Session, batch_id: str) -> BatchRow | None:
    return session.execute(select(BatchRow).where(BatchRow.id == batch_id)).scalar()
