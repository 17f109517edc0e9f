"""OpenAI's fine-tuning chat format, checked line by line as OpenAI's own format checks do
(the "data preparation and analysis for chat model fine-tuning" checks): each line a JSON
object with a non-empty ``messages`` list; each message a dict with a known ``role``
(system, user, assistant, tool), a string ``content`` and no unknown keys; at least one
assistant message, whose content is not empty. The exports write only lines that pass,
and the tests (and a later fine-tuning job) check files with the same function."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

ROLES = frozenset({"system", "user", "assistant", "tool"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_call_id"})
LINE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


def example_errors(obj: Any) -> list[str]:
    """What is wrong with one example (a parsed line); empty when it is valid."""
    if not isinstance(obj, dict):
        return ["the line is not a JSON object"]
    errors = [f"unknown key '{k}'" for k in obj if k not in LINE_KEYS]
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*errors, "'messages' must be a non-empty list"]
    for i, message in enumerate(messages):
        errors += [f"messages[{i}]: {e}" for e in _message_errors(message)]
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        errors.append("no assistant message")
    return errors


def _message_errors(message: Any) -> list[str]:
    if not isinstance(message, dict):
        return ["not an object"]
    errors = [f"unknown key '{k}'" for k in message if k not in MESSAGE_KEYS]
    role = message.get("role")
    if role not in ROLES:
        errors.append(f"role must be one of {', '.join(sorted(ROLES))}, not {role!r}")
    content = message.get("content")
    if not isinstance(content, str):
        errors.append("content must be a string")
    elif role == "assistant" and not content.strip():
        errors.append("an assistant message's content must not be empty")
    if "weight" in message and message["weight"] not in (0, 1):
        errors.append("weight must be 0 or 1")
    return errors


def line_errors(line: str | bytes) -> list[str]:
    """What is wrong with one line of a JSONL file."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return ["the line is not valid JSON"]
    return example_errors(obj)


def file_errors(lines: Iterable[str | bytes]) -> list[tuple[int, str]]:
    """``(line number, message)`` for every problem of a JSONL file (blank lines are an
    error too: OpenAI's upload refuses them)."""
    found: list[tuple[int, str]] = []
    count = 0
    for number, line in enumerate(lines, start=1):
        count = number
        found += [(number, e) for e in line_errors(line)]
    if count == 0:
        found.append((0, "the file has no examples"))
    return found
