"""One annotated request as a frozen example: what a collection keeps of it. The prompt
(as chat messages and as text), the model's answer, the answer to learn from (a ``fixed``
annotation's correction replaces the model's), the verdict, and the answer's fields when
it is a JSON object. Built from any endpoint's request and response bodies."""

from __future__ import annotations

import json
from typing import Any

from batch_server.curation.requests import RequestPair
from batch_server.curation.texts import answer_text, content_text
from batch_server.db.tables import AnnotationRow

# Roles kept from a request's messages (``developer`` is OpenAI's newer name for system);
# tool messages and assistant tool calls are left out: a fine-tuning line needs them in
# pairs, and a prompt block has no place for them.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def prompt_messages(endpoint: str, body: dict[str, Any]) -> list[dict[str, str]]:
    """The request's prompt as ``[{role, content}]`` (system and user turns, and earlier
    assistant turns with text); a templated line's record, as JSON, for its user turn."""
    if "template" in body and "messages" not in body:
        return [{"role": "user", "content": json.dumps(body.get("input"), ensure_ascii=False)}]
    if endpoint == "/v1/chat/completions":
        return _messages(body.get("messages"))
    if endpoint == "/v1/responses":
        found = []
        if isinstance(body.get("instructions"), str):
            found.append({"role": "system", "content": body["instructions"]})
        given = body.get("input")
        if isinstance(given, str):
            return [*found, {"role": "user", "content": given}]
        return [*found, *_messages(given)]
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else []


def _messages(given: Any) -> list[dict[str, str]]:
    found = []
    for m in given if isinstance(given, list) else []:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            continue
        content = content_text(m.get("content"))
        if content is not None and content.strip():
            found.append({"role": _ROLES[m["role"]], "content": content})
    return found


def parsed_fields(text: str | None) -> dict[str, Any] | None:
    """The answer's fields when it is a JSON object (optionally in a ```json fence)."""
    if not text:
        return None
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def clean(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (an input line may hold
    ``"\\ud800"``) replaced by U+FFFD, so each export writes valid UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def example(endpoint: str, pair: RequestPair, note: AnnotationRow) -> dict[str, Any]:
    """The frozen example of one annotated request (its text made valid Unicode)."""
    cleaned: dict[str, Any] = clean(_example(endpoint, pair, note))
    return cleaned


def _example(endpoint: str, pair: RequestPair, note: AnnotationRow) -> dict[str, Any]:
    messages = prompt_messages(endpoint, pair.request)
    answer = answer_text(pair.response, tool_calls=False)
    target = note.fixed_answer if note.label == "fixed" and note.fixed_answer else answer
    return {
        "batch_id": note.batch_id,
        "custom_id": pair.custom_id,
        "request_index": pair.index,
        "endpoint": endpoint,
        "model": pair.model or note.model,
        "messages": messages,
        "prompt": "\n\n".join(m["content"] for m in messages if m["role"] != "system"),
        "system": "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None,
        "answer": answer,
        "fixed_answer": note.fixed_answer if note.label == "fixed" else None,
        "target": target,
        "label": note.label,
        "rating": note.rating,
        "note": note.note,
        "rater": note.rater,
        "annotated_at": int(note.updated_at),
        # a plugin's fields of the model's answer (a fixed answer is parsed as JSON)
        "fields": parsed_fields(target) if target != answer or pair.fields is None else pair.fields,
        "template": pair.template,
        "input": pair.input,
        "ratings": pair.ratings,
        "plugin_error": pair.plugin_error,
    }
