"""What the API accepts: the constants of OpenAI's create calls and the JSON request bodies
(the multipart forms are declared in :mod:`batch_server.api.openapi`)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal[
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/moderations"
]
SUPPORTED_ENDPOINTS: tuple[str, ...] = get_args(Endpoint)
COMPLETION_WINDOWS = {"24h": 24 * 3600}

FilePurpose = Literal[
    "batch", "batch_output", "fine-tune", "fine-tune-results", "assistants", "user_data", "evals"
]
FILE_PURPOSES: tuple[str, ...] = get_args(FilePurpose)


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
