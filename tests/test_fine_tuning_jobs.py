"""The fine-tuning jobs table's one writer (``fine_tuning/jobs.py``) on a real database,
SQLite and PostgreSQL: claims with a lease and a token, takeover once the lease has run
out, fencing of the worker that lost the job, events written once per key (a step trained
again after a resume is not logged twice), checkpoints, cancel in each state."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from batch_server.db.session import Database
from batch_server.db.tables import FineTuningEventRow
from batch_server.fine_tuning import jobs
from batch_server.jobs.manager import JobManager
from batch_server.statuses import WorkerState
from conftest import DATABASES, database_url

RESOLVED = {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 1.0}


@pytest.fixture
def db_url(tmp_path: Path, request: pytest.FixtureRequest, database: str) -> str:
    url = database_url(request, database) or f"sqlite:///{tmp_path / 'ft.db'}"
    db = Database(url)
    db.migrate()
    db.dispose()
    return url


def alive(db: Database, *workers: str) -> None:
    """The workers' heartbeats, as their presence thread writes them."""
    manager = JobManager(db, lease_seconds=30)
    for worker in workers:
        manager.worker_seen(
            worker,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            state=WorkerState.TRAINING,
            loaded_model=None,
            current_batch_id=None,
        )


def new_job(db: Database) -> str:
    row = jobs.create(
        db,
        owner=None,
        model="m",
        training_file="file-t",
        validation_file=None,
        requested={"n_epochs": "auto"},
        suffix="s",
        seed=1,
        metadata=None,
    )
    return row.id


def keys(db: Database, job_id: str) -> list[str | None]:
    with db.read() as s:
        return list(
            s.execute(
                select(FineTuningEventRow.key)
                .where(FineTuningEventRow.job_id == job_id)
                .order_by(FineTuningEventRow.seq)
            ).scalars()
        )


@DATABASES
def test_a_slow_worker_cannot_write_after_a_takeover(db_url: str) -> None:
    slow_db, fast_db = Database(db_url), Database(db_url)  # two processes' pools
    alive(slow_db, "slow", "fast")
    job_id = new_job(slow_db)
    assert jobs.get(slow_db, job_id).status == jobs.VALIDATING  # type: ignore[union-attr]

    check = jobs.claim_validation(slow_db, "slow", 30)
    assert check is not None and jobs.claim_validation(fast_db, "fast", 30) is None
    assert jobs.claim_training(fast_db, "fast", 30) is None  # not validated yet
    assert jobs.validated(slow_db, check, RESOLVED, 10, 20)
    assert jobs.get(slow_db, job_id).status == jobs.QUEUED  # type: ignore[union-attr]

    mine = jobs.claim_training(slow_db, "slow", 0.5)
    assert mine is not None and mine.attempt == 1
    assert jobs.claim_training(fast_db, "fast", 30) is None  # the lease holds
    assert jobs.started(slow_db, mine, 0)
    for step in (1, 2, 3):
        assert jobs.record_step(slow_db, mine, step, 10, {"train_loss": 2.0 / step}, None)
    assert jobs.record_checkpoint(
        slow_db, mine, 2, {"train_loss": 1.0}, "ft:m:s:x:ckpt-step-2", "k2"
    )
    time.sleep(0.7)  # the slow worker stalls past its lease

    theirs = jobs.claim_training(fast_db, "fast", 30)
    assert theirs is not None and theirs.token != mine.token and theirs.attempt == 2
    checkpoint = jobs.last_checkpoint(fast_db, job_id)
    assert checkpoint is not None and checkpoint.step == 2 and checkpoint.location == "k2"
    assert jobs.started(fast_db, theirs, checkpoint.step)

    # the slow worker comes back: every write is refused
    assert jobs.heartbeat(slow_db, mine, 30) == jobs.LOST
    assert not jobs.record_step(slow_db, mine, 4, 10, {"train_loss": 0.4}, None)
    assert not jobs.record_checkpoint(slow_db, mine, 4, {}, "x", "k4")
    assert not jobs.succeed(slow_db, mine, "ft:m:s:x", [], 100, 10)
    assert not jobs.fail(slow_db, mine, "training_failed", "late")

    # the new owner trains step 3 again (after the checkpoint at 2): logged once
    assert jobs.heartbeat(fast_db, theirs, 30) == jobs.OK
    for step in range(3, 11):
        assert jobs.record_step(fast_db, theirs, step, 10, {"train_loss": 0.1}, None)
    assert jobs.succeed(fast_db, theirs, "ft:m:s:x", ["file-r"], 100, 10)
    row = jobs.get(fast_db, job_id)
    assert row is not None and row.status == jobs.SUCCEEDED and row.step == 10
    assert row.trained_tokens == 100 and row.attempts == 2 and row.lease_token is None
    found = keys(fast_db, job_id)
    assert [k for k in found if k and k.startswith("step:")] == [f"step:{n}" for n in range(1, 11)]
    assert found.count("started") == 1 and found.count("succeeded") == 1
    assert "resumed:2" in found and "checkpoint:2" in found
    assert [m["step"] for m in jobs.step_metrics(fast_db, job_id)] == list(range(1, 11))
    assert jobs.counts(fast_db) == {"succeeded": 1}
    slow_db.dispose()
    fast_db.dispose()


@DATABASES
def test_cancel_in_each_state(db_url: str) -> None:
    db = Database(db_url)
    alive(db, "w")
    waiting = new_job(db)
    assert jobs.cancel(db, waiting).status == jobs.CANCELLED  # type: ignore[union-attr]
    assert jobs.claim_validation(db, "w", 30) is None

    running = new_job(db)
    check = jobs.claim_validation(db, "w", 30)
    assert check is not None and jobs.validated(db, check, RESOLVED, 10, 20)
    claim = jobs.claim_training(db, "w", 30)
    assert claim is not None
    assert jobs.cancel(db, running).status == jobs.CANCELLED  # type: ignore[union-attr]
    assert jobs.heartbeat(db, claim, 30) == jobs.LOST  # the worker kills its run ...
    assert not jobs.record_step(db, claim, 1, 10, {"train_loss": 1.0}, None)  # ... in vain
    assert jobs.step_metrics(db, running) == []

    orphan = new_job(db)  # running on a worker that died, then cancelled
    check = jobs.claim_validation(db, "w", 30)
    assert check is not None and jobs.validated(db, check, RESOLVED, 10, 20)
    claim = jobs.claim_training(db, "w", 0.2)
    assert claim is not None
    time.sleep(0.4)
    assert jobs.cancel(db, orphan).status == jobs.CANCELLED  # type: ignore[union-attr]
    assert jobs.claim_training(db, "w", 30) is None
    db.dispose()
