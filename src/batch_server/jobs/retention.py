"""How long stored files live, and the one rule for deleting a file.

A file gets an ``expires_at`` from the ``expires_after`` of its upload, or, for a batch's
output and error files, from the batch's ``output_expires_after``: OpenAI's bounds, one
hour to 30 days after the file's creation. ``DELETE /v1/files/{id}`` and housekeeping
(which deletes expired files) both delete through :func:`mark_deleted`, so a file that is
the input of a live batch is never deleted under it.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batch_server.db.tables import BatchRow, FileRow
from batch_server.errors import Conflict, NotFound
from batch_server.statuses import LIVE

# OpenAI's bounds of expires_after.seconds (files) and output_expires_after.seconds.
EXPIRES_AFTER_MIN_SECONDS = 3600
EXPIRES_AFTER_MAX_SECONDS = 30 * 86400


def expires_at(created_at: int, expires_after: int | None) -> int | None:
    """When a file created at ``created_at`` expires (``None``: it is kept)."""
    return None if expires_after is None else created_at + expires_after


def lock_live_file(s: Session, file_id: str) -> bool:
    """Whether the file is live, its row locked until ``s``'s write transaction ends: a
    batch created from the file and the file's deletion check and write under this lock,
    so they cannot both succeed (``FOR UPDATE`` on PostgreSQL; SQLite renders none, its
    write transactions hold the database's write lock, see ``Database.write``)."""
    query = select(FileRow.id).where(FileRow.id == file_id, FileRow.deleted.is_(False))
    return s.execute(query.with_for_update()).scalar() is not None


def mark_deleted(s: Session, file_id: str) -> None:
    """Mark the file deleted in ``s``'s write transaction; the caller deletes its bytes
    from the store once that has committed.

    Raises :class:`NotFound` if it is deleted already and :class:`Conflict` while it is
    the input of a live batch."""
    if not lock_live_file(s, file_id):  # deleted meanwhile
        raise NotFound("file", file_id, param="file_id")
    in_use = s.execute(
        select(BatchRow.id)
        .where(BatchRow.input_file_id == file_id, BatchRow.status.in_(LIVE))
        .limit(1)
    ).scalar()
    if in_use:
        raise Conflict(
            f"File '{file_id}' is the input of batch '{in_use}', which is still "
            "running; cancel it first",
            param="file_id",
            code="file_in_use",
        )
    s.execute(update(FileRow).where(FileRow.id == file_id).values(deleted=True))
