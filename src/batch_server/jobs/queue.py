"""Work units and leases: claiming, renewing, fencing and completing work (the unit half of
the job manager, :mod:`batch_server.jobs.manager`).

A worker owns a unit only while its lease token is on the row and unexpired. Every write
of a result renews the lease *and* checks the token in the same transaction (fencing), so
a worker that was slow and lost its unit to another can never write over it. Claims are a
guarded ``UPDATE`` (with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), never read-then-write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batch_server import ids, metrics, webhooks
from batch_server.db.dialect import skip_locked
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import BatchRow, ResultRow, WorkUnitRow
from batch_server.jobs import lifecycle
from batch_server.statuses import BatchStatus, UnitStatus
from batch_server.wakeup import Wakeup

# The order batches run in: higher priority first, then FIFO. Claims, the queue view and
# its ETAs all use it.
RUN_ORDER = (BatchRow.priority.desc(), BatchRow.seq)


def describe_error(exc: BaseException) -> str:
    """The first line of an error (a database error goes on with its SQL and parameters),
    safe to store."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:1000]
    return text.encode("utf-8", "backslashreplace").decode()


# A failed attempt (an engine run, a batch step) waits 2^n seconds, at most 5 minutes.
BACKOFF_MAX_SECONDS = 300.0
_BACKOFF_STEPS = 9  # 2^9 > the maximum


def backoff_seconds(failures: int) -> float:
    """How long to wait after the ``failures``-th failed attempt."""
    return min(2.0**failures, BACKOFF_MAX_SECONDS)


def _backoff(failures: ColumnElement[int]) -> ColumnElement[float]:
    """:func:`backoff_seconds` as SQL, for a count held by the row itself."""
    return case(
        *((failures == n, backoff_seconds(n)) for n in range(1, _BACKOFF_STEPS)),
        else_=BACKOFF_MAX_SECONDS,
    )


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
    # from the plugins (see batch_server.plugins.results): kept after finalization
    fields: dict[str, Any] | None = None
    plugin_error: str | None = None
    ratings: dict[str, Any] | None = None

    def plugin_columns(self) -> dict[str, Any]:
        """The plugin columns that have a value (a JSON column given ``None`` would hold
        JSON ``null``, not SQL NULL)."""
        values = {"fields": self.fields, "plugin_error": self.plugin_error}
        return {k: v for k, v in (values | {"ratings": self.ratings}).items() if v is not None}


class WorkQueue:
    """The work-unit half of the :class:`~batch_server.jobs.manager.JobManager`."""

    def __init__(
        self,
        db: Database,
        lease_seconds: float,
        progress_seconds: float = 30.0,
        max_attempts: int = 3,
        wake: Wakeup | None = None,
    ) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.progress_seconds = progress_seconds
        self.wake = wake
        self.max_attempts = (
            max_attempts  # failed runs of a unit (or batch step) before its batch fails
        )

    def wake_workers(self) -> None:
        """Wake idle workers (here and on other hosts): there is something to do."""
        if self.wake is not None:
            self.wake.notify()

    def _any(self, query: Select[Any]) -> bool:
        """Whether ``query`` finds a row, read without the write lock: the polls of an idle
        worker then cost no write transaction."""
        with self.db.read() as s:
            return s.execute(query.limit(1)).first() is not None

    def claim_unit(self, worker_id: str, prefer_model: str | None) -> Claim | None:
        """Lease the next runnable unit: highest batch priority first, then units of the
        model already loaded (to avoid a swap), then oldest batch, then unit order."""
        now = time.time()
        runnable = or_(
            WorkUnitRow.status == UnitStatus.PENDING,
            and_(WorkUnitRow.status == UnitStatus.LEASED, WorkUnitRow.lease_expires_at < now),
        )
        prefer = case((WorkUnitRow.model == prefer_model, 0), else_=1)
        query = (
            select(WorkUnitRow.id)
            .join(BatchRow, BatchRow.id == WorkUnitRow.batch_id)
            .where(
                runnable,
                lifecycle.runnable(),
                or_(WorkUnitRow.not_before.is_(None), WorkUnitRow.not_before <= now),
            )
            .order_by(RUN_ORDER[0], prefer, *RUN_ORDER[1:], WorkUnitRow.index)
            .limit(1)
        )
        if not self._any(query):
            return None
        for _ in range(5):  # lost races are retried a few times
            with self.db.write() as s:
                unit_id = s.execute(skip_locked(s, query, of=WorkUnitRow)).scalar()
                if unit_id is None:
                    return None
                token = ids.token()
                claimed = s.execute(
                    update(WorkUnitRow)
                    .where(WorkUnitRow.id == unit_id, runnable)
                    .values(
                        status=UnitStatus.LEASED,
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
        renewed = rowcount(
            s.execute(
                update(WorkUnitRow)
                .where(
                    WorkUnitRow.id == claim.unit_id,
                    WorkUnitRow.lease_token == claim.token,
                    WorkUnitRow.status == UnitStatus.LEASED,
                )
                .values(lease_expires_at=time.time() + self.lease_seconds),
            )
        )
        if renewed != 1:
            raise LeaseLost(f"unit {claim.unit_id} is no longer leased to this worker")

    def heartbeat(self, claim: Claim) -> bool:
        """Renew the lease; ``False`` when the unit should stop (lease lost, batch being
        cancelled or about to expire)."""
        go_on = exists().where(
            BatchRow.id == claim.batch_id,
            lifecycle.runnable(),
            BatchRow.expires_at > time.time(),
        )
        try:
            with self.db.write() as s:
                self._fence(s, claim)
                return bool(s.execute(select(go_on)).scalar())
        except LeaseLost:
            return False

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
                                **r.plugin_columns(),
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
            self._progress_webhook(s, claim.batch_id)

    def _progress_webhook(self, s: Session, batch_id: str) -> None:
        """Queue ``batch.progress`` if the batch subscribed, at most once per
        ``progress_seconds`` (its last time is kept on the batch row)."""
        now = time.time()
        due = rowcount(
            s.execute(
                update(BatchRow)
                .where(
                    BatchRow.id == batch_id,
                    BatchRow.webhook_events.contains("batch.progress"),
                    or_(
                        BatchRow.webhook_progress_at.is_(None),
                        BatchRow.webhook_progress_at <= now - self.progress_seconds,
                    ),
                )
                .values(webhook_progress_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        if due:
            webhooks.enqueue(s, batch_id, "batch.progress")

    def complete_unit(self, claim: Claim) -> bool:
        """Mark the unit done; the last unit of a batch moves it to ``finalizing`` (``True``
        is returned, and the workers are woken to finalize it)."""
        with self.db.write() as s:
            self._fence(s, claim)
            s.execute(
                update(WorkUnitRow)
                .where(WorkUnitRow.id == claim.unit_id)
                .values(status=UnitStatus.DONE, lease_token=None, lease_expires_at=None)
            )
            unfinished = exists().where(
                WorkUnitRow.batch_id == claim.batch_id, WorkUnitRow.status != UnitStatus.DONE
            )
            if s.execute(select(unfinished)).scalar():
                return False
            finalizing = lifecycle.transition(s, claim.batch_id, BatchStatus.FINALIZING)
        if finalizing:
            self.wake_workers()  # to finalize it now
        return finalizing

    def give_back(self, claim: Claim) -> bool:
        """Return a unit claimed but never started (no attempt counted); ``False`` if it
        was no longer ours."""
        return self.release_unit(claim, engine_error=None)

    def release_unit(
        self,
        claim: Claim,
        *,
        engine_error: str | None,
        max_attempts: int | None = None,
        log: bool = True,
    ) -> bool:
        """Give a unit back (``False`` if it was no longer ours). After an engine failure it
        waits (exponential backoff, 2^n s up to 5 minutes) and after ``max_attempts``
        failures the whole batch fails with the engine's message (logged on the batch
        unless ``log`` is false: one failure of an engine running several units of a batch
        is logged once)."""
        free = {
            "status": UnitStatus.PENDING,
            "lease_token": None,
            "lease_expires_at": None,
            "lease_owner": None,
        }
        mine = update(WorkUnitRow).where(
            WorkUnitRow.id == claim.unit_id, WorkUnitRow.lease_token == claim.token
        )
        with self.db.write() as s:
            if engine_error is None:
                return bool(rowcount(s.execute(mine.values(**free))))
            failures = s.execute(
                mine.values(
                    **free,
                    engine_failures=WorkUnitRow.engine_failures + 1,
                    last_error=engine_error[:4000],
                    not_before=time.time() + _backoff(WorkUnitRow.engine_failures + 1),
                ).returning(WorkUnitRow.engine_failures)
            ).scalar()
            if failures is None:
                return False
            if log:
                lifecycle.log_event(
                    s, claim.batch_id, "engine_error", f"attempt {failures}: {engine_error[:1000]}"
                )
            if failures >= (max_attempts or self.max_attempts):
                message = (
                    f"Work on model '{claim.model}' failed {failures} times: {engine_error[:2000]}"
                )
                lifecycle.decide(s, claim.batch_id, BatchStatus.FAILED, "engine_error", message)
            return True

    def close_units(self, batch_id: str) -> None:
        """Fence every unfinished unit of a batch (cancel, expiry, failure)."""
        with self.db.write() as s:
            s.execute(
                update(WorkUnitRow)
                .where(WorkUnitRow.batch_id == batch_id, WorkUnitRow.status != UnitStatus.DONE)
                .values(status=UnitStatus.CLOSED, lease_token=None, lease_expires_at=None)
            )
