"""Objects of the admin endpoints: limits, keys, reset results, the webhook secret."""

from __future__ import annotations

from typing import Any, Literal

from batch_server.db.tables import ApiKeyRow
from batch_server.openai_types.common import APIObject, DataList, Identified


class LimitsObject(APIObject):
    """Limits of a key (``null``: none)."""

    object: Literal["limits"] = "limits"
    max_requests_per_batch: int
    max_upload_bytes: int
    max_queued_requests: int | None
    create_rate_per_minute: int | None


class ApiKey(Identified):
    """An API key as listed by admins and the CLI (never the token or its hash)."""

    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    admin: bool
    created_at: int
    revoked_at: int | None
    limits: dict[str, int] | None

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> ApiKey:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            admin=row.admin,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            limits=row.limits,
        )


class ApiKeyList(DataList[ApiKey]):
    pass


def key_object(row: ApiKeyRow) -> dict[str, Any]:
    return ApiKey.from_row(row).model_dump(mode="json")


class ResetResult(APIObject):
    object: Literal["admin.reset"] = "admin.reset"
    units_released: int
    backoffs_cleared: int
    batch_steps_released: int


class WebhookSecret(APIObject):
    object: Literal["webhook.secret"] = "webhook.secret"
    secret: str
