"""Finalization: merge a batch's stored results into one output and one error file and
set its final status.

Runs under the batch lease. File bytes are written first (under fresh ids), then one
transaction sets the status, registers the files and drops the stored results — so a
worker dying half-way leaves the batch to be finalized again, never half-finished.

An attempt that raises removes the files it wrote, is logged on the batch (an event of kind
``finalize_error``: the failed attempts are counted from these) and is tried again after
2^n seconds, as a unit is after an engine failure. After ``max_attempts`` failures the
batch ends ``failed`` (``cancelled`` if it was being cancelled: no other end is legal then)
with a ``finalize_failed`` error in ``errors``: with its files and its webhook if that
works, else without the webhook (its event may be what fails), else without files (the
stored results then stay in the database).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from batch_server import ids, metrics
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, FileRow, ResultRow
from batch_server.jobs import lifecycle, retention
from batch_server.jobs.queue import Queue, describe_error
from batch_server.jobs.validation import iter_lines
from batch_server.openai_types import unexecuted_line
from batch_server.storage import FileStore

log = logging.getLogger(__name__)

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

MAX_ATTEMPTS = 3  # like engine_max_attempts (whose default it is)
FAILURE_EVENT = "finalize_error"


@dataclass
class _Files:
    """The output and error files written by one attempt, and what they hold."""

    output_id: str
    error_id: str
    output_bytes: int = 0
    error_bytes: int = 0
    ok: int = 0
    errors: int = 0
    unexecuted: int = 0

    def non_empty(self) -> Iterator[tuple[str, int, str]]:
        """(file id, size, suffix) of each file worth keeping."""
        for file_id, size, suffix in (
            (self.output_id, self.output_bytes, "output"),
            (self.error_id, self.error_bytes, "error"),
        ):
            if size:
                yield file_id, size, suffix

    def remove(self, store: FileStore, empty_only: bool = False) -> None:
        for file_id, size in (
            (self.output_id, self.output_bytes),
            (self.error_id, self.error_bytes),
        ):
            if not (empty_only and size):
                store.delete(file_id)


def finalize(
    db: Database,
    store: FileStore,
    queue: Queue,
    batch_id: str,
    token: str,
    max_attempts: int = MAX_ATTEMPTS,
) -> str:
    """Carry out the batch's outcome; returns its status afterwards (unchanged when this
    attempt failed and another will follow)."""
    with db.read() as s:
        batch = lifecycle.get_batch(s, batch_id)
        assert batch is not None
    outcome = lifecycle.OUTCOME_OF_STATUS.get(batch.status) or batch.pending_outcome
    assert outcome is not None, f"batch {batch_id} has nothing to finalize"
    try:
        return _attempt(db, store, queue, batch, token, outcome)
    except Exception as exc:
        log.exception("finalization failed")
        failures = queue.step_failed(
            batch_id, token, FAILURE_EVENT, "finalization", describe_error(exc), max_attempts
        )
        if failures is None or failures < max_attempts:
            return batch.status
        message = f"Finalization failed {failures} times; the last error: {describe_error(exc)}"
        return _give_up(db, store, queue, batch, token, outcome, message)


def _attempt(
    db: Database, store: FileStore, queue: Queue, batch: BatchRow, token: str, outcome: str
) -> str:
    _fence_units(db, queue, batch.id, outcome)
    files = _write_files(db, store, batch, outcome)
    try:
        done = _commit(db, queue, batch, token, outcome, outcome, files)
    except BaseException:
        files.remove(store)
        raise
    files.remove(store, empty_only=done)
    return outcome if done else batch.status


def _fence_units(db: Database, queue: Queue, batch_id: str, outcome: str) -> None:
    """A batch ending otherwise than completed may still have units running: fence them,
    so no result arrives after its files were written."""
    if outcome != "completed":
        with db.write() as s:
            queue.close_units(s, batch_id)


def _write_files(db: Database, store: FileStore, batch: BatchRow, outcome: str) -> _Files:
    """Write the output and error files; if that fails, neither is left behind."""
    files = _Files(ids.file_id(), ids.file_id())
    try:
        with store.writer(files.output_id) as out, store.writer(files.error_id) as err:
            for is_error, payload, executed in _merged_lines(db, store, batch, outcome):
                (err if is_error else out).write(payload.encode() + b"\n")
                files.errors += is_error
                files.ok += not is_error
                files.unexecuted += not executed
            files.output_bytes, files.error_bytes = out.tell(), err.tell()
    except BaseException:
        files.remove(store)
        raise
    return files


def _commit(
    db: Database,
    queue: Queue,
    batch: BatchRow,
    token: str,
    status: str,
    outcome: str,
    files: _Files | None,
    errors: list[dict[str, Any]] | None = None,
    notify: bool = True,
) -> bool:
    """One transaction: release the lease, set ``status`` (with ``files`` registered and
    the stored results dropped) and queue its webhook (none when not ``notify``). ``False``
    when the lease or the status was no longer ours: nothing is registered then."""
    with db.write() as s:
        still_ours = s.execute(
            update(BatchRow)
            .where(BatchRow.id == batch.id, BatchRow.lease_token == token)
            .values(lease_token=None, lease_expires_at=None)
        ).rowcount
        if not still_ours:
            return False
        fields: dict[str, Any] = {"errors": errors} if errors else {}
        if files is not None:
            fields.update(completed=files.ok, failed=files.errors)
            fields.update(
                {f"{suffix}_file_id": file_id for file_id, _, suffix in files.non_empty()}
            )
        if not notify:
            s.execute(update(BatchRow).where(BatchRow.id == batch.id).values(webhook_url=None))
            lifecycle.log_event(s, batch.id, "webhook", "no webhook: its event could not be queued")
        if not lifecycle.transition(s, batch.id, status, **fields):
            return False
        if files is not None:
            _register(s, batch, files)
            queue.delete_results(s, batch.id)
            if files.unexecuted:
                code = UNEXECUTED[outcome][0]
                metrics.increment(s, "request_errors", {"code": code}, files.unexecuted)
    return True


def _register(s: Session, batch: BatchRow, files: _Files) -> None:
    now = int(time.time())
    for file_id, size, suffix in files.non_empty():
        s.execute(
            insert(FileRow).values(
                id=file_id,
                purpose="batch_output",
                filename=f"{batch.id}_{suffix}.jsonl",
                bytes=size,
                created_at=now,
                expires_at=retention.expires_at(now, batch.output_expires_after),
                status="processed",
                deleted=False,
                owner=batch.owner,
            )
        )


def _give_up(
    db: Database,
    store: FileStore,
    queue: Queue,
    batch: BatchRow,
    token: str,
    outcome: str,
    message: str,
) -> str:
    """End the batch after its last failed attempt, keeping what can be kept."""
    status = "failed" if batch.status in lifecycle.TRANSITIONS["failed"] else outcome
    error = {"code": "finalize_failed", "line": None, "param": None, "message": message}
    errors = [*(batch.errors or []), error]
    files: _Files | None = None
    try:
        _fence_units(db, queue, batch.id, outcome)
        files = _write_files(db, store, batch, outcome)
    except Exception:
        log.exception("ending the batch without output and error files")
    ways = [(files, True), (files, False)] if files else []
    for kept, notify in [*ways, (None, True), (None, False)]:
        try:
            done = _commit(db, queue, batch, token, status, outcome, kept, errors, notify)
        except Exception:
            log.exception(
                "could not end the batch (%s files, %s webhook)",
                "with" if kept else "without",
                "with" if notify else "without",
            )
            continue
        if files is not None:
            files.remove(store, empty_only=done and kept is files)
        return status if done else batch.status
    if files is not None:
        files.remove(store)
    return batch.status


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
