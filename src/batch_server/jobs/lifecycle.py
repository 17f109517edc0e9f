"""Batch status transitions: the only code that writes ``batches.status`` and its
``pending_outcome``.

Each transition is one guarded ``UPDATE … WHERE status IN (legal sources)``; a transition
that lost a race changes nothing and returns ``False``. Every change is logged as an event,
and its webhook (if the batch subscribed) enters the outbox in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.orm import Session

from batch_server import webhooks
from batch_server.db.session import rowcount
from batch_server.db.tables import BatchEventRow, BatchRow
from batch_server.statuses import LIVE, OPEN, TERMINAL, BatchStatus

__all__ = ["LIVE", "OPEN", "TERMINAL", "BatchStatus", "transition", "log_event", "get_batch"]

B = BatchStatus
# target status -> statuses it may be reached from
TRANSITIONS: dict[BatchStatus, tuple[BatchStatus, ...]] = {
    B.IN_PROGRESS: (B.VALIDATING,),
    B.FINALIZING: (B.IN_PROGRESS,),
    B.COMPLETED: (B.FINALIZING,),
    B.FAILED: (B.VALIDATING, B.IN_PROGRESS, B.FINALIZING),
    B.CANCELLING: (B.VALIDATING, B.IN_PROGRESS),
    B.CANCELLED: (B.CANCELLING,),
    B.EXPIRED: (B.VALIDATING, B.IN_PROGRESS, B.FINALIZING),
}

# Outcomes decided while a batch runs, carried out by finalization.
OUTCOME_OF_STATUS = {B.FINALIZING: B.COMPLETED, B.CANCELLING: B.CANCELLED}

# An outcome (failed, expired) can be decided for a batch that is validating or running;
# until finalization carries it out, the batch keeps its status with ``pending_outcome``
# set. These predicates are the one place that reads the pair.


def undecided() -> ColumnElement[bool]:
    """Open (validating or running) with no outcome decided yet: may be validated, run,
    re-prioritised, or given an outcome."""
    return and_(BatchRow.status.in_(OPEN), BatchRow.pending_outcome.is_(None))


def runnable() -> ColumnElement[bool]:
    """Running, with no outcome decided: its units may be claimed."""
    return and_(BatchRow.status == B.IN_PROGRESS, BatchRow.pending_outcome.is_(None))


def to_validate() -> ColumnElement[bool]:
    return and_(BatchRow.status == B.VALIDATING, BatchRow.pending_outcome.is_(None))


def to_finalize() -> ColumnElement[bool]:
    """A batch whose end must be written: finished, cancelling, or given an outcome."""
    return or_(
        BatchRow.status.in_((B.FINALIZING, B.CANCELLING)),
        and_(BatchRow.status.in_(OPEN), BatchRow.pending_outcome.is_not(None)),
    )


def outcome_of(batch: BatchRow) -> BatchStatus | None:
    """What finalization must make of ``batch`` (``None``: nothing to finalize)."""
    if batch.status in OUTCOME_OF_STATUS:
        return OUTCOME_OF_STATUS[BatchStatus(batch.status)]
    return BatchStatus(batch.pending_outcome) if batch.pending_outcome else None


def transition(
    session: Session, batch_id: str, to: BatchStatus, message: str = "", **fields: Any
) -> bool:
    """Move ``batch_id`` to ``to`` if its current status allows it; set ``<to>_at``."""
    sources = TRANSITIONS[to]
    now = int(time.time())
    values: dict[str, Any] = {"status": to.value, f"{to.value}_at": now, **fields}
    result = rowcount(
        session.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id, BatchRow.status.in_(sources))
            .values(**values)
            .execution_options(synchronize_session=False),
        )
    )
    if result != 1:
        return False
    log_event(session, batch_id, "status", message or f"status → {to}")
    webhooks.status_changed(session, batch_id, to)
    return True


def decide(
    s: Session,
    batch_id: str,
    outcome: BatchStatus,
    code: str | None = None,
    message: str | None = None,
) -> bool:
    """Record that an open batch must end as ``outcome`` (with the error ``code`` and
    ``message``, if given); finalization carries it out. ``False`` if the batch is no
    longer open or already has an outcome."""
    values: dict[str, Any] = {"pending_outcome": outcome.value}
    if code is not None:
        values["errors"] = [{"code": code, "line": None, "param": None, "message": message}]
    done = rowcount(
        s.execute(update(BatchRow).where(BatchRow.id == batch_id, undecided()).values(**values))
    )
    if done:
        log_event(s, batch_id, "outcome", f"batch will end as {outcome.value}")
    return bool(done)


def log_event(session: Session, batch_id: str, kind: str, message: str) -> None:
    session.execute(
        insert(BatchEventRow).values(batch_id=batch_id, at=time.time(), kind=kind, message=message)
    )


def get_batch(session: Session, batch_id: str) -> BatchRow | None:
    return session.execute(select(BatchRow).where(BatchRow.id == batch_id)).scalar()
