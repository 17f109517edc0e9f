"""Starting a comparison and reading its rows for a caller: the operations the comparisons
router and the dashboard's comparison pages share."""

from __future__ import annotations

from typing import Any

from batch_server.api.auth import Principal
from batch_server.api.batch_creation import admit, load
from batch_server.app_context import AppContext
from batch_server.db.tables import ComparisonRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs.manager import InputGone
from batch_server.models import comparison_rows, comparisons
from batch_server.openai_types import CreateBatchBody
from batch_server.openai_types.comparisons import CreateComparisonBody

DEFAULT_ENDPOINT = "/v1/chat/completions"


def start(ctx: AppContext, body: CreateComparisonBody, who: Principal) -> ComparisonRow:
    """Check everything first (models, source, each batch's admission), then create the
    batches and the comparison. Shared by the API and the dashboard's form."""
    registry = ctx.models.current()
    models = comparisons.resolve_models(registry, body.models)
    if (body.input_file_id is None) == (body.batch_id is None):
        raise APIError(
            "Give either 'input_file_id' or 'batch_id' (whose input is compared)",
            param="input_file_id",
            code="invalid_value",
        )
    input_file_id, endpoint = body.input_file_id, body.endpoint
    if body.batch_id is not None:
        source = load(ctx, body.batch_id, who)
        input_file_id, endpoint = source.input_file_id, endpoint or source.endpoint
    assert input_file_id is not None
    admitted = [
        admit(
            ctx,
            CreateBatchBody(
                input_file_id=input_file_id,
                endpoint=endpoint or DEFAULT_ENDPOINT,
                completion_window=body.completion_window,
                metadata=body.metadata,
                model=model,
            ),
            who,
            registry,
        )
        for model in models
    ]
    try:
        return comparisons.create(ctx.db, ctx.jobs, admitted, body.metadata)
    except InputGone as exc:
        raise NotFound("file", input_file_id, param="input_file_id") from exc


def rows_page(
    ctx: AppContext, row: ComparisonRow, after: int, limit: int, disagree: bool
) -> dict[str, Any]:
    """A page of the comparison's rows, as the rows route returns it (and the page shows)."""
    batches = comparisons.batches_of(ctx.db, [row])
    items, more = comparison_rows.page(
        comparisons.rows(ctx.db, ctx.store, row, batches, after), limit, disagree
    )
    picks = comparisons.picks_for(ctx.db, row.id, [i.custom_id for i in items if i.custom_id])
    models = list(row.batches)
    return {
        "object": "list",
        "comparison_id": row.id,
        "models": models,
        "data": [comparisons.row_object(i, models, picks.get(i.custom_id or "")) for i in items],
        "has_more": more,
        "next_after": items[-1].index if more and items else None,
    }
