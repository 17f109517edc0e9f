"""Models API: the registry in OpenAI's list shape."""

from __future__ import annotations

from fastapi import APIRouter

from batch_server import estimates
from batch_server.api.deps import Ctx
from batch_server.api.openapi import errors
from batch_server.app_context import AppContext
from batch_server.errors import NotFound
from batch_server.openai_types import MeasuredRate, Model, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"], responses=errors(400))


def _model(ctx: AppContext, model_id: str, rate: estimates.Rate | None) -> Model:
    registry = ctx.models.current()
    spec, state = registry.specs[model_id], registry.state(model_id)
    return Model(
        id=model_id,
        created=ctx.started_at,
        owned_by="batch-server",
        engine=spec.engine,
        aliases=spec.aliases,
        # Measured on this server's recent work; None for a model that has not run yet.
        throughput=MeasuredRate.model_validate(rate.as_dict()) if rate else None,
        status=state.status if state else "untested",
        status_reason=state.status_reason if state else None,
        origin=state.origin if state else "config",
    )


def _rates(ctx: AppContext) -> dict[str, estimates.Rate]:
    with ctx.db.read() as s:
        return estimates.model_rates(s)


@router.get("")
def list_models(ctx: Ctx) -> ModelList:
    rates = _rates(ctx)
    return ModelList(data=[_model(ctx, m, rates.get(m)) for m in ctx.models.current().specs])


@router.get("/{model_id:path}", responses=errors(404))
def retrieve_model(model_id: str, ctx: Ctx) -> Model:
    resolved = ctx.models.current().resolve(model_id)
    if resolved is None:
        raise NotFound("model", model_id, param="model")
    return _model(ctx, resolved, _rates(ctx).get(resolved))
