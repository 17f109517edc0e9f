"""Webhook events (what a receiver gets) and deliveries (the dead letter queue)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from batch_server.db.tables import WebhookDeliveryRow
from batch_server.openai_types.batches import Batch
from batch_server.openai_types.common import APIObject, DataList, Identified

WebhookEventType = Literal[
    "batch.completed", "batch.failed", "batch.expired", "batch.cancelled", "batch.progress"
]


class WebhookEvent(APIObject):
    """The body of a webhook request, signed per Standard Webhooks."""

    type: WebhookEventType
    timestamp: str = Field(description="ISO 8601, UTC")
    data: Batch


class WebhookDelivery(Identified):
    """A webhook delivery (the dead letter queue lists these)."""

    object: Literal["webhook.delivery"] = "webhook.delivery"
    batch_id: str
    event: WebhookEventType
    url: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    last_error: str | None
    last_status_code: int | None
    created_at: int
    next_attempt_at: int

    @classmethod
    def from_row(cls, row: WebhookDeliveryRow) -> WebhookDelivery:
        return cls(
            id=row.id,
            batch_id=row.batch_id,
            event=row.event,
            url=row.url,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            last_status_code=row.last_status_code,
            created_at=int(row.created_at),
            next_attempt_at=int(row.next_attempt_at),
        )


class WebhookDeliveryList(DataList[WebhookDelivery]):
    pass


def delivery_object(row: WebhookDeliveryRow) -> dict[str, Any]:
    return WebhookDelivery.from_row(row).model_dump(mode="json")


class WebhookDeliveryDeleted(APIObject):
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    deleted: bool
