"""``/v1/responses`` in a batch: a Responses request becomes a chat request for the engine,
and the chat completion it produces becomes a genuine ``response`` object.

Every engine uses this module the same way (:func:`chat_request` before, :func:`result_body`
after), so they honour and refuse the same fields; docs/api.md lists them. A field this
server cannot honour (a built-in tool, ``previous_response_id``, ``background``, an
image) fails that request alone with OpenAI's error shape; nothing is silently dropped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from batch_server import ids
from batch_server.engines.base import EngineRequest, RequestRejected
from batch_server.engines.protocol import (
    CHAT,
    COMPLETIONS,
    RESPONSES,
    Choice,
    chat_completion,
    text_completion,
)

if TYPE_CHECKING:
    from batch_server.engines.tools import ToolCalling

# Honoured (translated into the chat request).
_HONOURED = {
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "text",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tool_calls",
}
# Accepted and echoed, without effect on generation (the model is routed by the batch).
_ACCEPTED = {
    "model",
    "metadata",
    "store",
    "user",
    "safety_identifier",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
}
# Accepted only with the value that means "off" (their feature is not available here).
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "stream": (None, False),
    "background": (None, False),
    "include": (None, []),
    "top_logprobs": (None, 0),
    "truncation": (None, "disabled"),
    "reasoning": (None, {}, {"effort": None}, {"effort": None, "summary": None}),
}
_WHY_OFF = {
    "stream": "a batch writes each response to the output file",
    "background": "a batch request already runs in the background",
    "include": "no extra output data (logprobs, sources) is produced",
    "top_logprobs": "log-probabilities are not available in /v1/responses here",
    "truncation": "the input is never truncated (a too-long input fails)",
    "reasoning": "the model is not a reasoning model",
}
_TEXT_PARTS = {"input_text", "output_text", "text"}


def _refuse(message: str, param: str, code: str = "unsupported_parameter") -> RequestRejected:
    return RequestRejected(message, param=param, code=code)


def chat_request(req: EngineRequest) -> EngineRequest:
    """The chat request that answers a ``/v1/responses`` request (its index and id kept);
    a request to any other endpoint as it is."""
    if req.endpoint != RESPONSES:
        return req
    return EngineRequest(req.index, req.custom_id, CHAT, chat_body(req.body))


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions body of a Responses body; raises :class:`RequestRejected`."""
    for key in body:
        if key in _HONOURED or key in _ACCEPTED:
            continue
        if key in _OFF_VALUES:
            if body[key] not in _OFF_VALUES[key]:
                raise _refuse(f"'{key}' is not supported: {_WHY_OFF[key]}", key)
            continue
        if key in ("previous_response_id", "conversation", "prompt", "context_management"):
            if body[key] is None:
                continue
            raise _refuse(
                f"'{key}' is not supported: responses are not stored here; send the whole "
                "conversation in 'input'",
                key,
            )
        raise _refuse(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
    messages = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _refuse("'instructions' must be a string", "instructions", "invalid_value")
        messages.append({"role": "system", "content": instructions})
    messages += _input_messages(body.get("input"))
    chat: dict[str, Any] = {"messages": messages}
    for src, dst in (
        # max_tokens: the spelling every OpenAI-compatible upstream knows
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
    ):
        if body.get(src) is not None:
            chat[dst] = body[src]
    max_calls = body.get("max_tool_calls")
    if max_calls is not None:
        if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
            raise _refuse(
                "'max_tool_calls' must be a positive integer", "max_tool_calls", "invalid_value"
            )
        if max_calls == 1:
            chat["parallel_tool_calls"] = False  # the same thing, in chat's terms
        else:
            chat["max_tool_calls"] = max_calls  # an extension of this server's chat
    fmt = _text_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        chat["tool_choice"] = choice
    return chat


def _input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _refuse(
            "'input' must be a string or a non-empty list of input items", "input", "invalid_value"
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _refuse(f"{param} must be an object", param, "invalid_value")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise _refuse(
                    f"{param}.role must be user, system, developer or assistant",
                    f"{param}.role",
                    "invalid_value",
                )
            out.append({"role": role, "content": _text(item.get("content"), f"{param}.content")})
        elif kind == "function_call":
            call = _function_call(item, param)
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _refuse(
                    f"{param}.call_id must be a string", f"{param}.call_id", "invalid_value"
                )
            output = _text(item.get("output"), f"{param}.output")
            out.append({"role": "tool", "tool_call_id": call_id, "content": output})
        else:
            raise _refuse(
                f"{param}: input items of type {kind!r} are not supported (messages, "
                "function_call and function_call_output are)",
                f"{param}.type",
                "unsupported_value",
            )
    return out


def _text(content: Any, param: str) -> str:
    """A message's text: a string, or text parts (``input_text``, ``output_text``)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(f"{param} must be a string or a list of parts", param, "invalid_value")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise _refuse(
                f"{param}[{j}]: only text parts (input_text, output_text) are supported by "
                f"this model, not {kind!r}",
                f"{param}[{j}]",
                "unsupported_content",
            )
        parts.append(part["text"])
    return "".join(parts)


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    for key in ("call_id", "name", "arguments"):
        if not isinstance(item.get(key), str):
            raise _refuse(f"{param}.{key} must be a string", f"{param}.{key}", "invalid_value")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _text_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format``."""
    if text is None:
        return None
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
        raise _refuse("'text' may hold 'format' (and 'verbosity')", "text", "invalid_value")
    if text.get("verbosity") not in (None, "medium"):
        raise _refuse(
            "'text.verbosity' is not supported by this model", "text.verbosity", "unsupported_value"
        )
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict) or not isinstance(fmt.get("name"), str):
            raise _refuse(
                "'text.format' of type json_schema needs 'name' and a 'schema' object",
                "text.format",
                "invalid_value",
            )
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    raise _refuse(
        "'text.format.type' must be text, json_object or json_schema",
        "text.format",
        "invalid_value",
    )


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _refuse("'tools' must be a list", "tools", "invalid_value")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise _refuse(
                f"tools[{i}]: tools of type {kind!r} are not supported here; only 'function' "
                "tools are (built-in tools such as web_search or file_search need OpenAI's "
                "services)",
                f"tools[{i}].type",
                "unsupported_value",
            )
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise _refuse(
        '\'tool_choice\' must be none, auto, required or {"type": "function", "name": …}',
        "tool_choice",
        "unsupported_value",
    )


# -- the response object ----------------------------------------------------------------


def result_body(
    model: str,
    req: EngineRequest,
    calling: ToolCalling | None,
    choices: list[Choice],
    use: dict[str, Any],
) -> dict[str, Any]:
    """What an engine answers for ``req`` (chat, completions or responses) once its
    choices are generated: tool calls resolved, and a ``response`` for /v1/responses."""
    if req.endpoint == COMPLETIONS:
        return text_completion(model, choices, use)
    if calling is not None:
        choices = [calling.resolve(c) for c in choices]
    chat = chat_completion(model, choices, use)
    return response_object(req.body, chat) if req.endpoint == RESPONSES else chat


def response_object(body: dict[str, Any], chat: dict[str, Any]) -> dict[str, Any]:
    """The ``response`` object for Responses request ``body``, from the engine's
    ``chat.completion`` of its :func:`chat_body`."""
    choice = chat["choices"][0]
    message = choice["message"]
    calls = message.get("tool_calls") or []
    cut = choice["finish_reason"] == "length"
    output: list[dict[str, Any]] = []
    if message.get("content") or not calls:
        output.append(
            {
                "id": ids.response_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "incomplete" if cut else "completed",
                "content": [
                    {
                        "type": "output_text",
                        "text": message.get("content") or "",
                        "annotations": [],
                        "logprobs": [],
                    }
                ],
            }
        )
    for call in calls:
        output.append(
            {
                "id": ids.response_id("fc"),
                "type": "function_call",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
        )
    use = chat["usage"]
    cached = (use.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    text = body.get("text") or {}
    return {
        "id": ids.response_id("resp"),
        "object": "response",
        "created_at": chat["created"],
        "status": "incomplete" if cut else "completed",
        "completed_at": None if cut else int(time.time()),
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": chat["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": False,  # nothing is kept to retrieve later: see docs/api.md
        "temperature": body.get("temperature", 1.0),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in body.get("tools") or []],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": use["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": use["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": use["prompt_tokens"] + use["completion_tokens"],
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as OpenAI echoes it (``strict`` defaults to true in this API; the
    arguments always follow the schema here, as generation is constrained by it)."""
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True) is not False,
    }
