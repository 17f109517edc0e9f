"""Tool calls (``tools`` / ``tool_choice``) for engines that generate text: llama.cpp and vLLM.

The functions are described to the model (through its chat template when the template
renders ``tools``, otherwise in a system message), and generation is constrained by a JSON
schema (llama.cpp's grammar, vLLM's structured outputs) to one JSON object:

- ``{"tool_calls": [{"name": …, "arguments": {…}}]}``: each ``name`` one of the
  functions and its ``arguments`` that function's ``parameters`` schema
  (``tool_choice: "required"``, or a named function: then just that one); one call per
  answer, or up to ``max_tool_calls`` (a /v1/responses field, also read in a chat body);
- with ``tool_choice: "auto"`` that, or ``{"content": "…"}``: the model chooses, at its
  first token, whether it calls a function or answers (a ``response_format`` schema then
  shapes the answer);
- with ``"none"`` the tools are left out of the prompt and the model answers in text.

:meth:`ToolCalling.resolve` turns the generated object into OpenAI's ``tool_calls``
(``call_…`` ids, ``arguments`` as a JSON string, ``finish_reason: "tool_calls"``) or the
answer's text. Earlier calls and their results in the history are rendered in the same
JSON, so the model sees the shape it is asked to produce.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from batch_server import ids
from batch_server.engines.base import RequestRejected
from batch_server.engines.protocol import Choice, Sampling, chat_messages, json_schema

MAX_TOOLS = 128  # OpenAI's limit on ``tools``
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Function:
    name: str
    description: str | None
    parameters: dict[str, Any]

    def definition(self) -> dict[str, Any]:
        """The function as a chat template's ``tools`` entry."""
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}


@dataclass
class ToolCalling:
    """The functions a request lets the model call, and how (``auto`` or ``required``)."""

    functions: list[Function]
    required: bool
    max_calls: int  # in one answer
    answer: dict[str, Any] | None = None  # the schema of an ``auto`` answer (response_format)

    def schema(self) -> dict[str, Any]:
        """The JSON schema every generated output follows."""
        calls: dict[str, Any] = {
            "type": "array",
            "items": {"anyOf": [_call_schema(f) for f in self.functions]},
            "minItems": 1,
            "maxItems": self.max_calls,
        }
        with_calls = _object({"tool_calls": calls})
        if self.required:
            return with_calls
        return {"anyOf": [with_calls, _object({"content": self.answer or {"type": "string"}})]}

    def instructions(self) -> str:
        """A system message describing the functions and the answer format."""
        listing = json.dumps([f.definition()["function"] for f in self.functions])
        call = '{"tool_calls": [{"name": "<function name>", "arguments": {<its arguments>}}]}'
        if self.required:
            return f"You can call these functions (JSON): {listing}\nAnswer only with JSON: {call}"
        # worded so that SmolLM2-135M answers in words when no function fits (tried)
        return (
            f"You can call these functions (JSON): {listing}\n"
            "Answer only with JSON. If the user asks for something one of these functions "
            f"does, call it: {call}\n"
            'Otherwise answer in words: {"content": "<your answer>"}'
        )

    def resolve(self, choice: Choice) -> Choice:
        """The generated JSON of ``choice`` as tool calls or an answer. An output cut
        short (``length``) that is not complete JSON stays as generated."""
        try:
            obj = json.loads(choice.text, strict=False)
        except ValueError:
            return Choice(_partial_answer(choice.text), choice.finish_reason, choice.logprobs)
        if not isinstance(obj, dict):  # the grammar allows nothing else
            return choice
        if "content" in obj:
            content = obj["content"]
            text = content if isinstance(content, str) else json.dumps(content)
            return Choice(text, choice.finish_reason, choice.logprobs)
        calls = [
            {
                "id": ids.tool_call_id(),
                "type": "function",
                "function": {
                    "name": str(c.get("name")),
                    "arguments": json.dumps(c.get("arguments", {}), ensure_ascii=False),
                },
            }
            for c in obj.get("tool_calls") or []
            if isinstance(c, dict)
        ]
        if not calls:
            return choice
        return Choice("", "tool_calls", choice.logprobs, tool_calls=calls)


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _call_schema(f: Function) -> dict[str, Any]:
    return _object({"name": {"const": f.name}, "arguments": f.parameters})


_ANSWER_START = re.compile(r'^\s*\{\s*"content"\s*:\s*"')


def _partial_answer(text: str) -> str:
    """The text of an ``{"content": "…`` answer cut off by ``max_tokens`` (the JSON string
    decoded as far as it goes); any other cut-off output as it is."""
    start = _ANSWER_START.match(text)
    if start is None:
        return text
    body = text[start.end() :]
    for cut in range(len(body), max(len(body) - 7, -1), -1):  # drop a partial escape
        try:
            return str(json.loads(f'"{body[:cut]}"', strict=False))
        except ValueError:
            continue
    return body


# -- reading a request ------------------------------------------------------------------


def parse_tools(body: dict[str, Any], response_format: dict[str, Any] | None) -> ToolCalling | None:
    """The tool calling a chat body asks for (``None``: no tools, or ``tool_choice: none``)."""
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise RequestRejected(
                f"'{legacy}' is deprecated and not supported; use 'tools' and 'tool_choice'",
                param=legacy,
                code="unsupported_parameter",
            )
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise RequestRejected(
                "'tool_choice' is only allowed when 'tools' are specified",
                param="tool_choice",
                code="invalid_value",
            )
        return None
    functions = _functions(tools)
    required = True
    if choice is None or choice == "auto":
        required = False
    elif choice == "none":
        return None
    elif choice == "required":
        pass
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        named = [f for f in functions if f.name == name]
        if not named:
            raise RequestRejected(
                f"'tool_choice' names function {name!r}, which is not in 'tools'",
                param="tool_choice",
                code="invalid_value",
            )
        return ToolCalling(named, True, 1)
    else:
        raise RequestRejected(
            "'tool_choice' must be 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": …}}',
            param="tool_choice",
            code="invalid_value",
        )
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise RequestRejected(
            "'parallel_tool_calls' must be a boolean",
            param="parallel_tool_calls",
            code="invalid_value",
        )
    # One call per answer unless more are asked for (``max_tool_calls``, of /v1/responses):
    # a model may always make fewer calls than allowed, and small models asked for a list
    # repeat calls until max_tokens cuts the JSON off.
    max_calls = body.get("max_tool_calls")
    if max_calls is not None and (
        isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1
    ):
        raise RequestRejected(
            "'max_tool_calls' must be a positive integer",
            param="max_tool_calls",
            code="invalid_value",
        )
    limit = max_calls if isinstance(max_calls, int) and parallel is not False else 1
    answer = None
    if response_format is not None and not required:
        answer = json_schema(response_format) or {"type": "object"}
    return ToolCalling(functions, required, limit, answer)


def _functions(tools: Any) -> list[Function]:
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise RequestRejected(
            f"'tools' must be a list of at most {MAX_TOOLS} tools",
            param="tools",
            code="invalid_value",
        )
    out: list[Function] = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise RequestRejected(
                f"tools[{i}]: only tools of type 'function' (with a 'function' object) are "
                "supported",
                param=f"tools[{i}]",
                code="invalid_value",
            )
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RequestRejected(
                f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-'",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        if any(f.name == name for f in out):
            raise RequestRejected(
                f"tools[{i}]: function {name!r} is defined twice",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise RequestRejected(
                f"tools[{i}].function.parameters must be a JSON schema object",
                param=f"tools[{i}].function.parameters",
                code="invalid_value",
            )
        description = fn.get("description")
        out.append(Function(name, description if isinstance(description, str) else None, params))
    return out


# -- the prompt -------------------------------------------------------------------------


def prepare_chat(
    body: dict[str, Any], sampling: Sampling, template_tools: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages of a chat body ready for a chat template, and the ``tools`` to give
    the template (when it renders them: ``template_tools``). Tool calling, if asked for,
    is set on ``sampling`` (its schema becomes the response format)."""
    calling = parse_tools(body, sampling.response_format)
    messages = _history(chat_messages(body), template_tools)
    if calling is None:
        return messages, None
    sampling.tools = calling
    sampling.response_format = {"type": "json_schema", "json_schema": {"schema": calling.schema()}}
    if template_tools:
        return messages, [f.definition() for f in calling.functions]
    note = calling.instructions()
    if messages and messages[0]["role"] == "system":
        messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
    else:
        messages.insert(0, {"role": "system", "content": note})
    return messages, None


def _history(messages: list[dict[str, Any]], template_tools: bool) -> list[dict[str, Any]]:
    """Earlier tool calls and results in the form the model will be asked to use: as
    the template has them, or (a template without tools) as the JSON of a call and a
    user message with the result."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        calls = m.get("tool_calls") or []
        for c in calls:
            names[c["id"]] = c["function"]["name"]
        if template_tools:
            if calls:
                m = {**m, "tool_calls": [_with_object_arguments(c) for c in calls]}
            out.append(m)
        elif calls:
            shown = [{"name": c["function"]["name"], "arguments": _arguments(c)} for c in calls]
            out.append({"role": "assistant", "content": json.dumps({"tool_calls": shown})})
        elif m["role"] == "tool":
            name = names.get(m.get("tool_call_id") or "", "the function")
            out.append({"role": "user", "content": f"Result of {name}: {m['content']}"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def _arguments(call: dict[str, Any]) -> Any:
    """A history call's arguments as JSON (a string that is not JSON stays a string)."""
    try:
        return json.loads(call["function"]["arguments"])
    except ValueError:
        return call["function"]["arguments"]


def _with_object_arguments(call: dict[str, Any]) -> dict[str, Any]:
    # Hugging Face chat templates read the arguments as a mapping
    return {**call, "function": {**call["function"], "arguments": _arguments(call)}}
