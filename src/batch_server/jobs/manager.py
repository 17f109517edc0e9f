"""The job manager: the only code that writes batch, work-unit, batch-step and worker state.

Routers, pages, the worker and the CLI call it; none of them issues a statement of its own
on those tables. Every change is one guarded statement (``UPDATE … WHERE <legal state>``,
checked by its row count), never a read in Python followed by a write. Status changes go
through :mod:`batch_server.jobs.lifecycle`; the work-unit half (claims, leases, fencing,
results) is :class:`~batch_server.jobs.queue.WorkQueue`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from batch_server import ids, metrics
from batch_server.config import Settings
from batch_server.db.dialect import skip_locked, upsert
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import (
    BatchEventRow,
    BatchRow,
    FileRow,
    ResultRow,
    WorkerRow,
    WorkUnitRow,
)
from batch_server.jobs import lifecycle
from batch_server.jobs.queue import RUN_ORDER, WorkQueue, backoff_seconds
from batch_server.jobs.retention import expires_at, lock_live_file
from batch_server.statuses import LIVE, BatchStatus, UnitStatus, WorkerState
from batch_server.wakeup import Wakeup

# A worker without a heartbeat for this long is taken for gone (crashed or hung).
WORKER_FRESH_SECONDS = 15.0


class InputGone(Exception):
    """The batch's input file was deleted while the batch was being created."""


@dataclass(frozen=True)
class NewBatch:
    """A batch as the API accepted it (checked: endpoint, window, limits, input file)."""

    endpoint: str
    input_file_id: str
    completion_window: str
    window_seconds: int
    owner: str | None
    model: str | None = None
    metadata: dict[str, str] | None = None
    priority: int = 0
    webhook_url: str | None = None
    webhook_events: str | None = None  # comma-separated
    output_expires_after: int | None = None  # seconds its output and error files are kept
    # "batch", "benchmark" or "comparison"; the last two run every line on ``model``
    # whatever model the line names (see MODEL_OVERRIDING_KINDS).
    kind: str = "batch"


class BatchStep(NamedTuple):
    """A batch-level step leased to one worker: ``validate`` or ``finalize``."""

    batch_id: str
    kind: str
    token: str


@dataclass(frozen=True)
class OutputFile:
    """An output or error file written by finalization, to register with the batch."""

    file_id: str
    filename: str
    size: int
    suffix: str  # "output" or "error"


@dataclass(frozen=True)
class Ending:
    """What finalization's one transaction writes besides the status."""

    errors: list[dict[str, Any]] | None = None
    notify: bool = True  # False: the batch's webhook is dropped (its event may be what fails)
    ok: int | None = None  # the counts and files, when there are files
    failed: int | None = None
    files: list[OutputFile] = field(default_factory=list)
    unexecuted: tuple[str, int] | None = None  # (error code, requests never run)


class JobManager(WorkQueue):
    """Batches, batch steps and workers; work units through :class:`WorkQueue`."""

    @classmethod
    def from_settings(cls, db: Database, settings: Settings, wake: Wakeup | None) -> JobManager:
        return cls(
            db,
            settings.lease_seconds,
            settings.webhook_progress_seconds,
            settings.engine_max_attempts,
            wake,
        )

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, new: NewBatch) -> BatchRow:
        """Insert the batch (``validating``) and wake a worker to validate it at once.
        Raises :class:`InputGone` if its input file was deleted meanwhile: the file row is
        locked until the insert commits, so a batch and the deletion of its input cannot
        both succeed (see ``Database.write``)."""
        now = int(time.time())
        row = BatchRow(
            id=ids.batch_id(),
            status=BatchStatus.VALIDATING.value,
            endpoint=new.endpoint,
            input_file_id=new.input_file_id,
            completion_window=new.completion_window,
            model=new.model,
            metadata_=new.metadata,
            priority=new.priority,
            created_at=now,
            expires_at=now + new.window_seconds,
            total=0,
            completed=0,
            failed=0,
            input_tokens=0,
            cached_tokens=0,
            output_tokens=0,
            owner=new.owner,
            webhook_url=new.webhook_url,
            webhook_events=new.webhook_events,
            output_expires_after=new.output_expires_after,
            kind=new.kind,
        )
        with self.db.write() as s:
            if not lock_live_file(s, new.input_file_id):
                raise InputGone(new.input_file_id)
            s.add(row)
            s.flush()
            lifecycle.log_event(s, row.id, "status", "created; status → validating")
        self.wake_workers()
        return row

    def cancel(self, batch_id: str) -> bool:
        """Ask a validating or running batch to stop (``cancelling``); ``False`` when its
        status does not allow it (it may be cancelling or cancelled already)."""
        with self.db.write() as s:
            moved = lifecycle.transition(s, batch_id, BatchStatus.CANCELLING, "cancel requested")
        if moved:
            self.wake_workers()
        return moved

    def set_priority(self, batch_id: str, priority: int) -> int | None:
        """Change the priority of an open batch; the old priority, or ``None`` when the
        batch is no longer open. A compare-and-set: a concurrent change makes it retry."""
        for _ in range(10):
            with self.db.write() as s:
                old = s.execute(
                    select(BatchRow.priority).where(BatchRow.id == batch_id, lifecycle.undecided())
                ).scalar()
                if old is None:
                    return None
                swapped = rowcount(
                    s.execute(
                        update(BatchRow)
                        .where(
                            BatchRow.id == batch_id,
                            lifecycle.undecided(),
                            BatchRow.priority == old,
                        )
                        .values(priority=priority),
                    )
                )
                if swapped:
                    lifecycle.log_event(s, batch_id, "priority", f"priority {old} → {priority}")
                    break
        else:
            return None
        self.wake_workers()
        return old

    def mark_expired(self) -> int:
        """Decide ``expired`` for open batches past their completion window."""
        now = int(time.time())
        query = select(BatchRow.id).where(lifecycle.undecided(), BatchRow.expires_at <= now)
        if not self._any(query):
            return 0
        with self.db.write() as s:
            due = list(s.execute(query).scalars())
            return sum(lifecycle.decide(s, b, BatchStatus.EXPIRED) for b in due)

    def log(self, batch_id: str, kind: str, message: str) -> None:
        with self.db.write() as s:
            lifecycle.log_event(s, batch_id, kind, message)

    # -- batch steps (validation, finalization) under a lease on the batch row --------

    def claim_batch_step(self, worker_id: str) -> BatchStep | None:
        """Lease one batch that needs validating or finalizing, first in run order."""
        now = time.time()
        free = (BatchRow.lease_token.is_(None)) | (BatchRow.lease_expires_at < now)
        needs = lifecycle.to_finalize() | lifecycle.to_validate()
        query = select(BatchRow.id).where(free, needs).order_by(*RUN_ORDER).limit(1)
        if not self._any(query):
            return None
        for _ in range(5):  # lost races are retried a few times
            with self.db.write() as s:
                batch_id = s.execute(skip_locked(s, query)).scalar()
                if batch_id is None:
                    return None
                token = ids.token()
                # (no bound parameter in RETURNING: SQLite would bind it out of order)
                leased = s.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, free, needs)
                    .values(lease_token=token, lease_expires_at=now + self.lease_seconds)
                    .returning(BatchRow.status, BatchRow.pending_outcome)
                ).first()
                if leased is not None:
                    validate = (
                        leased.status == BatchStatus.VALIDATING and not leased.pending_outcome
                    )
                    return BatchStep(batch_id, "validate" if validate else "finalize", token)
        return None

    def release_batch(self, s: Session, batch_id: str, token: str) -> bool:
        """End a batch step's lease inside ``s``; ``False`` if it was no longer ours."""
        return bool(
            rowcount(
                s.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.lease_token == token)
                    .values(lease_token=None, lease_expires_at=None),
                )
            )
        )

    def start_units(
        self,
        batch_id: str,
        token: str,
        total: int,
        model: str | None,
        units: list[dict[str, Any]],
        message: str,
    ) -> bool:
        """A validated batch: end the step's lease, move it to ``in_progress`` and add its
        work units, in one transaction (``False`` if the lease or the status was lost)."""
        with self.db.write() as s:
            if not self.release_batch(s, batch_id, token):
                return False
            moved = lifecycle.transition(
                s, batch_id, BatchStatus.IN_PROGRESS, message, total=total, model=model
            )
            if not moved:
                return False  # cancelled or expired meanwhile
            s.execute(
                insert(WorkUnitRow),
                [u | {"batch_id": batch_id, "status": UnitStatus.PENDING.value} for u in units],
            )
        self.wake_workers()  # its units are ready for every worker
        return True

    def fail_validation(self, batch_id: str, token: str, errors: list[dict[str, Any]]) -> bool:
        """A batch whose input is refused: end the lease and fail it with ``errors``."""
        with self.db.write() as s:
            if not self.release_batch(s, batch_id, token):
                return False
            return lifecycle.transition(
                s,
                batch_id,
                BatchStatus.FAILED,
                f"validation failed: {len(errors)} error(s)",
                errors=errors,
            )

    def step_failed(
        self, batch_id: str, token: str, kind: str, step: str, error: str
    ) -> int | None:
        """Log a failed attempt at a batch step (an event of ``kind``: the failed attempts
        are counted from these); returns how many have failed (``None`` if the lease is no
        longer ours). Until the next attempt is due (2^n seconds) the batch stays leased to
        nobody; after the last one the lease stays ours, to end the batch."""
        now = time.time()
        with self.db.write() as s:
            failures = (
                1
                + s.execute(
                    select(func.count())
                    .select_from(BatchEventRow)
                    .where(BatchEventRow.batch_id == batch_id, BatchEventRow.kind == kind)
                ).scalar_one()
            )
            retry = failures < self.max_attempts
            delay = backoff_seconds(failures)
            ours = rowcount(
                s.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.lease_token == token)
                    .values(
                        lease_token=ids.token() if retry else token,
                        lease_expires_at=now + (delay if retry else self.lease_seconds),
                    ),
                )
            )
            if not ours:
                return None
            then = f"next attempt in {delay:.0f} s" if retry else "giving up"
            lifecycle.log_event(
                s,
                batch_id,
                kind,
                f"{step} attempt {failures} of {self.max_attempts} failed ({then}): {error}",
            )
        return failures

    def end_batch(self, batch: BatchRow, token: str, status: BatchStatus, end: Ending) -> bool:
        """Finalization's one transaction: release the step's lease, set ``status`` (with
        the files registered and the stored results dropped) and queue its webhook.
        ``False`` when the lease or the status was no longer ours: nothing is written."""
        fields: dict[str, Any] = {"errors": end.errors} if end.errors else {}
        if end.ok is not None:
            fields.update(completed=end.ok, failed=end.failed)
        fields.update({f"{f.suffix}_file_id": f.file_id for f in end.files})
        with self.db.write() as s:
            if not self.release_batch(s, batch.id, token):
                return False
            if not end.notify:
                s.execute(update(BatchRow).where(BatchRow.id == batch.id).values(webhook_url=None))
                lifecycle.log_event(
                    s, batch.id, "webhook", "no webhook: its event could not be queued"
                )
            if not lifecycle.transition(s, batch.id, status, **fields):
                return False
            now = int(time.time())
            for f in end.files:
                s.add(
                    FileRow(
                        id=f.file_id,
                        purpose="batch_output",
                        filename=f.filename,
                        bytes=f.size,
                        created_at=now,
                        # OpenAI: the anchor is the file's creation, not the batch's
                        expires_at=expires_at(now, batch.output_expires_after),
                        status="processed",
                        deleted=False,
                        owner=batch.owner,
                    )
                )
            if end.ok is not None:
                # the lines are in the files now; what plugins made of them is kept
                s.execute(
                    delete(ResultRow).where(
                        ResultRow.batch_id == batch.id,
                        ResultRow.fields.is_(None),
                        ResultRow.plugin_error.is_(None),
                        ResultRow.ratings.is_(None),
                    )
                )
            if end.unexecuted:
                code, count = end.unexecuted
                metrics.increment(s, "request_errors", {"code": code}, count)
        return True

    # -- workers --------------------------------------------------------------------------

    def worker_seen(
        self,
        worker_id: str,
        *,
        hostname: str,
        pid: int,
        started_at: float,
        state: WorkerState,
        loaded_model: str | None,
        current_batch_id: str | None,
    ) -> None:
        """A worker's heartbeat: its row, created or refreshed."""
        row = {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "started_at": started_at,
            "heartbeat_at": time.time(),
            "state": state.value,
            "loaded_model": loaded_model,
            "current_batch_id": current_batch_id,
        }
        with self.db.write() as s:
            upsert(s, WorkerRow, row, keys=("id",))

    def worker_gone(self, worker_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))

    def reset_stuck(self) -> dict[str, int]:
        """Admin "reset stuck work": free every unit and batch step leased by a worker
        without a fresh heartbeat (crashed, or hung) without waiting for its lease to run
        out, and end the engine-failure backoff of waiting units. Batch steps (validation,
        finalization) record no owner, so all are released; a worker still running one is
        fenced by its token and its write is discarded."""
        fresh = select(WorkerRow.id).where(
            WorkerRow.heartbeat_at >= time.time() - WORKER_FRESH_SECONDS
        )
        with self.db.write() as s:
            units = rowcount(
                s.execute(
                    update(WorkUnitRow)
                    .where(
                        WorkUnitRow.status == UnitStatus.LEASED,
                        WorkUnitRow.lease_owner.not_in(fresh.scalar_subquery()),
                    )
                    .values(
                        status=UnitStatus.PENDING.value,
                        lease_token=None,
                        lease_expires_at=None,
                        lease_owner=None,
                    ),
                )
            )
            backoff = rowcount(
                s.execute(
                    update(WorkUnitRow)
                    .where(
                        WorkUnitRow.status == UnitStatus.PENDING,
                        WorkUnitRow.not_before.is_not(None),
                    )
                    .values(not_before=None),
                )
            )
            steps = rowcount(
                s.execute(
                    update(BatchRow)
                    .where(BatchRow.lease_token.is_not(None), BatchRow.status.in_(LIVE))
                    .values(lease_token=None, lease_expires_at=None),
                )
            )
        self.wake_workers()
        return {"units_released": units, "backoffs_cleared": backoff, "batch_steps_released": steps}
