"""``/v1/responses`` batches on the real model, read with the official SDK's own types:
input as a string or as items (messages, function calls and their outputs), instructions,
structured output, a cut-off answer, function tools; unsupported parts fail their line
alone."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import openai
from openai.types.responses import Response

from conftest import Cluster, read_lines, submit, wait_for

MODEL = "smollm2-135m-instruct"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    body = {"model": MODEL, "temperature": 0, "max_output_tokens": 24, **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}


def run(client: openai.OpenAI, lines: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    batch = wait_for(client, submit(client, lines, endpoint="/v1/responses").id, timeout=300)
    assert batch.status == "completed", batch
    assert batch.endpoint == "/v1/responses"
    out = read_lines(client, batch.output_file_id) + read_lines(client, batch.error_file_id)
    return batch, {o["custom_id"]: o["response"] for o in out}


def message_text(resp: Response) -> str:
    [item] = [o for o in resp.output if o.type == "message"]
    assert item.id.startswith("msg_")
    assert item.role == "assistant"
    [part] = item.content
    assert part.type == "output_text"
    assert part.annotations == []
    return part.text


def test_responses_batch(cluster: Cluster) -> None:
    client = cluster.client
    items = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "input_text", "text": "Name a fruit."}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Apple."}],
        },
        {"role": "developer", "content": "Answer with one word."},
        {"role": "user", "content": [{"type": "input_text", "text": "Another one?"}]},
    ]
    schema_format = {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 C"},
    ]
    lines = [
        line("string", input="Say hello.", metadata={"k": "v"}, store=True),
        line("items", input=items, instructions="Answer in English."),
        line(
            "json",
            input="Invent a person: a name and an age.",
            text={"format": schema_format},
            max_output_tokens=60,
        ),
        line("cut", input="Write a long story about the sea.", max_output_tokens=5),
        line(
            "tool",
            input="What is the weather in Oslo?",
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_output_tokens=64,
        ),
        line("history", input=history, tools=[WEATHER_TOOL], max_output_tokens=64),
        line("web-search", input="News?", tools=[{"type": "web_search"}]),
        line("previous", input="Go on.", previous_response_id="resp_abc"),
        line("background", input="Hi", background=True),
        line(
            "image",
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://x.invalid/a.png"}],
                }
            ],
        ),
        line("unknown", input="Hi", frobnicate=1),
    ]
    batch, out = run(client, lines)
    failed = {"web-search", "previous", "background", "image", "unknown"}
    assert (batch.request_counts.completed, batch.request_counts.failed) == (
        len(lines) - len(failed),
        len(failed),
    )
    expected = {
        "web-search": ("tools[0].type", "unsupported_value"),
        "previous": ("previous_response_id", "unsupported_parameter"),
        "background": ("background", "unsupported_parameter"),
        "image": ("input[0].content[0]", "unsupported_content"),
        "unknown": ("frobnicate", "unknown_parameter"),
    }
    for cid, (param, code) in expected.items():
        assert out[cid]["status_code"] == 400, out[cid]
        error = out[cid]["body"]["error"]
        assert (error["param"], error["code"], error["type"]) == (
            param,
            code,
            "invalid_request_error",
        )

    done = {cid: Response.model_validate(r["body"]) for cid, r in out.items() if cid not in failed}
    for cid, resp in done.items():
        raw = out[cid]["body"]
        assert resp.object == "response"
        assert resp.id.startswith("resp_")
        assert resp.model == MODEL
        assert resp.error is None
        assert resp.temperature == 0
        assert resp.usage is not None
        assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
        assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
        assert resp.usage.output_tokens_details.reasoning_tokens == 0
        assert resp.usage.input_tokens_details.cached_tokens >= 0
        assert isinstance(raw["created_at"], int)
        assert raw["parallel_tool_calls"] is True
        assert raw["text"]["format"]["type"] in ("text", "json_schema")
        limit = next(x["body"]["max_output_tokens"] for x in lines if x["custom_id"] == cid)
        assert resp.max_output_tokens == limit
        if resp.status == "incomplete":  # cut by max_output_tokens, and said so
            assert resp.incomplete_details is not None
            assert resp.incomplete_details.reason == "max_output_tokens"
            assert resp.usage.output_tokens == limit
        else:
            assert resp.status == "completed" and resp.incomplete_details is None
            assert resp.usage.output_tokens <= limit
    assert batch.usage.input_tokens == sum(r.usage.input_tokens for r in done.values())
    assert batch.usage.output_tokens == sum(r.usage.output_tokens for r in done.values())

    string = done["string"]
    assert message_text(string).strip()
    assert string.metadata == {"k": "v"}
    assert string.tools == [] and string.tool_choice == "auto"

    assert done["items"].instructions == "Answer in English."
    assert message_text(done["items"]).strip()
    # the items reached the model: a longer prompt than the string input
    assert done["items"].usage.input_tokens > done["string"].usage.input_tokens

    person = json.loads(message_text(done["json"]))
    assert jsonschema_rs.is_valid(PERSON, person), person
    assert done["json"].text.format.type == "json_schema"

    cut = done["cut"]
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 5
    assert cut.output[0].status == "incomplete"

    [call] = done["tool"].output
    assert call.type == "function_call"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert call.name == "get_weather" and call.status == "completed"
    assert jsonschema_rs.is_valid(WEATHER_TOOL["parameters"], json.loads(call.arguments))
    assert done["tool"].status == "completed"
    [tool] = done["tool"].tools
    assert tool.type == "function" and tool.name == "get_weather" and tool.strict is True

    # the batch's page shows the input, the call and the token counts
    page = cluster.http.get(f"/ui/batches/{batch.id}")
    assert page.status_code == 200
    assert "Say hello." in page.text and "get_weather(" in page.text
    tool_use = done["tool"].usage
    assert f"{tool_use.input_tokens} + {tool_use.output_tokens} tokens, completed" in page.text

    history = done["history"]
    assert history.usage.input_tokens > done["tool"].usage.input_tokens
    for item in history.output:  # the model may answer or call again (tool_choice auto)
        if item.type == "function_call":
            assert jsonschema_rs.is_valid(WEATHER_TOOL["parameters"], json.loads(item.arguments))
        else:
            assert item.type == "message"


def test_responses_endpoint_checks_line_urls(client: openai.OpenAI) -> None:
    chat = {
        "custom_id": "chat",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
    }
    batch = wait_for(client, submit(client, [chat], endpoint="/v1/responses").id)
    assert batch.status == "failed"
    assert batch.errors is not None
    [error] = batch.errors.data
    assert (error.code, error.line, error.param) == ("mismatched_endpoint", 1, "url")
