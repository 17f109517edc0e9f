"""What the OpenAPI document at ``/openapi.json`` cannot learn from the routes'
signatures, so that it describes the real API (clients and the fuzzer see every field):

- request bodies of routes that read their body themselves (multipart uploads streamed
  with a limit, JSON answered with OpenAI's error codes rather than FastAPI's 422);
- the error responses (:func:`errors`), all of OpenAI's shape, instead of FastAPI's own
  422 body; and the responses that are not JSON (:func:`binary_response`);
- the webhook requests the server sends (:func:`document_webhooks`).
"""

from __future__ import annotations

from typing import Any, get_args

from fastapi import FastAPI, Response
from pydantic import BaseModel

from batch_server.openai_types import ErrorResponse, WebhookEvent, WebhookEventType


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

    resolved: dict[str, Any] = resolve(schema)
    return resolved


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


BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
FILE_FIELD: dict[str, Any] = BINARY | {"description": "a JSONL file"}


# -- responses ------------------------------------------------------------------------

ERROR_STATUSES: dict[int, str] = {
    400: "A bad parameter or a number out of its range; a URL or string that is not valid "
    "Unicode; on a server without keys, a Host it does not answer to",
    401: "Missing or wrong API key",
    403: "Not an admin key, or a change from another site with the dashboard's cookie",
    404: "No such object (or another key's)",
    409: "The object's state does not allow it",
    413: "The upload or body is larger than its limit",
    415: "The body's content type is not one this route reads",
    422: "A parameter of the wrong type",
    429: "The key's creation rate or queued-requests limit",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route (or router) that can answer ``statuses`` with an
    error, and any other status too (``default``): every error has one shape,
    :class:`~batch_server.openai_types.ErrorResponse`. Declaring errors also keeps FastAPI
    from describing its own 422 body, which this server never sends."""
    declared: dict[int | str, dict[str, Any]] = {
        "default": {"model": ErrorResponse, "description": "An error"}
    }
    for status in statuses:
        declared[status] = {"model": ErrorResponse, "description": ERROR_STATUSES[status]}
    return declared


def binary_response(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 response of a route that sends bytes (or text) rather than JSON."""
    schema = {"type": "string"} if media_type.startswith("text/") else BINARY
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


# -- webhooks ---------------------------------------------------------------------------


def document_webhooks(app: FastAPI) -> None:
    """Describe the webhook requests this server sends (one per event type, each with a
    :class:`~batch_server.openai_types.WebhookEvent` body) in the document's ``webhooks``
    section (OpenAPI 3.1). Documentation only: no route is added."""
    for event in get_args(WebhookEventType):

        def receive(body: WebhookEvent) -> None:
            """Signed per Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
            ``webhook-signature``). Any answer but a 2xx is retried with backoff, up to
            ``webhook_max_attempts``, then dead-lettered."""

        app.webhooks.post(
            event,
            operation_id=f"webhook_{event.replace('.', '_')}",
            summary=f"{event}: the batch as it is now",
            response_class=Response,
            responses={
                200: {"description": "Received (any 2xx)"},
                "default": {"description": "Not received: retried, then dead-lettered"},
            },
        )(receive)
