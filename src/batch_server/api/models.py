"""Models API: the registry in OpenAI's list shape."""

from __future__ import annotations

from fastapi import APIRouter

from batch_server import estimates
from batch_server.api.deps import Ctx
from batch_server.app_context import AppContext
from batch_server.errors import NotFound

router = APIRouter(prefix="/v1/models", tags=["models"])


def _model(ctx: AppContext, model_id: str, rate: estimates.Rate | None) -> dict:
    spec = ctx.settings.models[model_id]
    return {
        "id": model_id,
        "object": "model",
        "created": ctx.started_at,
        "owned_by": "batch-server",
        "engine": spec.engine,
        "aliases": spec.aliases,
        # Measured on this server's recent work; None for a model that has not run yet.
        "throughput": rate.as_dict() if rate else None,
    }


def _rates(ctx: AppContext) -> dict[str, estimates.Rate]:
    with ctx.db.read() as s:
        return estimates.model_rates(s)


@router.get("")
def list_models(ctx: Ctx) -> dict:
    rates = _rates(ctx)
    return {"object": "list", "data": [_model(ctx, m, rates.get(m)) for m in ctx.settings.models]}


@router.get("/{model_id:path}")
def retrieve_model(model_id: str, ctx: Ctx) -> dict:
    resolved = ctx.settings.model_aliases().get(model_id)
    if resolved is None:
        raise NotFound("model", model_id, param="model")
    return _model(ctx, resolved, _rates(ctx).get(resolved))
