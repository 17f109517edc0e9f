"""Test loads of registry models: the ``model_tests`` table (the only writer of it).

``POST /v1/admin/models/{id}/test`` queues a test; a worker claims it with a lease (a
token and an expiry, as work units are claimed: a guarded ``UPDATE`` whose row count says
who won), loads the model, runs one request and records the figures with the same token.
A test whose worker died is claimed again once its lease has run out or the worker's
heartbeat has stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update

from batch_server import ids
from batch_server.db.dialect import skip_locked
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import ModelTestRow, WorkerRow
from batch_server.jobs.manager import WORKER_FRESH_SECONDS

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ENDED = (SUCCEEDED, FAILED)

# The figures a worker records (the ModelTestRow columns it fills).
FIGURES = (
    "error",
    "load_seconds",
    "memory_bytes",
    "time_to_first_token",
    "request_seconds",
    "prompt_tokens",
    "output_tokens",
    "output",
)


@dataclass(frozen=True)
class TestClaim:
    test_id: str
    model: str
    token: str
    provenance: dict[str, Any]


def create(db: Database, model_id: str, model_updated_at: float) -> ModelTestRow:
    """Queue a test of ``model_id`` as the registry has it now (``model_updated_at``: the
    version of its entry the test's verdict is about). A test of that same entry still
    waiting for a worker is the answer instead: tests asked for in a row load it once."""
    with db.write() as s:
        waiting = s.execute(
            select(ModelTestRow)
            .where(ModelTestRow.model == model_id, ModelTestRow.status == QUEUED)
            .order_by(ModelTestRow.seq.desc())
            .limit(1)
        ).scalar()
        if (
            waiting is not None
            and (waiting.provenance or {}).get("model_updated_at") == model_updated_at
        ):
            s.expunge(waiting)
            return waiting
        row = ModelTestRow(
            id=ids.model_test_id(),
            model=model_id,
            status=QUEUED,
            created_at=time.time(),
            provenance={"model_updated_at": model_updated_at},
        )
        s.add(row)
        s.flush()
        s.expunge(row)
    return row


def get(db: Database, test_id: str) -> ModelTestRow | None:
    with db.read() as s:
        row = s.execute(select(ModelTestRow).where(ModelTestRow.id == test_id)).scalar()
        if row is not None:
            s.expunge(row)
        return row


def latest(db: Database, model_ids: list[str] | None = None) -> dict[str, ModelTestRow]:
    """The newest test of each model (of ``model_ids``, or of every model)."""
    newest = select(func.max(ModelTestRow.seq)).group_by(ModelTestRow.model)
    if model_ids is not None:
        newest = newest.where(ModelTestRow.model.in_(model_ids))
    found: dict[str, ModelTestRow] = {}
    with db.read() as s:
        for row in s.execute(select(ModelTestRow).where(ModelTestRow.seq.in_(newest))).scalars():
            s.expunge(row)
            found[row.model] = row
    return found


def _claimable(now: float) -> Any:
    """Waiting, or running on a worker that is gone: its lease ran out, or it sends no
    heartbeat (it stopped, or died during a long load)."""
    alive = exists().where(
        WorkerRow.id == ModelTestRow.worker,
        WorkerRow.heartbeat_at >= now - WORKER_FRESH_SECONDS,
    )
    return or_(
        ModelTestRow.status == QUEUED,
        and_(
            ModelTestRow.status == RUNNING,
            or_(ModelTestRow.lease_expires_at < now, ~alive),
        ),
    )


def any_waiting(db: Database) -> bool:
    """Whether a test could be claimed (a read, no write transaction for an idle poll)."""
    with db.read() as s:
        query = select(ModelTestRow.seq).where(_claimable(time.time())).limit(1)
        return s.execute(query).first() is not None


def claim(db: Database, worker_id: str, lease_seconds: float) -> TestClaim | None:
    """Lease the oldest waiting test (or one whose worker's lease ran out)."""
    if not any_waiting(db):
        return None
    for _ in range(5):  # lost races are retried a few times
        now = time.time()
        with db.write() as s:
            query = select(ModelTestRow.seq).where(_claimable(now)).order_by(ModelTestRow.seq)
            seq = s.execute(skip_locked(s, query.limit(1), of=ModelTestRow)).scalar()
            if seq is None:
                return None
            token = ids.token()
            won = rowcount(
                s.execute(
                    update(ModelTestRow)
                    .where(ModelTestRow.seq == seq, _claimable(now))
                    .values(
                        status=RUNNING,
                        worker=worker_id,
                        started_at=now,
                        lease_token=token,
                        lease_expires_at=now + lease_seconds,
                    )
                )
            )
            if won != 1:
                continue
            row = s.get(ModelTestRow, seq)
            assert row is not None
            return TestClaim(row.id, row.model, token, dict(row.provenance or {}))
    return None


def still_ours(db: Database, claim: TestClaim) -> bool:
    with db.read() as s:
        query = select(ModelTestRow.seq).where(
            ModelTestRow.id == claim.test_id,
            ModelTestRow.lease_token == claim.token,
            ModelTestRow.status == RUNNING,
        )
        return s.execute(query).first() is not None


def finish(db: Database, claim: TestClaim, status: str, figures: dict[str, Any]) -> bool:
    """Record the test's outcome, if it is still ours (``False``: another worker took it
    over after our lease ran out)."""
    values = {k: v for k, v in figures.items() if k in FIGURES}
    if "endpoint" in figures:
        values["provenance"] = {**claim.provenance, "endpoint": figures["endpoint"]}
    with db.write() as s:
        return (
            rowcount(
                s.execute(
                    update(ModelTestRow)
                    .where(
                        ModelTestRow.id == claim.test_id,
                        ModelTestRow.lease_token == claim.token,
                        ModelTestRow.status == RUNNING,
                    )
                    .values(
                        status=status,
                        finished_at=time.time(),
                        lease_token=None,
                        lease_expires_at=None,
                        **values,
                    )
                )
            )
            == 1
        )
