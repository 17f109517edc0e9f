"""Finalization: merge a batch's stored results into one output and one error file and
set its final status.

Runs under the batch lease. File bytes are written first (under fresh ids), then one
transaction registers the files, sets the status and drops the stored results — so a
worker dying half-way leaves the batch to be finalized again, never half-finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from sqlalchemy import insert, select, update

from batch_server import ids, metrics
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, FileRow, ResultRow
from batch_server.jobs import lifecycle
from batch_server.jobs.queue import Queue
from batch_server.jobs.validation import iter_lines
from batch_server.openai_types import unexecuted_line
from batch_server.storage import FileStore

UNEXECUTED = {
    "cancelled": (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "failed": ("batch_failed", "This request was not executed because the batch failed."),
    "completed": ("internal_error", "This request has no stored result."),
}


def finalize(db: Database, store: FileStore, queue: Queue, batch_id: str, token: str) -> str:
    """Carry out the batch's outcome; returns the final status."""
    with db.read() as s:
        batch = lifecycle.get_batch(s, batch_id)
        assert batch is not None
    outcome = lifecycle.OUTCOME_OF_STATUS.get(batch.status) or batch.pending_outcome
    assert outcome is not None, f"batch {batch_id} has nothing to finalize"
    if outcome != "completed":
        with db.write() as s:
            queue.close_units(s, batch_id)  # fence workers still running units

    out_id, err_id = ids.file_id(), ids.file_id()
    n_ok = n_err = n_unexecuted = 0
    with store.writer(out_id) as out, store.writer(err_id) as err:
        for is_error, payload, executed in _merged_lines(db, store, batch, outcome):
            (err if is_error else out).write(payload.encode() + b"\n")
            n_err += is_error
            n_ok += not is_error
            n_unexecuted += not executed
        out_bytes, err_bytes = out.tell(), err.tell()

    now = int(time.time())
    with db.write() as s:
        still_ours = s.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id, BatchRow.lease_token == token)
            .values(lease_token=None, lease_expires_at=None)
        ).rowcount
        if not still_ours:
            store.delete(out_id)
            store.delete(err_id)
            return batch.status
        fields: dict[str, object] = {"completed": n_ok, "failed": n_err}
        for file_id, size, suffix in ((out_id, out_bytes, "output"), (err_id, err_bytes, "error")):
            if size:
                s.execute(
                    insert(FileRow).values(
                        id=file_id,
                        purpose="batch_output",
                        filename=f"{batch_id}_{suffix}.jsonl",
                        bytes=size,
                        created_at=now,
                        expires_at=None,
                        status="processed",
                        deleted=False,
                        owner=batch.owner,
                    )
                )
                fields[f"{suffix}_file_id"] = file_id
        if outcome == "completed" and batch.total == 0:
            fields["total"] = 0
        moved = lifecycle.transition(s, batch_id, outcome, **fields)
        if moved:
            queue.delete_results(s, batch_id)
            if n_unexecuted:
                code = UNEXECUTED[outcome][0]
                metrics.increment(s, "request_errors", {"code": code}, n_unexecuted)
    if not moved:
        store.delete(out_id)
        store.delete(err_id)
        return batch.status
    for file_id, size in ((out_id, out_bytes), (err_id, err_bytes)):
        if not size:
            store.delete(file_id)
    return outcome


def _merged_lines(
    db: Database, store: FileStore, batch: BatchRow, outcome: str
) -> Iterator[tuple[bool, str, bool]]:
    """(is_error, line, executed) in request order; requests without a result become
    error lines that were not executed."""
    results = _stored_results(db, batch.id)
    if batch.completed + batch.failed >= batch.total and outcome == "completed":
        yield from ((is_error, payload, True) for _, is_error, payload in results)
        return
    code, message = UNEXECUTED[outcome]
    pending = next(results, None)
    if batch.total == 0:
        return
    with store.open(batch.input_file_id) as fh:
        for index, line in enumerate(iter_lines(fh)):
            if index >= batch.total:
                break
            if pending is not None and pending[0] == index:
                yield pending[1], pending[2], True
                pending = next(results, None)
                continue
            custom_id = json.loads(line.raw)["custom_id"]
            record = unexecuted_line(custom_id, code, message, ids.batch_request_id())
            yield True, json.dumps(record), False


def _stored_results(db: Database, batch_id: str) -> Iterator[tuple[int, bool, str]]:
    with db.read() as s:
        rows = s.execute(
            select(ResultRow.request_index, ResultRow.is_error, ResultRow.payload)
            .where(ResultRow.batch_id == batch_id)
            .order_by(ResultRow.request_index),
            execution_options={"yield_per": 500},
        )
        for row in rows:
            yield row[0], row[1], row[2]
