"""The webhook dead letter queue: deliveries that failed every attempt."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import delete, select

from batch_server import webhooks
from batch_server.api.auth import Auth, Principal
from batch_server.api.deps import Ctx, check_limit
from batch_server.api.openapi import errors
from batch_server.app_context import AppContext
from batch_server.db.tables import WebhookDeliveryRow
from batch_server.errors import NotFound
from batch_server.openai_types import WebhookDelivery, WebhookDeliveryDeleted, WebhookDeliveryList

router = APIRouter(prefix="/v1/webhooks/dead-letter", tags=["webhooks"], responses=errors(400, 401))


def _dead(ctx: AppContext, delivery_id: str, who: Principal) -> WebhookDeliveryRow:
    with ctx.db.read() as s:
        row = s.execute(
            select(WebhookDeliveryRow).where(
                WebhookDeliveryRow.id == delivery_id, WebhookDeliveryRow.status == "dead"
            )
        ).scalar()
    if row is None or not who.owns(row.owner):
        raise NotFound("dead letter", delivery_id, param="delivery_id")
    return row


@router.get("", responses=errors(422))
def list_dead(ctx: Ctx, who: Auth, limit: int = Query(100)) -> WebhookDeliveryList:
    check_limit(limit, 1000)
    query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.status == "dead")
    query = who.scope(query, WebhookDeliveryRow).order_by(WebhookDeliveryRow.seq.desc())
    with ctx.db.read() as s:
        rows = list(s.execute(query.limit(limit)).scalars())
    return WebhookDeliveryList(data=[WebhookDelivery.from_row(r) for r in rows])


@router.post("/{delivery_id}/retry", responses=errors(403, 404))
def retry(delivery_id: str, ctx: Ctx, who: Auth) -> WebhookDelivery:
    _dead(ctx, delivery_id, who)
    with ctx.db.write() as s:
        webhooks.retry_dead(s, delivery_id)
        row = s.execute(
            select(WebhookDeliveryRow).where(WebhookDeliveryRow.id == delivery_id)
        ).scalar_one()
        return WebhookDelivery.from_row(row)


@router.delete("/{delivery_id}", responses=errors(403, 404))
def remove(delivery_id: str, ctx: Ctx, who: Auth) -> WebhookDeliveryDeleted:
    _dead(ctx, delivery_id, who)
    with ctx.db.write() as s:
        s.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.id == delivery_id))
    return WebhookDeliveryDeleted(id=delivery_id, deleted=True)
