"""The texts inside OpenAI request and response bodies, read one way for every page and
export: a message's content, a request's prompt, a response's answer (chat, completions,
responses). Review, collections, comparisons and Label Studio all read them here."""

from __future__ import annotations

import json
from typing import Any


def content_text(content: Any) -> str | None:
    """A message's content as text: a string, or the text parts of a list joined by
    newlines; None when it has no text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        texts = [p for p in parts if isinstance(p, str)]
        return "\n".join(texts) if texts else None
    return None


def tool_calls_text(calls: Any) -> str | None:
    """Tool calls as the JSON of their functions (name and arguments; call ids are left
    out, so two models' same call reads the same)."""
    if not isinstance(calls, list) or not calls:
        return None
    functions = [c.get("function") for c in calls if isinstance(c, dict)]
    return json.dumps(functions, ensure_ascii=False, sort_keys=True)


def answer_text(body: dict[str, Any] | None, tool_calls: bool = True) -> str | None:
    """The answer in a response body: the assistant's content (or, with ``tool_calls``,
    its tool calls) (chat), the text (completions), the output text (responses); None for
    a body without one (embeddings, moderations, an error)."""
    if not body:
        return None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            text = content_text(message.get("content"))
            if text or not tool_calls:
                return text
            return tool_calls_text(message.get("tool_calls"))
        text = first.get("text")
        return text if isinstance(text, str) else None
    output = body.get("output")
    if isinstance(output, list):
        texts = [
            part.get("text", "")
            for item in output
            if isinstance(item, dict) and isinstance(item.get("content"), list)
            for part in item["content"]
            if isinstance(part, dict) and part.get("type") == "output_text"
        ]
        return "".join(texts) if texts else None
    return None


def prompt_text(body: dict[str, Any]) -> str:
    """What was asked, as text: chat messages (or a response's input items) as
    ``role: content`` paragraphs, a completion's prompt, an input string; else the
    request's JSON."""
    if isinstance(body.get("instructions"), str):
        head = f"system: {body['instructions']}\n\n"
    else:
        head = ""
    for key in ("messages", "input", "prompt"):
        value = body.get(key)
        if isinstance(value, str):
            return head + value
        if isinstance(value, list) and value:
            return head + "\n\n".join(
                f"{v.get('role', '?')}: {content_text(v.get('content')) or ''}"
                if isinstance(v, dict)
                else str(v)
                for v in value
            )
    return json.dumps(body, ensure_ascii=False, indent=2)


def last_user_text(body: dict[str, Any]) -> str:
    """The request's last user message (or its prompt / input) on one line."""
    text: str | None = None
    messages = body.get("messages") or body.get("input")
    if isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role", "user") == "user"]
        if users:
            text = content_text(users[-1].get("content"))
    elif isinstance(messages, str):
        text = messages
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, list):
            text = " ".join(map(str, prompt))
    return " ".join((text or "").split())
