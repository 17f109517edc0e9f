"""Each validation error fails the batch with OpenAI-shaped errors and line numbers."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import TERMINAL, chat_line, read_lines, submit, upload, wait_for


def _failed(client: openai.OpenAI, lines: list, **kwargs) -> list[dict]:
    batch = wait_for(client, submit(client, lines, **kwargs).id)
    assert batch.status == "failed", batch
    assert batch.failed_at is not None
    assert batch.output_file_id is None
    return [e.model_dump() for e in batch.errors.data]


GOOD = chat_line("good", "hi")


@pytest.mark.parametrize(
    ("bad_line", "code", "param"),
    [
        ('{"custom_id": "x", "method": "POST", oops', "invalid_json_line", None),
        ("[1, 2, 3]", "invalid_json_line", None),
        (
            {"method": "POST", "url": "/v1/chat/completions", "body": {}},
            "missing_required_parameter",
            "custom_id",
        ),
        ({**chat_line("g", "hi"), "method": "GET"}, "invalid_method", "method"),
        ({**chat_line("u", "hi"), "url": "/v1/completions"}, "mismatched_endpoint", "url"),
        ({**chat_line("b", "hi"), "body": "text"}, "invalid_body", "body"),
        (chat_line("m", "hi", model="no-such-model"), "model_not_found", "body.model"),
    ],
)
def test_bad_line(client: openai.OpenAI, bad_line, code: str, param: str | None) -> None:
    lines = [GOOD, chat_line("other", "x"), bad_line]
    errors = _failed(client, lines)
    assert errors == [{"code": code, "line": 3, "message": errors[0]["message"], "param": param}]
    assert "3" in errors[0]["message"]


def test_duplicate_custom_id(client: openai.OpenAI) -> None:
    errors = _failed(client, [GOOD, chat_line("x", "a"), chat_line("good", "again")])
    assert [(e["code"], e["line"]) for e in errors] == [("duplicate_custom_id", 3)]


def test_all_errors_are_reported_with_line_numbers(client: openai.OpenAI) -> None:
    lines = [GOOD, "not json", chat_line("a", "x"), "{}", chat_line("b", "y")]
    errors = _failed(client, lines)
    assert [(e["code"], e["line"]) for e in errors] == [
        ("invalid_json_line", 2),
        ("missing_required_parameter", 4),
    ]


def test_blank_lines_are_skipped_but_counted(client: openai.OpenAI) -> None:
    data = (json.dumps(GOOD) + "\n\n\n" + "broken\n").encode()
    file_id = upload(client, data)
    batch = wait_for(
        client,
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json_line", 4)]


def test_empty_file(client: openai.OpenAI) -> None:
    file_id = upload(client, b"\n  \n")
    batch = wait_for(
        client,
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [("empty_file", None)]


def test_too_many_requests(client: openai.OpenAI) -> None:
    # the shared test server allows 60 requests per batch
    errors = _failed(client, [chat_line(f"r{i}", "hi") for i in range(61)])
    assert [(e["code"], e["line"]) for e in errors] == [("too_many_requests", 61)]


def test_missing_model(client: openai.OpenAI) -> None:
    line = chat_line("nomodel", "hi")
    del line["body"]["model"]
    errors = _failed(client, [line])
    assert errors[0]["code"] == "missing_required_parameter"
    assert errors[0]["param"] == "body.model"


def test_non_utf8_line(client: openai.OpenAI) -> None:
    data = json.dumps(GOOD).encode() + b"\n" + b'{"custom_id": "\xff\xfe"}\n'
    file_id = upload(client, data)
    batch = wait_for(
        client,
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert batch.status == "failed"
    assert batch.errors.data[0].line == 2


def test_a_good_batch_after_a_broken_one_still_runs(client: openai.OpenAI) -> None:
    _failed(client, ["broken"])
    batch = wait_for(client, submit(client, [GOOD]).id)
    assert batch.status == "completed"
    assert read_lines(client, batch.output_file_id)[0]["custom_id"] == "good"


def test_validation_does_not_wait_for_the_engine(client: openai.OpenAI) -> None:
    """While the engine works through a long unit of one batch, a new batch is validated at
    once: a broken file fails in seconds and a good one is in progress, not left
    ``validating`` until the engine's run ends."""
    long_lines = [
        chat_line(f"long-{i}", "Count to one hundred.", max_tokens=200) for i in range(30)
    ]
    busy = submit(client, long_lines)
    wait_for(client, busy.id, ("in_progress",), predicate=lambda b: b.request_counts.total == 30)

    broken = submit(client, [GOOD, "not json"])
    good = submit(client, [chat_line("quick-1", "hi", max_tokens=2), chat_line("quick-2", "hi")])
    assert wait_for(client, broken.id, timeout=15).status == "failed"
    moved = ("in_progress", "finalizing", *TERMINAL)
    assert wait_for(client, good.id, moved, timeout=15).status != "failed"
    assert client.batches.retrieve(busy.id).status == "in_progress"  # still at its long unit
    client.batches.cancel(busy.id)
    wait_for(client, busy.id)
    assert wait_for(client, good.id).status == "completed"
