"""Admission of a new batch: the rules a create call must meet before the batch exists
(endpoint, completion window, metadata, priority, webhook, input file, the key's queue
limit). The API and the dashboard both create batches through :func:`admit`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter

from batch_server import limits, webhooks
from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.db.tables import FileRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs.manager import NewBatch
from batch_server.models.registry import Registry
from batch_server.openai_types import (
    MAX_COMPLETION_WINDOW_SECONDS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    SUPPORTED_ENDPOINTS,
    CreateBatchBody,
    Priority,
)

_WINDOW = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PRIORITY = TypeAdapter(Priority)


def window_seconds(window: str) -> int:
    """OpenAI accepts "24h"; other durations ("90m", "30s", "7d") up to 30 days are an
    extension."""
    match = _WINDOW.match(window)
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_COMPLETION_WINDOW_SECONDS:
        raise APIError(
            f"Invalid completion_window '{window}'; use '24h' (or a duration like '90m', "
            f"at most {MAX_COMPLETION_WINDOW_SECONDS // 86400} days)",
            param="completion_window",
            code="invalid_value",
        )
    return seconds


def batch_priority(body: CreateBatchBody, metadata: dict[str, str] | None) -> int:
    """``priority``, else ``metadata["priority"]``, else 0; within the same bounds."""
    if body.priority is not None:
        return body.priority
    if not metadata or "priority" not in metadata:
        return 0
    try:
        return _PRIORITY.validate_python(int(metadata["priority"]))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise APIError(
            f"metadata 'priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}",
            param="metadata",
            code="invalid_value",
        ) from exc


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    if len(metadata) > 16:
        raise APIError(
            "'metadata' may have at most 16 keys", param="metadata", code="invalid_value"
        )
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise APIError(
                "'metadata' keys are strings of at most 64 characters and values "
                "strings of at most 512",
                param="metadata",
                code="invalid_value",
            )
    return metadata


def check_available(registry: Registry, model_id: str, param: str = "model") -> None:
    """Refuse a model whose latest test load failed (see ``POST
    /v1/admin/models/{id}/test``), with the reason, before any batch uses it."""
    reason = registry.unavailable().get(model_id)
    if reason is not None:
        raise APIError(
            f"Model '{model_id}' is unavailable: its test load failed: {reason}",
            param=param,
            code="model_unavailable",
        )


def admit(
    settings: Settings,
    registry: Registry,
    db: Database,
    body: CreateBatchBody,
    find_file: Callable[[str], FileRow],
    owner: str | None,
) -> NewBatch:
    """The batch to create from ``body``, or the OpenAI error that refuses it.
    ``find_file`` finds the input file among the caller's (or raises not found)."""
    if body.endpoint not in SUPPORTED_ENDPOINTS:
        raise APIError(
            f"Unsupported endpoint '{body.endpoint}'; supported: {', '.join(SUPPORTED_ENDPOINTS)}",
            param="endpoint",
            code="invalid_value",
        )
    window = window_seconds(body.completion_window)
    metadata = check_metadata(body.metadata)
    model = None
    if body.model:
        model = registry.resolve(body.model)
        if model is None:
            raise NotFound("model", body.model, param="model")
        check_available(registry, model)
    priority = batch_priority(body, metadata)
    hook_url, hook_events = webhooks.subscription(settings, metadata)
    source = find_file(body.input_file_id)
    if source.purpose != "batch":
        raise APIError(
            f"File '{source.id}' has purpose '{source.purpose}'; batch input files "
            "need purpose 'batch'",
            param="input_file_id",
            code="invalid_value",
        )
    with db.read() as s:
        mine = limits.for_owner(s, settings, owner)
        queued = limits.queued_requests(s, owner)
    if mine.max_queued_requests is not None and queued >= mine.max_queued_requests:
        raise limits.TooManyRequests(
            f"This key already has {queued} requests queued, the limit is "
            f"{mine.max_queued_requests}. Wait for running batches to finish.",
            code="queue_limit_exceeded",
        )
    return NewBatch(
        endpoint=body.endpoint,
        input_file_id=source.id,
        completion_window=body.completion_window,
        window_seconds=window,
        owner=owner,
        model=model,
        metadata=metadata,
        priority=priority,
        webhook_url=hook_url,
        webhook_events=hook_events,
        output_expires_after=(
            body.output_expires_after.seconds if body.output_expires_after else None
        ),
    )
