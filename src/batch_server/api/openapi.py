"""Request bodies declared in the OpenAPI document for routes that read their body
themselves (multipart uploads streamed with a limit, JSON answered with OpenAI's error
codes rather than FastAPI's 422): the document at ``/openapi.json`` describes the real API,
so clients and the fuzzer see every field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` put in place (the OpenAPI document has
    no place for them)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that takes ``model`` as its JSON body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(model)}},
        }
    }


def multipart_body(
    fields: dict[str, dict[str, Any]],
    required: list[str],
    json_model: type[BaseModel] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` of a route that takes a multipart form (and, with ``json_model``,
    a JSON body instead)."""
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": fields, "required": required}
        }
    }
    if json_model is not None:
        content["application/json"] = {"schema": inline_schema(json_model)}
    return {"requestBody": {"required": True, "content": content}}


FILE_FIELD = {"type": "string", "format": "binary", "description": "a JSONL file"}
