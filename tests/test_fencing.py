"""Fencing at the queue level, on a real database: a worker whose lease ran out and whose
unit was taken over can no longer write, renew, complete or release it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, ResultRow, WorkUnitRow
from batch_server.jobs.manager import JobManager
from batch_server.jobs.queue import LeaseLost, Result
from conftest import DATABASES, database_url


def _result(index: int) -> Result:
    return Result(index, False, json.dumps({"custom_id": f"r{index}"}), output_tokens=1)


@pytest.fixture
def db_url(tmp_path: Path, request: pytest.FixtureRequest, database: str) -> str:
    url = database_url(request, database) or f"sqlite:///{tmp_path / 'q.db'}"
    db = Database(url)
    db.migrate()
    now = int(time.time())
    with db.write() as s:
        s.execute(
            insert(BatchRow).values(
                id="batch_fence",
                status="in_progress",
                endpoint="/v1/chat/completions",
                input_file_id="file-x",
                completion_window="24h",
                priority=0,
                created_at=now,
                expires_at=now + 3600,
                total=4,
                completed=0,
                failed=0,
                input_tokens=0,
                cached_tokens=0,
                output_tokens=0,
            )
        )
        s.execute(
            insert(WorkUnitRow).values(
                batch_id="batch_fence",
                index=0,
                model="m",
                first_request=0,
                request_count=4,
                byte_start=0,
                byte_end=100,
                status="pending",
                attempts=0,
                engine_failures=0,
            )
        )
    db.dispose()
    return url


@DATABASES
def test_slow_worker_cannot_write_after_takeover(db_url: str) -> None:
    # Two Database objects: two connection pools, as two worker processes would have.
    slow_db, fast_db = Database(db_url), Database(db_url)
    slow, fast = JobManager(slow_db, lease_seconds=0.5), JobManager(fast_db, lease_seconds=30)

    mine = slow.claim_unit("slow", prefer_model=None)
    assert mine is not None
    slow.record(mine, [_result(0)], "slow")
    assert fast.claim_unit("fast", prefer_model=None) is None  # the lease still holds
    time.sleep(0.7)  # the slow worker stalls past its lease

    theirs = fast.claim_unit("fast", prefer_model=None)
    assert theirs is not None and theirs.unit_id == mine.unit_id
    assert theirs.token != mine.token
    assert fast.done_indexes(theirs) == {0}  # the finished request is not run again

    # The slow worker comes back: every write is refused, nothing changes.
    with pytest.raises(LeaseLost):
        slow.record(mine, [_result(1)], "slow")
    assert slow.heartbeat(mine) is False
    with pytest.raises(LeaseLost):
        slow.complete_unit(mine)
    assert slow.release_unit(mine, engine_error="late", max_attempts=1) is False

    fast.record(theirs, [_result(i) for i in (1, 2, 3)], "fast")
    fast.complete_unit(theirs)
    with fast_db.read() as s:
        rows = s.execute(
            select(ResultRow.request_index, ResultRow.worker).order_by(ResultRow.request_index)
        ).all()
        unit = s.execute(select(WorkUnitRow)).scalar_one()
        batch = s.execute(select(BatchRow)).scalar_one()
    assert [tuple(r) for r in rows] == [(0, "slow"), (1, "fast"), (2, "fast"), (3, "fast")]
    assert (unit.status, unit.engine_failures, unit.attempts) == ("done", 0, 2)
    assert (batch.status, batch.completed, batch.output_tokens) == ("finalizing", 4, 4)
    slow_db.dispose()
    fast_db.dispose()
