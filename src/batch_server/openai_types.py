"""OpenAI object shapes: the only place that turns rows into API objects, and the
request bodies the API accepts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_server.db.tables import ApiKeyRow, BatchRow, FileRow, WebhookDeliveryRow

SUPPORTED_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
COMPLETION_WINDOWS = {"24h": 24 * 3600}
FILE_PURPOSES = ("batch", "batch_output", "fine-tune", "assistants", "user_data", "evals")


# Batch priorities (an extension): higher runs first.
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000
Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
# The longest completion window (an extension: OpenAI accepts only "24h").
MAX_COMPLETION_WINDOW_SECONDS = 30 * 86400


class OutputExpiresAfter(BaseModel):
    """When the output and error files expire, as OpenAI accepts it: 1 hour to 30 days
    after the batch's creation."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(strict=True, ge=3600, le=30 * 86400)]


class CreateBatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None)
    output_expires_after: OutputExpiresAfter | None = None
    # Extensions (the SDK sends them with extra_body=...):
    model: str | None = None
    priority: Priority | None = None


PositiveLimit = Annotated[int, Field(ge=1, le=2**62)]


class LimitsUpdate(BaseModel):
    """``PATCH /v1/admin/limits``, and ``limits`` of ``PATCH /v1/admin/keys/{id}`` (an
    extension): the limits to change; ``null`` removes a limit that may be absent."""

    model_config = ConfigDict(extra="forbid")

    max_requests_per_batch: PositiveLimit | None = None
    max_upload_bytes: PositiveLimit | None = None
    max_queued_requests: PositiveLimit | None = None
    create_rate_per_minute: PositiveLimit | None = None


class KeyLimitsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limits: LimitsUpdate | None = None


class PriorityBody(BaseModel):
    """``POST /v1/batches/{id}/priority`` (an extension)."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority


def file_object(row: FileRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": None,
    }


def batch_object(row: BatchRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "request_counts": {
            "total": row.total,
            "completed": row.completed,
            "failed": row.failed,
        },
        "usage": {
            "input_tokens": row.input_tokens,
            "input_tokens_details": {"cached_tokens": row.cached_tokens},
            "output_tokens": row.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row.input_tokens + row.output_tokens,
        },
        "metadata": row.metadata_,
        "priority": row.priority,
    }


def delivery_object(row: WebhookDeliveryRow) -> dict[str, Any]:
    """A webhook delivery (an extension: the dead letter queue lists these)."""
    return {
        "id": row.id,
        "object": "webhook.delivery",
        "batch_id": row.batch_id,
        "event": row.event,
        "url": row.url,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "last_status_code": row.last_status_code,
        "created_at": int(row.created_at),
        "next_attempt_at": int(row.next_attempt_at),
    }


def key_object(row: ApiKeyRow) -> dict[str, Any]:
    """An API key as listed by admins and the CLI (never the token or its hash)."""
    return {
        "id": row.id,
        "object": "api_key",
        "name": row.name,
        "prefix": row.prefix,
        "admin": row.admin,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
        "limits": row.limits,
    }


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def output_line(
    custom_id: str, status_code: int, body: dict[str, Any], line_id: str, request_id: str
) -> dict[str, Any]:
    """A line of the output file (status 200) or of the error file (an engine-rejected
    request, with the OpenAI error body)."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def unexecuted_line(custom_id: str, code: str, message: str, line_id: str) -> dict[str, Any]:
    """An error-file line for a request that never ran (cancelled or expired batch)."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


Status = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
