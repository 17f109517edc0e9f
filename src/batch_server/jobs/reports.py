"""Read-only views of the work for the API, the dashboard and the CLI: the queue in run
order with ETAs, the workers, and a batch's requests next to their results.

A batch's results live in the ``results`` table while it runs and in its output and error
files once finalized; the readers here hide which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

from sqlalchemy import Row, bindparam, func, select

from batch_server import estimates
from batch_server.db.pages import Scope
from batch_server.db.session import Database
from batch_server.db.tables import BatchEventRow, BatchRow, ResultRow, WorkerRow, WorkUnitRow
from batch_server.estimates import (
    Planned,
    batch_rates,
    current_rates,
    model_rates,
    plan,
    prior_rates,
)
from batch_server.jobs.lifecycle import LIVE
from batch_server.jobs.manager import WORKER_FRESH_SECONDS
from batch_server.jobs.queue import RUN_ORDER
from batch_server.jobs.result_fields import FieldFilter, matching_indexes, plugin_data
from batch_server.jobs.validation import ParsedLine, iter_lines
from batch_server.storage import FileStore

# A first line's max_tokens above this counts as this much in a waiting batch's ETA.
MAX_TOKENS_SEEN = 1_000_000
# Bytes of one input line a view holds (a longer one is shown cut, as text that is not JSON).
VIEW_LINE_LIMIT = 8 * 1024 * 1024


def workers(
    db: Database, now: float | None = None, include_stale: bool = False
) -> list[dict[str, Any]]:
    """Workers with a fresh heartbeat (or all known ones) and what each is doing."""
    now = now or time.time()
    query = select(WorkerRow).order_by(WorkerRow.started_at)
    if not include_stale:
        query = query.where(WorkerRow.heartbeat_at >= now - WORKER_FRESH_SECONDS)
    with db.read() as s:
        return [
            {
                "id": w.id,
                "hostname": w.hostname,
                "pid": w.pid,
                "state": w.state,
                "loaded_model": w.loaded_model,
                "current_batch_id": w.current_batch_id,
                "started_at": int(w.started_at),
                "heartbeat_age_seconds": round(now - w.heartbeat_at, 1),
                "alive": now - w.heartbeat_at < WORKER_FRESH_SECONDS,
            }
            for w in s.execute(query).scalars()
        ]


def queue(
    db: Database, store: FileStore, aliases: dict[str, str], now: float | None = None
) -> dict[str, Any]:
    """Live batches in the order they will run, each with its position, progress, current
    throughput and ETA; and the workers."""
    now = now or time.time()
    live_workers = workers(db, now)
    with db.read() as s:
        rows = list(
            s.execute(
                select(BatchRow).where(BatchRow.status.in_(LIVE)).order_by(*RUN_ORDER)
            ).scalars()
        )
        ids = [r.id for r in rows]
        leased = dict(
            s.execute(
                select(WorkUnitRow.batch_id, func.count())
                .where(
                    WorkUnitRow.batch_id.in_(ids),
                    WorkUnitRow.status == "leased",
                    WorkUnitRow.lease_expires_at > now,
                )
                .group_by(WorkUnitRow.batch_id)
            ).all()
        )
        # Run order: batches being wrapped up, then those a worker is on, then the rest
        # in priority-then-FIFO order (a running unit finishes before a new claim).
        rows.sort(key=lambda r: _run_rank(r, leased.get(r.id, 0)))
        own = batch_rates(s, ids)
        current = current_rates(s, ids, now)
        models = model_rates(s, now)
        priors = prior_rates(s, skip=models)
    planned = [_planned(r, store, aliases) for r in rows]
    etas = plan(planned, own, models, len(live_workers), now, priors)
    data = []
    requests_ahead = 0
    for position, r in enumerate(rows, start=1):
        done = r.completed + r.failed
        rate = current.get(r.id)
        running_on = [w["id"] for w in live_workers if w["current_batch_id"] == r.id]
        data.append(
            {
                "id": r.id,
                "object": "queue.entry",
                "status": r.status,
                "state": _state(r, leased.get(r.id, 0), running_on),
                "model": r.model,
                "kind": r.kind,
                "priority": r.priority,
                "position": position,
                "jobs_ahead": position - 1,
                "requests_ahead": requests_ahead,
                "created_at": r.created_at,
                "in_progress_at": r.in_progress_at,
                "metadata": r.metadata_,
                "request_counts": {"total": r.total, "completed": r.completed, "failed": r.failed},
                "progress": round(done / r.total, 4) if r.total else 0.0,
                "throughput": rate.as_dict() if rate else None,
                "eta": etas[r.id].as_dict(),
                "workers": running_on,
            }
        )
        requests_ahead += _remaining(r)
    return {
        "object": "queue",
        "generated_at": int(now),
        "running": sum(1 for d in data if d["state"] == "running"),
        "waiting": sum(1 for d in data if d["state"] == "waiting"),
        "data": data,
        "workers": live_workers,
    }


# BatchRow's columns under their attribute names: a row of this reads like a BatchRow.
_BATCH_BY_ID = select(
    *(column.label(name) for name, column in BatchRow.__mapper__.columns.items())
).where(BatchRow.id == bindparam("batch_id"))


def batch(db: Database, batch_id: str) -> Row[Any] | None:
    """The batch's row as it is now, read with one SELECT and no ORM session, whose
    bookkeeping cost more than the query (status polls come by the hundred per second)."""
    with db.single() as conn:
        return conn.execute(_BATCH_BY_ID, {"batch_id": batch_id}).first()


def batch_events(db: Database, batch_id: str) -> list[dict[str, Any]]:
    """What happened to a batch, oldest first (status changes, units, engine errors)."""
    with db.read() as s:
        events = s.execute(
            select(BatchEventRow)
            .where(BatchEventRow.batch_id == batch_id)
            .order_by(BatchEventRow.id)
        ).scalars()
        return [{"at": e.at, "kind": e.kind, "message": e.message} for e in events]


def visible_queue(
    db: Database, store: FileStore, aliases: dict[str, str], scope: Scope | None = None
) -> dict[str, Any]:
    """The queue as a tenant may see it (``scope``; ``None``: everything): positions, jobs
    ahead and ETAs count every batch, but only the tenant's own batches are listed."""
    snap = queue(db, store, aliases)
    if scope is not None:
        with db.read() as s:
            mine = set(
                s.execute(scope(select(BatchRow.id).where(BatchRow.status.in_(LIVE)))).scalars()
            )
        snap["data"] = [e for e in snap["data"] if e["id"] in mine]
    return snap


def _planned(r: BatchRow, store: FileStore, aliases: dict[str, str]) -> Planned:
    peek = _peek(store, r.input_file_id)
    if r.status != "validating":
        return Planned(r.id, r.model, _remaining(r), peek.max_tokens, peek.prompt_tokens)
    model = r.model or aliases.get(peek.model or "")
    return Planned(r.id, model, peek.count, peek.max_tokens, peek.prompt_tokens)


PEEK_SAMPLE = 50  # first lines whose prompts are measured for a waiting batch's ETA


@dataclass(frozen=True)
class Peek:
    count: int | None  # request lines (None: the file is gone)
    model: str | None  # the first line's model
    max_tokens: int | None  # the first line's token limit
    prompt_tokens: float | None  # the mean estimated prompt tokens of the first lines


@lru_cache(maxsize=1024)
def _peek(store: FileStore, file_id: str) -> Peek:
    """What a batch's (never modified) input file will run, for its ETA: its request
    lines, the first line's model and token limit, and the first lines' prompt sizes."""
    count, model, max_tokens, prompts = 0, None, None, []
    try:
        with store.open(file_id) as fh:
            for line in iter_lines(fh, limit=VIEW_LINE_LIMIT):
                if count < PEEK_SAMPLE:  # any line: validation has not judged it yet
                    with suppress(ValueError, AttributeError, TypeError, OverflowError):
                        body = json.loads(line.raw).get("body", {})
                        prompts.append(estimates.prompt_tokens(body))
                        if count == 0:
                            model = body.get("model")
                            model = model if isinstance(model, str) else None
                            limit = (
                                body.get("max_completion_tokens")
                                or body.get("max_tokens")
                                or body.get("max_output_tokens")
                            )
                            max_tokens = min(int(limit), MAX_TOKENS_SEEN) if limit else None
                count += 1
    except FileNotFoundError:
        return Peek(None, None, None, None)
    return Peek(count, model, max_tokens, sum(prompts) / len(prompts) if prompts else None)


def _run_rank(r: BatchRow, leased_units: int) -> int:
    """0 for a batch being wrapped up, 1 for one a worker is on, 2 for a waiting one."""
    if r.status in ("finalizing", "cancelling"):
        return 0
    return 1 if leased_units else 2


def _remaining(r: BatchRow) -> int:
    if r.status in ("finalizing", "cancelling"):
        return 0
    return max(r.total - r.completed - r.failed, 0)


def _state(r: BatchRow, leased_units: int, running_on: list[str]) -> str:
    if r.status != "in_progress":
        return r.status
    return "running" if leased_units or running_on else "waiting"


# -- a batch's failed requests and its request/response pairs ------------------------------


def failed_requests(
    db: Database, store: FileStore, batch: BatchRow, offset: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The batch's error lines (``offset``, up to ``limit``), each with its code and
    message pulled out; and whether there are more."""
    lines = islice(_error_lines(db, store, batch), offset, offset + limit + 1)
    items = [_failure(json.loads(line)) for line in lines]
    return items[:limit], len(items) > limit


def _error_lines(db: Database, store: FileStore, batch: BatchRow) -> Iterator[str]:
    if batch.error_file_id is None and batch.status in LIVE:
        with db.read() as s:
            rows = s.execute(
                select(ResultRow.payload)
                .where(ResultRow.batch_id == batch.id, ResultRow.is_error.is_(True))
                .order_by(ResultRow.request_index)
            ).all()
        if rows or _reload(db, batch.id).error_file_id is None:
            yield from (r[0] for r in rows)
            return
        batch = _reload(db, batch.id)  # finalized meanwhile: the rows moved to the file
    if batch.error_file_id:
        yield from file_lines(store, batch.error_file_id)


def _reload(db: Database, batch_id: str) -> BatchRow:
    with db.read() as s:
        row = s.execute(select(BatchRow).where(BatchRow.id == batch_id)).scalar_one()
    return row


def file_lines(store: FileStore, file_id: str | None) -> Iterator[str]:
    """The non-blank lines of a stored file (none when there is no such file)."""
    if file_id is None:
        return
    try:
        fh = store.open(file_id)
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            if raw.strip():
                yield raw.decode()


def _failure(line: dict[str, Any]) -> dict[str, Any]:
    response = line.get("response") or {}
    error = line.get("error") or (response.get("body") or {}).get("error") or {}
    return {
        "custom_id": line.get("custom_id"),
        "status_code": response.get("status_code"),
        "code": error.get("code"),
        "message": error.get("message"),
        "line": line,
    }


def request_pairs(
    db: Database,
    store: FileStore,
    batch: BatchRow,
    offset: int,
    limit: int,
    where: list[FieldFilter] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Input requests ``offset``..``offset+limit`` next to their responses or errors
    (``None`` while not run yet) and plugin fields; and whether there are more. With
    ``where``, only the requests whose fields pass every filter."""
    try:
        fh = store.open(batch.input_file_id)
    except FileNotFoundError:
        return [], False
    with fh:
        lines: Iterator[tuple[int, ParsedLine]] = enumerate(iter_lines(fh, limit=VIEW_LINE_LIMIT))
        if where:
            wanted = list(islice(matching_indexes(db, batch.id, where), offset, offset + limit + 1))
            chosen = set(wanted)
            lines = ((i, line) for i, line in lines if i in chosen)
            page = list(islice(lines, len(wanted)))
        else:
            page = list(islice(lines, offset, offset + limit + 1))
    more, page = len(page) > limit, page[:limit]
    items: list[dict[str, Any]] = []
    for index, line in page:
        # The input may hold any line (a failed batch's too): not JSON, not an object, a
        # custom_id that is not a string, no body. Show it as it is.
        try:
            obj = json.loads(line.raw)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            obj = {"raw": line.raw.decode(errors="replace")}
        custom_id = obj.get("custom_id")
        template = obj.get("template") if isinstance(obj.get("template"), str) else None
        request = obj.get("body", obj) if template is None else obj
        items.append(
            {
                "index": index,
                "line": line.line_no,
                "custom_id": custom_id if isinstance(custom_id, str) else None,
                "request": request,
                "status_code": None,
                "response": None,
                "error": None,
                "template": template,
                "fields": None,
                "plugin_error": None,
                "ratings": None,
            }
        )
    _add_plugin_data(db, batch.id, items)
    results = _results_for(db, store, batch, items)
    for item in items:
        found = results.get(item["custom_id"])
        if found:
            response = found.get("response") or {}
            item["status_code"] = response.get("status_code")
            body = response.get("body")
            if item["status_code"] == 200:
                item["response"] = body
            else:
                item["error"] = found.get("error") or (body or {}).get("error")
    return items, more


def _add_plugin_data(db: Database, batch_id: str, items: list[dict[str, Any]]) -> None:
    if not any(item["template"] for item in items):
        return
    by_index = {item["index"]: item for item in items}
    first, last = min(by_index), max(by_index)
    for index, fields, error, ratings in plugin_data(db, batch_id, first, last + 1):
        if index in by_index:
            by_index[index].update(fields=fields, plugin_error=error, ratings=ratings)


def _results_for(
    db: Database, store: FileStore, batch: BatchRow, items: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    if not items:
        return {}
    if batch.status in LIVE:
        first, last = items[0]["index"], items[-1]["index"]
        with db.read() as s:
            rows = s.execute(
                select(ResultRow.payload).where(
                    ResultRow.batch_id == batch.id,
                    ResultRow.request_index >= first,
                    ResultRow.request_index <= last,
                )
            ).all()
        found = [json.loads(r[0]) for r in rows]
        # all there, or still running; else finalized meanwhile (rows with plugin fields
        # outlive finalization: a partial set is no answer)
        if len(found) >= len(items) or _reload(db, batch.id).status in LIVE:
            return {f["custom_id"]: f for f in found}
        batch = _reload(db, batch.id)
    wanted = {item["custom_id"] for item in items} - {None}
    out: dict[str, dict[str, Any]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id is None:
            continue
        for raw in file_lines(store, file_id):
            line = json.loads(raw)
            if line.get("custom_id") in wanted:
                out[line["custom_id"]] = line
                if len(out) == len(wanted):
                    return out
    return out
