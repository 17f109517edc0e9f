"""OpenAI's published OpenAPI schemas (the subset in ``fixtures/openai_openapi_subset.json``,
cut by ``openapi_subset.py``) and a checker that validates this server's objects against
them. :data:`ALLOWED` names each deliberate difference and why; the checker records the
differences it saw, allowed or not."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "openai_openapi_subset.json"
SPEC = json.loads(FIXTURE.read_text())

NULLS = (
    "OpenAI's API sends this key as null until it has a value (the official SDKs type it "
    "Optional); the published schema types it without null"
)
# (schema, instance path as a regular expression over "/"-joined keys, error kind) -> why.
# Kind "Null" is a type error whose value is null. Items of a list are keyed by their own
# schema (``data/0/output_file_id`` of ListBatchesResponse is ``output_file_id`` of Batch).
ALLOWED: dict[tuple[str, str, str], str] = {
    **{
        ("Batch", field, "Null"): NULLS
        for field in (
            "errors",
            "output_file_id",
            "error_file_id",
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        )
    },
    ("Batch", "model", "Null"): (
        "a batch names a model only when created with `model` (this server's upload-and-"
        "create form) or once every line names the same one; OpenAI always fills it"
    ),
    ("OpenAIFile", "expires_at", "Null"): NULLS + " (a file without expires_after never expires)",
    ("OpenAIFile", "status_details", "Null"): NULLS + " (deprecated field, always null)",
    ("CreateChatCompletionResponse", "system_fingerprint", "Null"): (
        "no backend configuration fingerprint exists for a local model; OpenAI also sends null"
    ),
    ("CreateCompletionResponse", "system_fingerprint", "Null"): (
        "no backend configuration fingerprint exists for a local model; OpenAI also sends null"
    ),
    ("Response", "user", "Null"): NULLS + " (no `user` was given)",
    ("CreateEmbeddingResponse", r"data/\d+/embedding", "Type"): (
        "with encoding_format=base64 the embedding is a base64 string of little-endian float32, "
        "as OpenAI sends it; the schema only describes the float list"
    ),
}
LIST_ITEMS = {"ListBatchesResponse": "Batch", "ListFilesResponse": "OpenAIFile"}


def validator(name: str) -> Any:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    )


VALIDATORS: dict[str, Any] = {}


class Checker:
    """Validates objects and records each difference, allowed or not."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, str]] = set()
        self.unexpected: list[str] = []
        self.checked: dict[str, int] = {}

    def __call__(self, name: str, instance: Any) -> None:
        if name not in VALIDATORS:
            VALIDATORS[name] = validator(name)
        self.checked[name] = self.checked.get(name, 0) + 1
        for error in VALIDATORS[name].iter_errors(instance):
            path = "/".join(str(p) for p in error.instance_path)
            kind = type(error.kind).__name__
            if kind == "Type" and error.instance is None:
                kind = "Null"
            schema = name
            item = re.fullmatch(r"data/\d+/(.*)", path)
            if name in LIST_ITEMS and item:
                schema, path = LIST_ITEMS[name], item.group(1)
            allowed = [
                key
                for key in ALLOWED
                if key[0] == schema and key[2] == kind and re.fullmatch(key[1], path)
            ]
            if allowed:
                self.seen.update(allowed)
            else:
                self.unexpected.append(f"{name} at /{path} ({kind}): {error.message[:200]}")
