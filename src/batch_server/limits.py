"""Per-key limits: server settings, overridden at run time by the admin API (server-wide
in ``runtime_config``, per key in ``api_keys.limits``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, union
from sqlalchemy.orm import Session

from batch_server.config import Settings
from batch_server.db.tables import ApiKeyRow, BatchRow, FileRow, RuntimeConfigRow
from batch_server.errors import APIError

RUNTIME_KEY = "limits"


@dataclass(frozen=True)
class Limits:
    max_requests_per_batch: int
    max_upload_bytes: int
    max_queued_requests: int | None
    create_rate_per_minute: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, overrides: dict[str, Any] | None) -> Limits:
        known = {f.name for f in fields(self)}
        clean = {k: v for k, v in (overrides or {}).items() if k in known}
        return Limits(**(asdict(self) | clean))


def check_overrides(values: Any) -> dict[str, Any]:
    """Validate a limits document from the admin API (a value of null removes a limit)."""
    if not isinstance(values, dict):
        raise APIError("'limits' must be an object", param="limits", code="invalid_value")
    known = {f.name for f in fields(Limits)}
    for key, value in values.items():
        if key not in known:
            raise APIError(
                f"Unknown limit '{key}'; known: {', '.join(sorted(known))}",
                param=key,
                code="invalid_value",
            )
        nullable = key in ("max_queued_requests", "create_rate_per_minute")
        if not (value is None and nullable) and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**62
        ):
            raise APIError(f"'{key}' must be a positive integer", param=key, code="invalid_value")
    return values


def server_limits(s: Session, settings: Settings) -> Limits:
    base = Limits(
        max_requests_per_batch=settings.max_requests_per_batch,
        max_upload_bytes=settings.max_upload_bytes,
        max_queued_requests=settings.max_queued_requests,
        create_rate_per_minute=settings.create_rate_per_minute,
    )
    row = s.get(RuntimeConfigRow, RUNTIME_KEY)
    return base.merged(row.value if row else None)


def for_owner(s: Session, settings: Settings, owner: str | None) -> Limits:
    """The limits that apply to the key ``owner`` (None: the server's own)."""
    limits = server_limits(s, settings)
    if owner is None:
        return limits
    key = s.get(ApiKeyRow, owner)
    return limits.merged(key.limits if key else None)


def queued_requests(s: Session, owner: str | None) -> int:
    """Unfinished requests of the owner's live batches (validating ones count as 0)."""
    query = select(
        func.coalesce(func.sum(BatchRow.total - BatchRow.completed - BatchRow.failed), 0)
    )
    query = query.where(BatchRow.status.in_(("validating", "in_progress")))
    if owner is not None:
        query = query.where(BatchRow.owner == owner)
    return int(s.execute(query).scalar() or 0)


class TooManyRequests(APIError):
    status_code = 429
    type = "rate_limit_error"


def check_creation_rate(s: Session, owner: str | None, per_minute: int | None) -> None:
    """Refuse (429) a creation call when ``owner`` uploaded files (any purpose) or created
    batches ``per_minute`` times in the last 60 seconds. Counted in the database, so every
    API replica enforces the same limit."""
    if per_minute is None:
        return
    since = int(time.time()) - 60
    recent = [*_recent_uploads(s, owner, since), *_recent_batches(s, owner, since)]
    if len(recent) >= per_minute:
        wait = max(1, min(recent) + 61 - int(time.time()))
        raise TooManyRequests(
            f"Rate limit reached: {per_minute} file uploads and batch creations per minute "
            f"for this key. Try again in {wait} s.",
            code="rate_limit_exceeded",
        )


def _owned_by(model: type[FileRow] | type[BatchRow], owner: str | None) -> ColumnElement[bool]:
    return model.owner.is_(None) if owner is None else model.owner == owner


def _recent_uploads(s: Session, owner: str | None, since: int) -> list[int]:
    """Creation times of the owner's uploads since ``since``: its files, whatever their
    purpose, except the output and error files the server wrote for its batches."""
    produced = union(
        *(
            select(column).where(_owned_by(BatchRow, owner), column.is_not(None))
            for column in (BatchRow.output_file_id, BatchRow.error_file_id)
        )
    )
    query = select(FileRow.created_at).where(
        _owned_by(FileRow, owner),
        FileRow.created_at > since,
        # Produced files have purpose batch_output: only those need the look-up.
        or_(FileRow.purpose != "batch_output", FileRow.id.not_in(produced)),
    )
    return list(s.execute(query).scalars())


def _recent_batches(s: Session, owner: str | None, since: int) -> list[int]:
    query = select(BatchRow.created_at).where(
        _owned_by(BatchRow, owner), BatchRow.created_at > since
    )
    return list(s.execute(query).scalars())
