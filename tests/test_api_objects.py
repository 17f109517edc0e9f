"""The API's typed objects, without a server: the shapes code outside the API depends on
(webhook payloads, the dashboard) and the contract rules of the models."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from batch_server import webhooks
from batch_server.api.openapi import document_webhooks
from batch_server.app import create_app
from batch_server.config import Settings
from batch_server.db.tables import BatchRow
from batch_server.openai_types import (
    FILE_PURPOSES,
    SUPPORTED_ENDPOINTS,
    Batch,
    BatchList,
    WebhookEvent,
    WebhookEventType,
    batch_object,
)
from batch_server.statuses import BatchStatus

# OpenAI's Batch object, in its order, then this server's extensions.
BATCH_KEYS = [
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "usage",
    "metadata",
    "priority",
    "cost",
    "provenance",
]


def batch_row(**values: object) -> BatchRow:
    row = BatchRow(
        id="batch_1",
        status="failed",
        endpoint="/v1/chat/completions",
        input_file_id="file-1",
        completion_window="24h",
        model=None,
        metadata_=None,
        priority=0,
        errors=[{"code": "invalid_json_line", "message": "bad", "param": None, "line": 2}],
        output_file_id=None,
        error_file_id=None,
        created_at=1,
        expires_at=86401,
        in_progress_at=None,
        finalizing_at=None,
        completed_at=None,
        failed_at=2,
        expired_at=None,
        cancelling_at=None,
        cancelled_at=None,
        total=0,
        completed=0,
        failed=0,
        input_tokens=3,
        cached_tokens=0,
        output_tokens=4,
    )
    for key, value in values.items():
        setattr(row, key, value)
    return row


def test_batch_object_keeps_every_key_and_its_nulls() -> None:
    obj = batch_object(batch_row())
    assert list(obj) == BATCH_KEYS
    assert obj["status"] == "failed" and type(obj["status"]) is str
    assert obj["errors"] == {
        "object": "list",
        "data": [{"code": "invalid_json_line", "message": "bad", "param": None, "line": 2}],
    }
    assert obj["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }
    assert obj["completed_at"] is None and obj["metadata"] is None
    assert batch_object(batch_row(errors=None))["errors"] is None


def test_webhook_payloads_are_webhook_events() -> None:
    assert get_args(WebhookEventType) == webhooks.EVENTS
    payload = {"type": "batch.failed", "timestamp": "2026-01-01T00:00:00Z"}
    event = WebhookEvent.model_validate(payload | {"data": batch_object(batch_row())})
    assert event.data.status is BatchStatus.FAILED


def test_objects_refuse_unknown_keys_and_statuses() -> None:
    with pytest.raises(ValidationError):
        Batch.model_validate(batch_object(batch_row()) | {"surprise": 1})
    with pytest.raises(ValidationError):
        Batch.from_row(batch_row(status="paused"))


def test_list_objects_name_their_ends() -> None:
    first, second = Batch.from_row(batch_row(id="b1")), Batch.from_row(batch_row(id="b2"))
    page = BatchList.of([first, second], has_more=True).model_dump(mode="json")
    assert list(page) == ["object", "data", "first_id", "last_id", "has_more"]
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("b1", "b2", True)
    empty = BatchList.of([], has_more=False).model_dump(mode="json")
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_constants_other_modules_import() -> None:
    assert SUPPORTED_ENDPOINTS == (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/moderations",
    )
    assert "batch" in FILE_PURPOSES and "batch_output" in FILE_PURPOSES


def test_webhook_requests_can_be_documented(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, default_model=None)
    app = create_app(settings, run_worker=False)
    document_webhooks(app)
    doc = app.openapi()
    assert set(doc["webhooks"]) == set(webhooks.EVENTS)
    body = doc["webhooks"]["batch.completed"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/WebhookEvent"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_input_json_is_sent_as_it_is_even_what_json_cannot_spell(tmp_path: Path) -> None:
    """A request/response view carries input lines as Python's JSON reader parsed them: a
    key holding a lone surrogate (which pydantic's JSON mode cannot write) is sent as its
    JSON escape; NaN and 1e999 (infinity) as null, as pydantic's JSON mode writes them."""
    settings = Settings(data_dir=tmp_path, default_model=None)
    lines = (
        '{"custom_id": "a\\ud800", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "x", "k\\ud800": {"\\udfff": 1}}}\n'
        '{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "x", "temperature": 1e999, "top_p": NaN, "n": [-Infinity]}}\n'
    )
    with TestClient(create_app(settings, run_worker=False), base_url="http://127.0.0.1") as c:
        files = {"file": ("s.jsonl", lines.encode())}
        file_id = c.post("/v1/files", files=files, data={"purpose": "batch"}).json()["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        batch_id = c.post("/v1/batches", json=body).json()["id"]
        r = c.get(f"/v1/batches/{batch_id}/requests")
        assert r.status_code == 200
        assert b'"k\\ud800":{"\\udfff":1}' in r.content
        first, second = r.json()["data"]
        assert first["request"] == {"model": "x", "k\ud800": {"\udfff": 1}}
        assert second["request"] == {"model": "x", "temperature": None, "top_p": None, "n": [None]}
        assert c.get(f"/v1/batches/{batch_id}/failed").status_code == 200
