"""``/openapi.json`` describes the real API: every operation declares what it answers,
errors have OpenAI's shape, and real responses of a running server validate against the
document's own schemas."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest

from batch_server.statuses import BatchStatus
from conftest import Cluster, chat_line, jsonl, submit, upload, wait_for

OPENAI_BATCH_STATUSES = {
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def doc(cluster: Cluster) -> dict[str, Any]:
    r = cluster.http.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in METHODS
    ]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) whose ``#/components``
    references resolve in the document."""
    root = {**schema, "components": doc["components"]}
    jsonschema.Draft202012Validator.check_schema(root)
    return jsonschema.Draft202012Validator(root)


def component(doc: dict[str, Any], name: str) -> jsonschema.Validator:
    return validator(doc, {"$ref": f"#/components/schemas/{name}"})


def check_response(doc: dict[str, Any], method: str, template: str, r: httpx.Response) -> None:
    """``r`` (a response to ``method template``) validates against the schema the document
    declares for its status (or ``default``)."""
    responses = doc["paths"][template][method]["responses"]
    declared = responses.get(str(r.status_code)) or responses["default"]
    schema = declared["content"]["application/json"]["schema"]
    errors = sorted(validator(doc, schema).iter_errors(r.json()), key=str)
    assert not errors, f"{method.upper()} {template} → {r.status_code}: {errors[0]}"


def test_every_operation_declares_a_typed_success(doc: dict[str, Any]) -> None:
    missing = []
    for method, path, op in operations(doc):
        ok = {s: v for s, v in op["responses"].items() if s.startswith("2")}
        schemas = [m.get("schema") for v in ok.values() for m in v.get("content", {}).values()]
        if not schemas or not all(schemas):
            missing.append(f"{method.upper()} {path}")
    assert missing == [], "operations without a 2xx response schema"


def test_errors_are_openai_errors_and_fastapi_422_is_gone(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    error = schemas["ErrorResponse"]
    detail = resolve(doc, error["properties"]["error"])
    assert set(detail["required"]) == {"message", "type", "param", "code"}
    for method, path, op in operations(doc):
        assert "default" in op["responses"], f"{method.upper()} {path}"
        for status, response in op["responses"].items():
            if status == "default" or status.startswith("4"):
                content = response["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/ErrorResponse"}, (
                    f"{method.upper()} {path} {status}"
                )


def test_batch_status_is_openai_s_eight_statuses(doc: dict[str, Any]) -> None:
    batch = doc["components"]["schemas"]["Batch"]
    status = resolve(doc, batch["properties"]["status"])
    assert set(status["enum"]) == OPENAI_BATCH_STATUSES == {s.value for s in BatchStatus}
    assert "status" in batch["required"]


def test_objects_declare_every_key_they_send(doc: dict[str, Any]) -> None:
    """OpenAI objects show their null fields: every property of the main objects is
    required (present, perhaps null), and no other key may appear."""
    for name in ("Batch", "File", "FileList", "BatchList", "Model", "QueueEntry"):
        schema = doc["components"]["schemas"][name]
        assert set(schema["required"]) == set(schema["properties"]), name
        assert schema.get("additionalProperties") is False, name


def test_non_json_responses_declare_their_media_type(doc: dict[str, Any]) -> None:
    content = doc["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["application/octet-stream"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [m.split(";")[0] for m in metrics] == ["text/plain"]


def test_real_objects_validate_against_the_document(cluster: Cluster, doc: dict[str, Any]) -> None:
    http = cluster.http
    file_id = upload(cluster.client, jsonl([chat_line("a", "Hi"), chat_line("b", "Yo")]))
    r = http.get(f"/v1/files/{file_id}")
    assert not list(component(doc, "File").iter_errors(r.json()))
    check_response(doc, "get", "/v1/files/{file_id}", r)

    created = http.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"case": "openapi"},
        },
    )
    check_response(doc, "post", "/v1/batches", created)
    batch_id = created.json()["id"]
    assert not list(component(doc, "Batch").iter_errors(created.json()))
    wait_for(cluster.client, batch_id)
    done = http.get(f"/v1/batches/{batch_id}")
    assert done.json()["status"] == "completed"
    assert not list(component(doc, "Batch").iter_errors(done.json()))

    # a batch that fails validation: its errors object too
    failed = submit(cluster.client, [chat_line("x", "Hi"), "not json"])
    wait_for(cluster.client, failed.id)
    r = http.get(f"/v1/batches/{failed.id}")
    assert r.json()["errors"]["data"]
    check_response(doc, "get", "/v1/batches/{batch_id}", r)

    get = {
        "/v1/files": "/v1/files",
        "/v1/batches": "/v1/batches",
        "/v1/batches/{batch_id}/logs": f"/v1/batches/{batch_id}/logs",
        "/v1/batches/{batch_id}/failed": f"/v1/batches/{failed.id}/failed",
        "/v1/batches/{batch_id}/requests": f"/v1/batches/{batch_id}/requests",
        "/v1/models": "/v1/models",
        "/v1/models/{model_id}": "/v1/models/smollm2",
        "/health": "/health",
        "/ready": "/ready",
        "/v1/queue": "/v1/queue",
        "/v1/stats/throughput": "/v1/stats/throughput",
        "/v1/jobs/history": "/v1/jobs/history?status=all",
        "/v1/admin/workers": "/v1/admin/workers",
        "/v1/admin/limits": "/v1/admin/limits",
        "/v1/admin/keys": "/v1/admin/keys",
        "/v1/webhooks/dead-letter": "/v1/webhooks/dead-letter",
    }
    for template, url in get.items():
        r = http.get(url)
        assert r.status_code == 200, (url, r.text)
        check_response(doc, "get", template, r)

    validation = http.post("/v1/batches/validate", files={"file": ("x.jsonl", b"nope\n")})
    check_response(doc, "post", "/v1/batches/validate", validation)
    assert validation.json()["errors"]


def test_real_errors_validate_against_the_document(cluster: Cluster, doc: dict[str, Any]) -> None:
    http = cluster.http
    cases = [
        ("get", "/v1/batches/{batch_id}", "/v1/batches/batch_missing", 404),
        ("get", "/v1/batches", "/v1/batches?limit=1000", 400),
        ("get", "/v1/batches", "/v1/batches?limit=many", 422),
        ("get", "/v1/files/{file_id}", "/v1/files/file-missing", 404),
        ("get", "/v1/models/{model_id}", "/v1/models/no-such-model", 404),
    ]
    for method, template, url, status in cases:
        r = http.request(method, url)
        assert r.status_code == status, (url, r.text)
        check_response(doc, method, template, r)


def test_path_parameters_match_the_routes(doc: dict[str, Any]) -> None:
    """Each ``{name}`` of a path is a declared path parameter."""
    for method, path, op in operations(doc):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), f"{method.upper()} {path}"
