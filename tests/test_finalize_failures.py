"""Finalization that keeps failing: retried with backoff a bounded number of times, then
the batch ends ``failed`` with a ``finalize_failed`` error; no attempt leaves files behind
and a webhook that cannot be queued does not hold the batch."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_receiver import SECRET, Receiver

from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, ResultRow
from batch_server.jobs.finalize import finalize
from batch_server.jobs.manager import JobManager
from batch_server.storage import LocalFileStore
from conftest import Cluster, chat_line, read_lines, submit, wait_for


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _sql(db: Path, query: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def _batch(db: Path, batch_id: str) -> dict[str, Any]:
    (row,) = _sql(
        db,
        "SELECT status, errors, output_file_id, error_file_id, webhook_url FROM batches "
        "WHERE id = ?",
        batch_id,
    )
    keys = ("status", "errors", "output_file_id", "error_file_id", "webhook_url")
    return dict(zip(keys, row, strict=True))


def _stored_files(data: Path) -> set[str]:
    return {p.name for p in (data / "files").rglob("*") if p.is_file()}


def test_finalization_failing_for_ever_ends_failed_without_orphans(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The batch's metadata holds a lone surrogate (written into the database, as the API
    now refuses it): its ``batch.completed`` event cannot be stored, so every finalization
    raises after writing the output file. Before, it was retried every 30 s for ever, left
    two files each time and could not be cancelled."""
    c = Cluster(
        tmp_path,
        {"webhook_secret": SECRET, "webhook_allow_private_urls": "true"},
        in_process_worker=False,
    )
    try:
        receiver.failing = False
        hook = {"webhook_url": receiver.url}
        poisoned = submit(
            c.client, [chat_line("a", "Say hi."), chat_line("b", "Hi.")], metadata=hook
        )
        healthy = submit(c.client, [chat_line("c", "Say hi.")], metadata=hook)
        db = tmp_path / "data" / "batch_server.db"
        bad = json.dumps({**hook, "note": "\ud800"})  # stored as the ASCII escape \ud800
        _sql(db, "UPDATE batches SET metadata = ? WHERE id = ?", bad, poisoned.id)
        c.start_worker()

        assert wait_for(c.client, healthy.id).status == "completed"
        receiver.wait(lambda: receiver.events(healthy.id) == ["batch.completed"])

        deadline = time.time() + 60
        while time.time() < deadline and not _events(c, poisoned.id, "finalize_error"):
            time.sleep(0.1)
        assert _batch(db, poisoned.id)["status"] == "finalizing"
        r = c.http.post(f"/v1/batches/{poisoned.id}/cancel")
        assert r.status_code == 409, r.text  # not cancellable while finalizing; it ends soon
        while time.time() < deadline and _batch(db, poisoned.id)["status"] == "finalizing":
            time.sleep(0.2)
        ended = _batch(db, poisoned.id)
        assert ended["status"] == "failed", c.workers[0].output()[-3000:]

        # Three attempts, 2 s then 4 s apart, each logged; then the batch ended unnotified.
        failures = _events(c, poisoned.id, "finalize_error")
        assert [e["message"][:34] for e in failures] == [
            f"finalization attempt {n} of 3 failed" for n in (1, 2, 3)
        ], failures
        assert "UnicodeEncodeError" in failures[0]["message"]
        gaps = [b["at"] - a["at"] for a, b in zip(failures, failures[1:], strict=False)]
        assert gaps[0] >= 2 and gaps[1] >= 4, gaps
        assert _events(c, poisoned.id, "webhook")
        assert ended["webhook_url"] is None
        assert _sql(
            db, "SELECT count(*) FROM webhook_deliveries WHERE batch_id = ?", poisoned.id
        ) == [(0,)]
        assert receiver.events(poisoned.id) == []

        # No orphans: the bytes on disk are exactly the registered files.
        registered = {r[0] for r in _sql(db, "SELECT id FROM files")}
        assert _stored_files(tmp_path / "data") == registered
        assert ended["output_file_id"] in registered
        assert _sql(db, "SELECT count(*) FROM results WHERE batch_id = ?", poisoned.id) == [(0,)]

        # With the poison gone the API shows the outcome, and nothing finished was lost.
        _sql(db, "UPDATE batches SET metadata = ? WHERE id = ?", json.dumps(hook), poisoned.id)
        batch = c.client.batches.retrieve(poisoned.id)
        assert batch.status == "failed"
        assert batch.errors.data[-1].code == "finalize_failed"
        assert "3 times" in batch.errors.data[-1].message
        lines = read_lines(c.client, batch.output_file_id)
        assert sorted(x["custom_id"] for x in lines) == ["a", "b"]
    finally:
        c.close()


def _events(c: Cluster, batch_id: str, kind: str) -> list[dict[str, Any]]:
    events = c.http.get(f"/v1/batches/{batch_id}/logs").json()["data"]
    return [e for e in events if e["kind"] == kind]


def test_files_that_cannot_be_written_end_the_batch_without_files(tmp_path: Path) -> None:
    """The file store refuses every write (its directory is gone, a file in its place): two
    attempts, 2 s apart, then ``failed`` without files; the results stay in the database."""
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    db.migrate()
    root = tmp_path / "files"
    store = LocalFileStore(root)
    root.rmdir()
    root.write_text("not a directory")
    queue = JobManager(db, lease_seconds=30, max_attempts=2)
    now = int(time.time())
    with db.write() as s:
        s.add(
            BatchRow(
                id="batch_x",
                status="finalizing",
                endpoint="/v1/chat/completions",
                input_file_id="file-in",
                completion_window="24h",
                created_at=now,
                expires_at=now + 86400,
                total=1,
                completed=1,
                failed=0,
                input_tokens=0,
                cached_tokens=0,
                output_tokens=0,
            )
        )
        s.add(ResultRow(batch_id="batch_x", request_index=0, is_error=False, payload="{}"))

    step = queue.claim_batch_step("w")
    assert step is not None and step[1] == "finalize"
    assert finalize(queue, store, "batch_x", step[2]) == "finalizing"
    assert queue.claim_batch_step("w") is None  # backing off
    time.sleep(2.1)
    step = queue.claim_batch_step("w")
    assert step is not None
    assert finalize(queue, store, "batch_x", step[2]) == "failed"

    with db.read() as s:
        batch = s.get(BatchRow, 1)
        assert batch is not None and batch.status == "failed"
        assert batch.output_file_id is None and batch.error_file_id is None
        assert [e["code"] for e in batch.errors or []] == ["finalize_failed"]
        assert "NotADirectoryError" in batch.errors[0]["message"]
        assert s.query(ResultRow).count() == 1
    assert queue.claim_batch_step("w") is None  # ended: nothing more to do
    db.dispose()
