"""Finished (and live) batches with filters, durations and measured rates: the history
the API's ``/v1/jobs/history`` and the dashboard's batches pages show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, or_, select

from batch_server import estimates
from batch_server.db.pages import Scope, everything, paginate
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow
from batch_server.errors import APIError
from batch_server.estimates import Rate
from batch_server.openai_types import Batch, HistoryEntry
from batch_server.statuses import LIVE, TERMINAL, BatchStatus

ALL_STATUSES = (*LIVE, *TERMINAL)
# A benchmark batch's metadata key: "true" when it was created with include_in_history.
INCLUDE_IN_HISTORY = "include_in_history"


@dataclass
class HistoryFilter:
    statuses: tuple[str, ...] = TERMINAL
    model: str | None = None
    since: int | None = None  # created at or after (Unix seconds)
    until: int | None = None  # created before
    q: str | None = None  # a substring of the id or of the metadata
    # benchmark batches are not user work: left out unless asked for (or the benchmark
    # was created with include_in_history)
    include_benchmarks: bool = False

    @classmethod
    def parse(cls, status: str | None, **kw: Any) -> HistoryFilter:
        """``status``: comma-separated statuses, or ``all``; default: the finished ones."""
        if not status:
            return cls(**kw)
        if status == "all":
            return cls(ALL_STATUSES, **kw)
        wanted = tuple(x.strip() for x in status.split(",") if x.strip())
        bad = [x for x in wanted if x not in ALL_STATUSES]
        if bad or not wanted:
            raise APIError(
                f"Unknown status {', '.join(bad) or status!r}; use one or more of "
                f"{', '.join(ALL_STATUSES)}, or 'all'",
                param="status",
                code="invalid_value",
            )
        return cls(wanted, **kw)


def history_page(
    db: Database,
    aliases: dict[str, str],
    filters: HistoryFilter,
    limit: int,
    after: str | None,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of :func:`history_objects` as JSON-ready dicts (for the dashboard)."""
    entries, more = history_objects(db, aliases, filters, limit, after)
    return [e.model_dump(mode="json") for e in entries], more


def history_objects(
    db: Database,
    aliases: dict[str, str],
    filters: HistoryFilter,
    limit: int,
    after: str | None,
    scope: Scope = everything,
) -> tuple[list[HistoryEntry], bool]:
    """The batches matching ``filters`` within ``scope`` (a tenant's), newest first, and
    whether there are more."""
    query = scope(select(BatchRow)).where(BatchRow.status.in_(filters.statuses))
    if filters.model:
        model = aliases.get(filters.model, filters.model)
        query = query.where(BatchRow.model == model)
    if filters.since is not None:
        query = query.where(BatchRow.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(BatchRow.created_at < filters.until)
    if not filters.include_benchmarks:
        kept = BatchRow.metadata_[INCLUDE_IN_HISTORY].as_string() == "true"
        query = query.where(or_(BatchRow.kind != "benchmark", kept))
    if filters.q:
        like = f"%{filters.q.strip()}%"
        query = query.where(
            or_(BatchRow.id.like(like), cast(BatchRow.metadata_, String).like(like))
        )
    with db.read() as s:
        rows, more = paginate(s, query, BatchRow, after, limit, kind="batch")
        rates = estimates.batch_rates(s, [r.id for r in rows])
    return [history_object(r, rates.get(r.id)) for r in rows], more


def history_entry(row: BatchRow, rate: Rate | None) -> dict[str, Any]:
    """:func:`history_object` as a JSON-ready dict (for the dashboard)."""
    return history_object(row, rate).model_dump(mode="json")


def history_object(row: BatchRow, rate: Rate | None) -> HistoryEntry:
    """The batch object plus timings, measured rates and, if any, why it did not succeed."""
    ended = row.completed_at or row.failed_at or row.expired_at or row.cancelled_at
    return HistoryEntry(
        **dict(Batch.from_row(row)),
        ended_at=ended,
        duration_seconds=(ended - row.created_at) if ended else None,
        processing_seconds=round(rate.seconds, 1) if rate else None,
        requests_per_second=_r(rate.requests_per_second if rate else None),
        output_tokens_per_second=_r(rate.output_tokens_per_second if rate else None),
        total_tokens_per_second=_r(rate.total_tokens_per_second if rate else None),
        failure_reason=failure_reason(row),
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def failure_reason(row: BatchRow) -> str | None:
    status = BatchStatus(row.status)
    if status == BatchStatus.FAILED and row.errors:
        first: str = row.errors[0].get("message", "")
        more = len(row.errors) - 1
        return first + (f" (and {more} more error(s))" if more else "")
    if status == BatchStatus.FAILED:
        return "failed"
    if status == BatchStatus.CANCELLED:
        return "cancelled by request"
    if status == BatchStatus.EXPIRED:
        return f"the completion window ({row.completion_window}) expired"
    if row.failed:
        return f"{row.failed} request(s) failed; see the error file"
    return None
