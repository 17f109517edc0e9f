"""Upload → create → poll → download with the official SDK and the real model."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from conftest import DATABASES, TERMINAL, Cluster, chat_line, jsonl, read_lines, submit, wait_for

pytestmark = DATABASES


def test_chat_batch_end_to_end(client: openai.OpenAI) -> None:
    lines = [
        chat_line("plain", "Say hello."),
        chat_line(
            "sampled",
            "Name a colour.",
            temperature=0.8,
            top_p=0.9,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            max_tokens=None,
            max_completion_tokens=6,
        ),
        chat_line("stopped", "Count from 1 to 20, separated by commas.", max_tokens=40, stop=[","]),
        chat_line("two", "Say yes.", n=2, temperature=1.0, seed=3),
        chat_line("logprobs", "Say no.", logprobs=True, top_logprobs=3),
        chat_line("alias", "Hi", model="smollm2"),
        chat_line(
            "system",
            "What are you?",
            messages=[
                {"role": "system", "content": "You are a pirate."},
                {"role": "user", "content": [{"type": "text", "text": "Who are you?"}]},
            ],
        ),
    ]
    created = submit(client, lines, metadata={"job": "e2e"})
    assert created.id.startswith("batch_")
    assert created.status == "validating"
    assert created.metadata == {"job": "e2e"}
    batch = wait_for(client, created.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == len(lines)
    assert batch.request_counts.completed == len(lines)
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None
    assert batch.model == "smollm2-135m-instruct"
    for stamp in ("created_at", "in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(getattr(batch, stamp), int)
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at

    out = read_lines(client, batch.output_file_id)
    assert [o["custom_id"] for o in out] == [x["custom_id"] for x in lines]
    by_id = {o["custom_id"]: o for o in out}
    total_in = total_out = 0
    for o in out:
        assert o["id"].startswith("batch_req_")
        assert o["error"] is None
        assert o["response"]["status_code"] == 200
        assert o["response"]["request_id"]
        body = o["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["model"] == "smollm2-135m-instruct"
        assert body["choices"][0]["message"]["role"] == "assistant"
        use = body["usage"]
        assert use["total_tokens"] == use["prompt_tokens"] + use["completion_tokens"]
        assert use["prompt_tokens"] > 0
        total_in += use["prompt_tokens"]
        total_out += use["completion_tokens"]
    assert batch.usage.input_tokens == total_in
    assert batch.usage.output_tokens == total_out
    assert batch.usage.total_tokens == total_in + total_out

    assert by_id["plain"]["response"]["body"]["usage"]["completion_tokens"] <= 8
    assert by_id["sampled"]["response"]["body"]["usage"]["completion_tokens"] <= 6
    stopped = by_id["stopped"]["response"]["body"]["choices"][0]
    assert "," not in stopped["message"]["content"]
    assert len(by_id["two"]["response"]["body"]["choices"]) == 2
    lp = by_id["logprobs"]["response"]["body"]["choices"][0]["logprobs"]["content"]
    assert lp and all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 3 for e in lp)
    assert (
        "".join(e["token"] for e in lp)
        == by_id["logprobs"]["response"]["body"]["choices"][0]["message"]["content"]
    )


def test_greedy_output_is_deterministic(client: openai.OpenAI) -> None:
    lines = [chat_line(f"r{i}", "Write one word about the sea.", max_tokens=6) for i in range(2)]
    batch = wait_for(client, submit(client, lines).id)
    texts = {
        o["response"]["body"]["choices"][0]["message"]["content"]
        for o in read_lines(client, batch.output_file_id)
    }
    assert len(texts) == 1


def test_completions_endpoint(client: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": "c1",
            "method": "POST",
            "url": "/v1/completions",
            "body": {
                "model": "smollm2-135m-instruct",
                "prompt": "The capital of France is",
                "max_tokens": 5,
                "temperature": 0,
                "logprobs": 2,
            },
        },
        {
            "custom_id": "c2",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"prompt": ["One, two,", "Red, green,"], "max_tokens": 4, "temperature": 0},
        },
    ]
    created = submit(
        client, lines, endpoint="/v1/completions", extra_body={"model": "smollm2-135m-instruct"}
    )
    batch = wait_for(client, created.id)
    assert batch.status == "completed", batch
    out = {o["custom_id"]: o["response"]["body"] for o in read_lines(client, batch.output_file_id)}
    assert out["c1"]["object"] == "text_completion"
    assert out["c1"]["choices"][0]["logprobs"]["tokens"]
    assert len(out["c2"]["choices"]) == 2


def test_rejected_requests_fail_alone(client: openai.OpenAI) -> None:
    huge = "word " * 5000  # longer than the 2048-token context
    lines = [
        chat_line("ok1", "Hello"),
        chat_line("too-long", huge),
        chat_line("bad-temp", "Hi", temperature=7),
        chat_line("ok2", "Bye"),
    ]
    batch = wait_for(client, submit(client, lines).id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    assert [o["custom_id"] for o in read_lines(client, batch.output_file_id)] == ["ok1", "ok2"]
    errors = {e["custom_id"]: e for e in read_lines(client, batch.error_file_id)}
    assert set(errors) == {"too-long", "bad-temp"}
    too_long = errors["too-long"]["response"]
    assert too_long["status_code"] == 400
    assert too_long["body"]["error"]["code"] == "context_length_exceeded"
    assert errors["bad-temp"]["response"]["body"]["error"]["param"] == "temperature"


def test_list_and_retrieve_batches(client: openai.OpenAI) -> None:
    ids = [submit(client, [chat_line("a", "Hi", max_tokens=2)]).id for _ in range(3)]
    for batch_id in ids:
        wait_for(client, batch_id)
    page = client.batches.list(limit=2)
    assert len(page.data) == 2
    assert page.has_more
    assert page.data[0].id == ids[-1]
    second = client.batches.list(limit=2, after=page.data[-1].id)
    assert second.data[0].id == ids[0]
    all_ids = [b.id for b in client.batches.list(limit=2)]
    assert all_ids[:3] == ids[::-1]
    with pytest.raises(openai.NotFoundError) as exc:
        client.batches.retrieve("batch_nope")
    assert exc.value.body["code"] == "not_found"


def test_multipart_convenience(cluster: Cluster) -> None:
    data = jsonl(
        [
            {
                "custom_id": "m1",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            }
        ]
    )
    r = httpx.post(
        f"{cluster.url}/v1/batches",
        files={"file": ("requests.jsonl", data)},
        data={"model": "smollm2-135m-instruct", "metadata": '{"via": "curl"}'},
    )
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["object"] == "batch"
    assert created["metadata"] == {"via": "curl"}
    batch = wait_for(cluster.client, created["id"])
    assert batch.status == "completed"
    assert batch.model == "smollm2-135m-instruct"
    input_file = cluster.client.files.retrieve(created["input_file_id"])
    assert input_file.filename == "requests.jsonl"
    assert input_file.purpose == "batch"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, 400, "input_file_id"),
        (
            {
                "input_file_id": "file-missing",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            404,
            "file_id",
        ),
        (
            {
                "input_file_id": "X",
                "endpoint": "/v1/images/generations",
                "completion_window": "24h",
            },
            400,
            "endpoint",
        ),
        (
            {"input_file_id": "X", "endpoint": "/v1/chat/completions", "completion_window": "soon"},
            400,
            "completion_window",
        ),
        (
            {
                "input_file_id": "X",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "model": "gpt-99",
            },
            404,
            "model",
        ),
        (
            {
                "input_file_id": "X",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"k": "v" * 600},
            },
            400,
            "metadata",
        ),
    ],
)
def test_create_batch_errors(cluster: Cluster, body: dict, status: int, param: str) -> None:
    if body.get("input_file_id") == "X":
        body["input_file_id"] = cluster.client.files.create(
            file=("x.jsonl", jsonl([chat_line("x", "hi")])), purpose="batch"
        ).id
    r = cluster.http.post("/v1/batches", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param


def test_cancel_finished_batch_is_refused(client: openai.OpenAI) -> None:
    batch = wait_for(client, submit(client, [chat_line("a", "Hi", max_tokens=2)]).id)
    assert batch.status in TERMINAL
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_output_files_are_files(client: openai.OpenAI) -> None:
    batch = wait_for(client, submit(client, [chat_line("a", "Hi", max_tokens=2)]).id)
    meta = client.files.retrieve(batch.output_file_id)
    assert meta.purpose == "batch_output"
    listed = [f.id for f in client.files.list(purpose="batch_output")]
    assert batch.output_file_id in listed
    assert json.loads(client.files.content(batch.output_file_id).text)["custom_id"] == "a"


def test_structured_output(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    lines = [
        chat_line(
            "schema",
            "Invent a person.",
            max_tokens=60,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema},
            },
        ),
        chat_line(
            "object",
            "Give a JSON object with a key 'a'.",
            max_tokens=40,
            response_format={"type": "json_object"},
        ),
    ]
    batch = wait_for(client, submit(client, lines).id)
    out = {o["custom_id"]: o["response"]["body"] for o in read_lines(client, batch.output_file_id)}
    person = json.loads(out["schema"]["choices"][0]["message"]["content"])
    assert isinstance(person["name"], str)
    assert isinstance(person["age"], int)
    assert out["object"]["choices"][0]["finish_reason"] in ("stop", "length")
