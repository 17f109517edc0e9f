"""Work units and leases: the only code that claims, renews, fences and completes work.

A worker owns a unit only while its lease token is on the row and unexpired. Every write
of a result renews the lease *and* checks the token in the same transaction (fencing), so
a worker that was slow and lost its unit to another can never write over it. Claims are a
guarded ``UPDATE`` (with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), never read-then-write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batch_server import ids, metrics, webhooks
from batch_server.db.session import Database
from batch_server.db.tables import BatchEventRow, BatchRow, ResultRow, WorkUnitRow
from batch_server.jobs import lifecycle

# The order batches run in: higher priority first, then FIFO. Claims, the queue view and
# its ETAs all use it.
RUN_ORDER = (BatchRow.priority.desc(), BatchRow.seq)


def set_priority(s: Session, batch_id: str, priority: int) -> int | None:
    """Change the priority of a batch that has not finished; returns the old priority,
    or ``None`` when the batch is no longer waiting or running."""
    old = s.execute(
        select(BatchRow.priority).where(
            BatchRow.id == batch_id, BatchRow.status.in_(("validating", "in_progress"))
        )
    ).scalar()
    if old is None:
        return None
    s.execute(update(BatchRow).where(BatchRow.id == batch_id).values(priority=priority))
    lifecycle.log_event(s, batch_id, "priority", f"priority {old} → {priority}")
    return old


def describe_error(exc: BaseException) -> str:
    """The first line of an error (a database error goes on with its SQL and parameters),
    safe to store."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:1000]
    return text.encode("utf-8", "backslashreplace").decode()


class LeaseLost(Exception):
    """The unit was fenced: cancelled, expired, or taken over after the lease ran out."""


@dataclass(frozen=True)
class Claim:
    unit_id: int
    index: int
    token: str
    batch_id: str
    model: str
    first_request: int
    request_count: int
    byte_start: int
    byte_end: int
    input_file_id: str
    endpoint: str
    engine_failures: int = 0  # earlier runs of this unit that ended with the engine failing


@dataclass
class Result:
    request_index: int
    is_error: bool
    payload: str  # the complete JSON line for the output or error file
    error_code: str | None = None  # for the request error metric
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


class Queue:
    def __init__(self, db: Database, lease_seconds: float, progress_seconds: float = 30.0) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.progress_seconds = progress_seconds

    # -- units ------------------------------------------------------------------------

    def claim_unit(self, worker_id: str, prefer_model: str | None) -> Claim | None:
        """Lease the next runnable unit: highest batch priority first, then units of the
        model already loaded (to avoid a swap), then oldest batch, then unit order."""
        now = time.time()
        for _ in range(5):  # lost races are retried a few times
            with self.db.write() as s:
                runnable = or_(
                    WorkUnitRow.status == "pending",
                    and_(WorkUnitRow.status == "leased", WorkUnitRow.lease_expires_at < now),
                )
                prefer = case((WorkUnitRow.model == prefer_model, 0), else_=1)
                query = (
                    select(WorkUnitRow.id)
                    .join(BatchRow, BatchRow.id == WorkUnitRow.batch_id)
                    .where(
                        runnable,
                        BatchRow.status == "in_progress",
                        BatchRow.pending_outcome.is_(None),
                        or_(WorkUnitRow.not_before.is_(None), WorkUnitRow.not_before <= now),
                    )
                    .order_by(RUN_ORDER[0], prefer, *RUN_ORDER[1:], WorkUnitRow.index)
                    .limit(1)
                )
                if not self.db.is_sqlite:
                    query = query.with_for_update(of=WorkUnitRow, skip_locked=True)
                unit_id = s.execute(query).scalar()
                if unit_id is None:
                    return None
                token = ids.token()
                claimed = s.execute(
                    update(WorkUnitRow)
                    .where(WorkUnitRow.id == unit_id, runnable)
                    .values(
                        status="leased",
                        lease_owner=worker_id,
                        lease_token=token,
                        lease_expires_at=now + self.lease_seconds,
                        attempts=WorkUnitRow.attempts + 1,
                    )
                    .returning(WorkUnitRow)
                ).scalar_one_or_none()
                if claimed is None:
                    continue
                batch = lifecycle.get_batch(s, claimed.batch_id)
                assert batch is not None
                if claimed.attempts > 1:
                    lifecycle.log_event(
                        s,
                        batch.id,
                        "unit",
                        f"unit {claimed.index} taken over by {worker_id} "
                        f"(attempt {claimed.attempts})",
                    )
                return Claim(
                    unit_id=claimed.id,
                    index=claimed.index,
                    token=token,
                    batch_id=batch.id,
                    model=claimed.model,
                    first_request=claimed.first_request,
                    request_count=claimed.request_count,
                    byte_start=claimed.byte_start,
                    byte_end=claimed.byte_end,
                    input_file_id=batch.input_file_id,
                    endpoint=batch.endpoint,
                    engine_failures=claimed.engine_failures,
                )
        return None

    def _fence(self, s: Session, claim: Claim) -> None:
        """Renew the lease, or raise :class:`LeaseLost` if it is no longer ours."""
        renewed = s.execute(
            update(WorkUnitRow)
            .where(
                WorkUnitRow.id == claim.unit_id,
                WorkUnitRow.lease_token == claim.token,
                WorkUnitRow.status == "leased",
            )
            .values(lease_expires_at=time.time() + self.lease_seconds)
        ).rowcount
        if renewed != 1:
            raise LeaseLost(f"unit {claim.unit_id} is no longer leased to this worker")

    def heartbeat(self, claim: Claim) -> bool:
        """Renew the lease; ``False`` when the unit should stop (lease lost, batch being
        cancelled or about to expire)."""
        try:
            with self.db.write() as s:
                self._fence(s, claim)
                batch = s.execute(
                    select(BatchRow.status, BatchRow.pending_outcome, BatchRow.expires_at).where(
                        BatchRow.id == claim.batch_id
                    )
                ).one()
        except LeaseLost:
            return False
        return (
            batch.status == "in_progress"
            and batch.pending_outcome is None
            and batch.expires_at > time.time()
        )

    def done_indexes(self, claim: Claim) -> set[int]:
        """Requests of this unit that already have a result (from an earlier attempt)."""
        with self.db.read() as s:
            rows = s.execute(
                select(ResultRow.request_index).where(
                    ResultRow.batch_id == claim.batch_id,
                    ResultRow.request_index >= claim.first_request,
                    ResultRow.request_index < claim.first_request + claim.request_count,
                )
            )
            return {r[0] for r in rows}

    def record(self, claim: Claim, results: list[Result], worker_id: str) -> None:
        """Durably store finished requests and update the live counters, if the lease is
        still ours. A result already stored (should not happen under fencing) is skipped."""
        if not results:
            return
        with self.db.write() as s:
            self._fence(s, claim)
            ok = err = inp = cached = out = 0
            for r in results:
                try:
                    with s.begin_nested():
                        s.execute(
                            insert(ResultRow).values(
                                batch_id=claim.batch_id,
                                request_index=r.request_index,
                                is_error=r.is_error,
                                payload=r.payload,
                                worker=worker_id,
                            )
                        )
                except IntegrityError:
                    continue
                err += r.is_error
                ok += not r.is_error
                if r.is_error:
                    metrics.increment(s, "request_errors", {"code": r.error_code or "unknown"})
                inp += r.input_tokens
                cached += r.cached_tokens
                out += r.output_tokens
            s.execute(
                update(BatchRow)
                .where(BatchRow.id == claim.batch_id)
                .values(
                    completed=BatchRow.completed + ok,
                    failed=BatchRow.failed + err,
                    input_tokens=BatchRow.input_tokens + inp,
                    cached_tokens=BatchRow.cached_tokens + cached,
                    output_tokens=BatchRow.output_tokens + out,
                )
            )
            for outcome, n in (("ok", ok), ("error", err)):
                if n:
                    metrics.increment(s, "requests", {"model": claim.model, "outcome": outcome}, n)
            for kind, n in (("prompt", inp), ("completion", out)):
                if n:
                    metrics.increment(s, "tokens", {"model": claim.model, "kind": kind}, n)
            webhooks.maybe_progress(s, claim.batch_id, self.progress_seconds)

    def complete_unit(self, claim: Claim) -> bool:
        """Mark the unit done; the last unit of a batch moves it to ``finalizing`` (and
        ``True`` is returned)."""
        with self.db.write() as s:
            self._fence(s, claim)
            s.execute(
                update(WorkUnitRow)
                .where(WorkUnitRow.id == claim.unit_id)
                .values(status="done", lease_token=None, lease_expires_at=None)
            )
            unfinished = exists().where(
                WorkUnitRow.batch_id == claim.batch_id, WorkUnitRow.status != "done"
            )
            if s.execute(select(unfinished)).scalar():
                return False
            return lifecycle.transition(s, claim.batch_id, "finalizing")

    def release_unit(
        self, claim: Claim, *, engine_error: str | None, max_attempts: int, log: bool = True
    ) -> bool:
        """Give a unit back (``False`` if it was no longer ours). After an engine failure it
        waits (exponential backoff) and after ``max_attempts`` failures the whole batch fails
        with the engine's message (logged on the batch unless ``log`` is false: one failure
        of an engine running several units of a batch is logged once)."""
        with self.db.write() as s:
            values: dict[str, Any] = {
                "status": "pending",
                "lease_token": None,
                "lease_expires_at": None,
                "lease_owner": None,
            }
            if engine_error is not None:
                row = s.get(WorkUnitRow, claim.unit_id)
                failures = (row.engine_failures if row else 0) + 1
                values.update(
                    engine_failures=failures,
                    last_error=engine_error[:4000],
                    not_before=time.time() + min(2.0**failures, 300.0),
                )
            released = s.execute(
                update(WorkUnitRow)
                .where(WorkUnitRow.id == claim.unit_id, WorkUnitRow.lease_token == claim.token)
                .values(**values)
            ).rowcount
            if not released or engine_error is None:
                return bool(released)
            if log:
                lifecycle.log_event(
                    s,
                    claim.batch_id,
                    "engine_error",
                    f"attempt {values['engine_failures']}: {engine_error[:1000]}",
                )
            if values["engine_failures"] >= max_attempts:
                self.decide_outcome(
                    s,
                    claim.batch_id,
                    "failed",
                    [
                        {
                            "code": "engine_error",
                            "line": None,
                            "param": None,
                            "message": f"Work on model '{claim.model}' failed "
                            f"{values['engine_failures']} times: {engine_error[:2000]}",
                        }
                    ],
                )
            return True

    # -- batch-level steps (validation, finalization) -----------------------------------

    @staticmethod
    def decide_outcome(
        s: Session, batch_id: str, outcome: str, errors: list[dict[str, Any]] | None = None
    ) -> bool:
        """Record that a running batch must end as ``outcome``; finalization carries it out."""
        values: dict[str, Any] = {"pending_outcome": outcome}
        if errors:
            values["errors"] = errors
        done = s.execute(
            update(BatchRow)
            .where(
                BatchRow.id == batch_id,
                BatchRow.status.in_(("validating", "in_progress")),
                BatchRow.pending_outcome.is_(None),
            )
            .values(**values)
        ).rowcount
        if done:
            lifecycle.log_event(s, batch_id, "outcome", f"batch will end as {outcome}")
        return bool(done)

    def mark_expired(self) -> int:
        """Decide ``expired`` for live batches past their completion window."""
        now = int(time.time())
        with self.db.write() as s:
            due = (
                s.execute(
                    select(BatchRow.id).where(
                        BatchRow.status.in_(("validating", "in_progress")),
                        BatchRow.pending_outcome.is_(None),
                        BatchRow.expires_at <= now,
                    )
                )
                .scalars()
                .all()
            )
            return sum(self.decide_outcome(s, b, "expired") for b in due)

    def claim_batch_step(self, worker_id: str) -> tuple[str, str, str] | None:
        """Lease one batch needing a batch-level step. Returns (batch_id, step, token) with
        step ``validate`` or ``finalize``."""
        now = time.time()
        free = or_(BatchRow.lease_token.is_(None), BatchRow.lease_expires_at < now)
        needs_finalize = or_(
            BatchRow.status.in_(("finalizing", "cancelling")),
            and_(
                BatchRow.status.in_(("validating", "in_progress")),
                BatchRow.pending_outcome.is_not(None),
            ),
        )
        needs_validate = and_(BatchRow.status == "validating", BatchRow.pending_outcome.is_(None))
        with self.db.write() as s:
            query = (
                select(BatchRow.id, BatchRow.status, BatchRow.pending_outcome)
                .where(free, or_(needs_finalize, needs_validate))
                .order_by(*RUN_ORDER)
                .limit(1)
            )
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            row = s.execute(query).first()
            if row is None:
                return None
            token = ids.token()
            s.execute(
                update(BatchRow)
                .where(BatchRow.id == row.id, free)
                .values(lease_token=token, lease_expires_at=now + self.lease_seconds)
            )
            step = (
                "validate"
                if (row.status == "validating" and row.pending_outcome is None)
                else "finalize"
            )
            return row.id, step, token

    def step_failed(
        self, batch_id: str, token: str, kind: str, step: str, error: str, max_attempts: int
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
            retry = failures < max_attempts
            delay = min(2.0**failures, 300.0)
            ours = s.execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id, BatchRow.lease_token == token)
                .values(
                    lease_token=ids.token() if retry else token,
                    lease_expires_at=now + (delay if retry else self.lease_seconds),
                )
            ).rowcount
            if not ours:
                return None
            then = f"next attempt in {delay:.0f} s" if retry else "giving up"
            lifecycle.log_event(
                s,
                batch_id,
                kind,
                f"{step} attempt {failures} of {max_attempts} failed ({then}): {error}",
            )
        return failures

    def release_batch(self, s: Session, batch_id: str, token: str) -> None:
        s.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id, BatchRow.lease_token == token)
            .values(lease_token=None, lease_expires_at=None)
        )

    def close_units(self, s: Session, batch_id: str) -> None:
        """Fence every unfinished unit of a batch (cancel, expiry, failure)."""
        s.execute(
            update(WorkUnitRow)
            .where(WorkUnitRow.batch_id == batch_id, WorkUnitRow.status != "done")
            .values(status="closed", lease_token=None, lease_expires_at=None)
        )

    def reset_stuck(self, fresh_workers: list[str]) -> dict[str, int]:
        """Admin "reset stuck work": free every unit and batch step leased by a worker that
        is not in ``fresh_workers`` (crashed, or hung without heartbeats) without waiting
        for its lease to run out, and end the engine-failure backoff of waiting units.
        Batch steps (validation, finalization) record no owner, so all are released; a
        worker still running one is fenced by its token and its write is discarded."""
        with self.db.write() as s:
            units = s.execute(
                update(WorkUnitRow)
                .where(
                    WorkUnitRow.status == "leased", WorkUnitRow.lease_owner.not_in(fresh_workers)
                )
                .values(status="pending", lease_token=None, lease_expires_at=None, lease_owner=None)
            ).rowcount
            backoff = s.execute(
                update(WorkUnitRow)
                .where(WorkUnitRow.status == "pending", WorkUnitRow.not_before.is_not(None))
                .values(not_before=None)
            ).rowcount
            steps = s.execute(
                update(BatchRow)
                .where(BatchRow.lease_token.is_not(None), BatchRow.status.in_(lifecycle.LIVE))
                .values(lease_token=None, lease_expires_at=None)
            ).rowcount
        return {"units_released": units, "backoffs_cleared": backoff, "batch_steps_released": steps}

    @staticmethod
    def delete_results(s: Session, batch_id: str) -> None:
        s.execute(delete(ResultRow).where(ResultRow.batch_id == batch_id))

    def log(self, batch_id: str, kind: str, message: str) -> None:
        with self.db.write() as s:
            lifecycle.log_event(s, batch_id, kind, message)
