"""Comparisons: one input run on 2..N models, as one linked batch (kind "comparison") per
model through the normal queue; the picks of the better answer per request, kept with who
picked and when (a preference label); and the comparison object with each model's run,
its throughput and cost, and the agreement between the models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, func, select

from batch_server import estimates, ids
from batch_server.db.pages import Scope, paginate
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, ComparisonPickRow, ComparisonRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs.admission import check_available
from batch_server.jobs.manager import InputGone, JobManager, NewBatch
from batch_server.models import prices
from batch_server.models.comparison_rows import AgreementCounter, Row, iter_rows
from batch_server.models.registry import Registry
from batch_server.statuses import LIVE
from batch_server.storage import FileStore

MAX_MODELS = 8


def resolve_models(registry: Registry, names: Sequence[str]) -> list[str]:
    """The registry ids of ``names`` (ids or aliases): 2..MAX_MODELS distinct models, each
    available; else OpenAI's 400 (404 for an unknown model)."""
    if not 2 <= len(names) <= MAX_MODELS:
        raise APIError(
            f"A comparison needs 2 to {MAX_MODELS} models, got {len(names)}",
            param="models",
            code="invalid_value",
        )
    models: list[str] = []
    for name in names:
        model = registry.resolve(name)
        if model is None:
            raise NotFound("model", name, param="models")
        if model in models:
            raise APIError(
                f"Model '{name}' is named twice (as '{model}'); compare distinct models",
                param="models",
                code="duplicate_model",
            )
        check_available(registry, model, param="models")
        models.append(model)
    return models


def create(
    db: Database,
    jobs: JobManager,
    admitted: list[NewBatch],
    metadata: dict[str, str] | None,
) -> ComparisonRow:
    """One batch per admitted model (each already through :func:`admission.admit`), then
    the comparison that links them. Raises :class:`InputGone` when the input file was
    deleted meanwhile (the batches made before are cancelled)."""
    made: list[BatchRow] = []
    try:
        for new in admitted:
            made.append(jobs.create_batch(replace(new, kind="comparison")))
    except InputGone:
        for batch in made:
            jobs.cancel(batch.id)
        raise
    first = admitted[0]
    row = ComparisonRow(
        id=ids.comparison_id(),
        owner=first.owner,
        created_at=int(time.time()),
        input_file_id=first.input_file_id,
        endpoint=first.endpoint,
        batches={new.model or "": b.id for new, b in zip(admitted, made, strict=True)},
        metadata_=metadata,
    )
    with db.write() as s:
        s.add(row)
    return row


def get(db: Database, comparison_id: str, owns: Callable[[str | None], bool]) -> ComparisonRow:
    """The comparison, if the caller may see it; else "not found"."""
    with db.read() as s:
        row = s.execute(
            select(ComparisonRow).where(ComparisonRow.id == comparison_id)
        ).scalar_one_or_none()
    if row is None or not owns(row.owner):
        raise NotFound("comparison", comparison_id, param="comparison_id")
    return row


def page(
    db: Database, scope: Scope, after: str | None, limit: int
) -> tuple[list[ComparisonRow], bool]:
    with db.read() as s:
        return paginate(
            s, scope(select(ComparisonRow)), ComparisonRow, after, limit, kind="comparison"
        )


def batches_of(db: Database, rows: Sequence[ComparisonRow]) -> dict[str, BatchRow]:
    """The linked batches of ``rows``, by batch id (one query)."""
    wanted = [b for r in rows for b in r.batches.values()]
    with db.read() as s:
        found = s.execute(select(BatchRow).where(BatchRow.id.in_(wanted))).scalars()
        return {b.id: b for b in found}


# -- picks ---------------------------------------------------------------------------------


def pick_object(row: ComparisonPickRow) -> dict[str, Any]:
    return {
        "object": "comparison.pick",
        "comparison_id": row.comparison_id,
        "custom_id": row.custom_id,
        "model": row.model,
        "rater": row.rater,
        "at": row.at,
    }


def set_pick(
    db: Database, comparison_id: str, custom_id: str, model: str | None, rater: str | None
) -> ComparisonPickRow:
    """Store (or replace) the pick of one request."""
    with db.write() as s:
        row = s.execute(
            select(ComparisonPickRow).where(
                ComparisonPickRow.comparison_id == comparison_id,
                ComparisonPickRow.custom_id == custom_id,
            )
        ).scalar_one_or_none()
        if row is None:
            row = ComparisonPickRow(comparison_id=comparison_id, custom_id=custom_id)
            s.add(row)
        row.model, row.rater, row.at = model, rater, time.time()
        s.flush()
        s.expunge(row)
    return row


def delete_pick(db: Database, comparison_id: str, custom_id: str) -> bool:
    with db.write() as s:
        done = s.execute(
            delete(ComparisonPickRow).where(
                ComparisonPickRow.comparison_id == comparison_id,
                ComparisonPickRow.custom_id == custom_id,
            )
        )
    return bool(getattr(done, "rowcount", 0))


def picks_for(db: Database, comparison_id: str, custom_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not custom_ids:
        return {}
    with db.read() as s:
        rows = s.execute(
            select(ComparisonPickRow).where(
                ComparisonPickRow.comparison_id == comparison_id,
                ComparisonPickRow.custom_id.in_(custom_ids),
            )
        ).scalars()
        return {r.custom_id: pick_object(r) for r in rows}


def pick_counts(db: Database, comparison_id: str, models: list[str]) -> dict[str, Any]:
    with db.read() as s:
        found = s.execute(
            select(ComparisonPickRow.model, func.count())
            .where(ComparisonPickRow.comparison_id == comparison_id)
            .group_by(ComparisonPickRow.model)
        ).all()
    counts: dict[str | None, int] = {r[0]: int(r[1]) for r in found}
    return {
        "total": sum(counts.values()),
        "ties": counts.get(None, 0),
        "by_model": {m: counts.get(m, 0) for m in models},
    }


# -- the comparison object -----------------------------------------------------------------


def _status(batches: list[BatchRow]) -> str:
    if any(b.status in LIVE for b in batches):
        return "in_progress"
    other = [b.status for b in batches if b.status != "completed"]
    return other[0] if other else "completed"


def _run(model: str, batch: BatchRow, rate: estimates.Rate | None) -> dict[str, Any]:
    table = prices.active()
    tokens = (batch.input_tokens, batch.output_tokens)
    return {
        "model": model,
        "batch_id": batch.id,
        "status": batch.status,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "tokens": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
        "throughput": {
            "requests_per_second": _r(rate.requests_per_second if rate else None),
            "output_tokens_per_second": _r(rate.output_tokens_per_second if rate else None),
            "engine_seconds": round(rate.seconds, 2) if rate else None,
        },
        "cost": {
            "reference": table.estimate(*tokens),
            "own": table.estimate(*tokens, name=model) if table.get(model) else None,
        },
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def linked(row: ComparisonRow, batches: dict[str, BatchRow]) -> list[BatchRow]:
    """The comparison's batches in its model order."""
    return [batches[b] for b in row.batches.values() if b in batches]


def comparison_object(
    db: Database,
    row: ComparisonRow,
    batches: dict[str, BatchRow],
    agreement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    runs = linked(row, batches)
    with db.read() as s:
        rates = estimates.batch_rates(s, [b.id for b in runs])
    models = list(row.batches)
    table = prices.active()
    return {
        "id": row.id,
        "object": "comparison",
        "created_at": row.created_at,
        "status": _status(runs),
        "input_file_id": row.input_file_id,
        "endpoint": row.endpoint,
        "models": models,
        "metadata": row.metadata_,
        "runs": [_run(m, batches[b], rates.get(b)) for m, b in row.batches.items() if b in batches],
        "agreement": agreement,
        "picks": pick_counts(db, row.id, models),
        "prices": {"reference": table.reference, "date": table.date, "source": table.source},
    }


def rows(
    db: Database,
    store: FileStore,
    row: ComparisonRow,
    batches: dict[str, BatchRow],
    after: int = -1,
) -> Iterator[Row]:
    """:func:`iter_rows` of the comparison."""
    return iter_rows(db, store, row.input_file_id, linked(row, batches), after)


def agreement(
    db: Database, store: FileStore, row: ComparisonRow, batches: dict[str, BatchRow]
) -> dict[str, Any]:
    """Agreement over every request (one streamed pass over the input and the results);
    kept once every batch has ended, as it cannot change any more."""
    if row.id in _ENDED:
        return _ENDED[row.id]
    runs = linked(row, batches)
    ended = len(runs) == len(row.batches) and all(b.status not in LIVE for b in runs)
    counter = AgreementCounter(list(row.batches))
    for item in rows(db, store, row, batches):
        counter.add(item)
    result = counter.result()
    if ended:
        if len(_ENDED) >= ENDED_KEPT:
            _ENDED.pop(next(iter(_ENDED)))
        _ENDED[row.id] = result
    return result


ENDED_KEPT = 256
_ENDED: dict[str, dict[str, Any]] = {}  # agreement of comparisons whose batches all ended


def row_object(item: Row, models: list[str], pick: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "index": item.index,
        "custom_id": item.custom_id,
        "prompt": item.prompt,
        "answers": [
            {
                "model": m,
                "text": a.text if a else None,
                "error": a.error if a else None,
                "done": a is not None,
            }
            for m, a in zip(models, item.answers, strict=True)
        ],
        "agree": item.agree,
        "pick": pick,
    }


def has_request(store: FileStore, input_file_id: str, custom_id: str) -> bool:
    """Whether the input has a request with this ``custom_id`` (a byte search first, so
    only candidate lines are parsed)."""
    needle = json.dumps(custom_id, ensure_ascii=False).encode()
    try:
        fh = store.open(input_file_id)
    except FileNotFoundError:
        return False
    with fh:
        for raw in fh:
            if needle in raw or b"\\u" in raw:
                try:
                    obj = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                if isinstance(obj, dict) and obj.get("custom_id") == custom_id:
                    return True
    return False
