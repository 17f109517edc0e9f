"""Every object the server returns for Files and Batches, and every body of a batch output
or error line, validated against OpenAI's published OpenAPI schemas.

The schemas are ``tests/fixtures/openai_openapi_subset.json``: cut unchanged out of
openai/openai-openapi (commit and date in its ``x-source``) by ``tests/openapi_subset.py``.
Where this server deliberately differs, :data:`ALLOWED` names the difference and why; a
difference not listed fails, and so does a listed one that no longer occurs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from conftest import Cluster, chat_line, jsonl, read_lines, wait_for
from openai_schema import ALLOWED, SPEC, Checker
from openapi_subset import ROOTS, refs

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
MODERATION = "toxic-comment-classifier"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("openai-schemas"), {"poll_seconds": 0.2})
    yield c
    c.close()


def create_file(client: openai.OpenAI, lines: list[dict[str, Any]]) -> dict[str, Any]:
    raw = client.files.with_raw_response.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return dict(raw.http_response.json())


def create_batch(client: openai.OpenAI, file_id: str, endpoint: str) -> dict[str, Any]:
    raw = client.batches.with_raw_response.create(
        input_file_id=file_id,
        endpoint=endpoint,
        completion_window="24h",  # type: ignore[arg-type]
    )
    return dict(raw.http_response.json())


def line(custom_id: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


FLOWS: dict[str, list[dict[str, Any]]] = {
    "/v1/chat/completions": [
        chat_line("chat", "Say hi."),
        chat_line("chat-n2", "Name a colour.", n=2, logprobs=True, top_logprobs=2),
        chat_line("chat-bad", "Hi", frobnicate=1),
    ],
    "/v1/completions": [
        line("text", "/v1/completions", model=CHAT, prompt="Once upon", max_tokens=6),
        line("text-bad", "/v1/completions", model=CHAT, prompt="Hi", max_tokens=-1),
    ],
    "/v1/responses": [
        line("resp", "/v1/responses", model=CHAT, input="Say hello.", max_output_tokens=12),
        line("resp-cut", "/v1/responses", model=CHAT, input="Tell a story.", max_output_tokens=3),
        line("resp-bad", "/v1/responses", model=CHAT, input="Hi", background=True),
    ],
    "/v1/embeddings": [
        line("emb", "/v1/embeddings", model=EMBED, input=["The sea.", "A cat."]),
        line("emb-b64", "/v1/embeddings", model=EMBED, input="Hi", encoding_format="base64"),
        line("emb-bad", "/v1/embeddings", model=EMBED, input=""),
    ],
    "/v1/moderations": [
        line("mod", "/v1/moderations", model=MODERATION, input=["Hello.", "You idiot."]),
        line("mod-bad", "/v1/moderations", model=MODERATION, input=[]),
    ],
}
BODY_SCHEMA = {
    "/v1/chat/completions": "CreateChatCompletionResponse",
    "/v1/completions": "CreateCompletionResponse",
    "/v1/responses": "Response",
    "/v1/embeddings": "CreateEmbeddingResponse",
    "/v1/moderations": "CreateModerationResponse",
}


def test_objects_match_openai_schemas(server: Cluster) -> None:
    client, http, check = server.client, server.http, Checker()
    batches = {}
    for endpoint, lines in FLOWS.items():
        file = create_file(client, lines)
        check("OpenAIFile", file)
        batch = create_batch(client, file["id"], endpoint)
        check("Batch", batch)
        batches[endpoint] = batch["id"]

    # a batch refused by validation, with its errors list
    bad = create_file(client, [chat_line("x", "hi", model="no-such-model")])
    failed = wait_for(client, create_batch(client, bad["id"], "/v1/chat/completions")["id"])
    assert failed.status == "failed"
    check("Batch", http.get(f"/v1/batches/{failed.id}").json())

    lines_checked = 0
    for endpoint, batch_id in batches.items():
        batch = wait_for(client, batch_id, timeout=400)
        assert batch.status == "completed", batch
        raw = http.get(f"/v1/batches/{batch_id}").json()
        check("Batch", raw)
        assert raw["request_counts"]["failed"] == 1, raw
        for file_id in (batch.output_file_id, batch.error_file_id):
            check("OpenAIFile", http.get(f"/v1/files/{file_id}").json())
        for out in read_lines(client, batch.output_file_id):
            assert out["response"]["status_code"] == 200, out
            check(BODY_SCHEMA[endpoint], out["response"]["body"])
            lines_checked += 1
        for out in read_lines(client, batch.error_file_id):
            assert out["response"]["status_code"] == 400, out
            check("ErrorResponse", out["response"]["body"])
            lines_checked += 1
    assert lines_checked == sum(len(lines) for lines in FLOWS.values())

    check("ListFilesResponse", http.get("/v1/files", params={"limit": 3}).json())
    check("ListBatchesResponse", http.get("/v1/batches", params={"limit": 3}).json())
    cancelled = create_batch(
        client, create_file(client, [chat_line("c", "hi")])["id"], "/v1/chat/completions"
    )
    check("Batch", http.post(f"/v1/batches/{cancelled['id']}/cancel").json())
    check("DeleteFileResponse", http.delete(f"/v1/files/{bad['id']}").json())
    for response in (
        http.get("/v1/files/file-nope"),
        http.get("/v1/batches/batch_nope"),
        http.post("/v1/batches", json={"input_file_id": bad["id"], "endpoint": "/v1/x"}),
    ):
        assert response.status_code >= 400
        check("ErrorResponse", response.json())

    assert not check.unexpected, "\n".join(check.unexpected)
    stale = set(ALLOWED) - check.seen
    assert not stale, f"allowed differences that no longer occur (remove them): {stale}"
    assert set(check.checked) >= set(BODY_SCHEMA.values()) | {"Batch", "OpenAIFile"}


def test_fixture_is_a_closed_subset_with_its_source() -> None:
    source = SPEC["x-source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["date"]
    schemas = SPEC["components"]["schemas"]
    assert set(ROOTS) <= set(schemas) and source["roots"] == ROOTS
    for name, schema in schemas.items():  # every $ref resolves inside the fixture
        assert refs(schema) <= set(schemas), name


def test_checker_reports_differences() -> None:
    check = Checker()
    check("Batch", {"id": "batch_1", "object": "batches", "output_file_id": None})
    assert any("/object (Enum)" in x for x in check.unexpected), check.unexpected
    assert any("(Required)" in x and "endpoint" in x for x in check.unexpected)
    assert not any("output_file_id" in x for x in check.unexpected)  # allowed: null
    assert ("Batch", "output_file_id", "Null") in check.seen
    check.unexpected.clear()
    check("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None}})
    assert check.unexpected == ['ErrorResponse at /error (Required): "code" is a required property']
