"""The ``openai`` engine against real upstream servers: llama-cpp-python's
OpenAI-compatible server with the packaged SmolLM2, and a flaky HTTP upstream that answers
429 and 503 before it succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai.types.responses import Response

from batch_server.config import DEFAULT_MODEL_ID, default_models
from conftest import ROOT, Cluster, Upstream, chat_line, read_lines, submit, wait_for


def registry(base_url: str, **args: object) -> str:
    extra = "".join(f", {k} = {v!r}" for k, v in args.items()).replace("'", '"')
    return f"""
default_model = "upstream"
[models.upstream]
engine = "openai"
engine_args = {{ base_url = "{base_url}/v1"{extra} }}
"""


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    gguf = default_models()[DEFAULT_MODEL_ID].resolve_path()
    args = ["-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smol"]
    args += ["--n_ctx", "512", "--n_threads", "1", "--host", "127.0.0.1"]
    server = Upstream(args, tmp_path_factory.mktemp("llama") / "upstream.log", "/v1/models")
    yield server
    server.stop()


def test_batch_through_llama_cpp_server(tmp_path: Path, llama_server: Upstream) -> None:
    c = Cluster(tmp_path, config=registry(llama_server.url, model="smol", max_concurrency=4))
    try:
        lines = [chat_line(f"r{i}", f"Say the number {i}.", model="upstream") for i in range(4)]
        lines.insert(2, chat_line("too-long", "word " * 800, model="upstream"))
        batch = wait_for(c.client, submit(c.client, lines).id, timeout=120)
        assert batch.status == "completed", batch
        assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 1)
        out = read_lines(c.client, batch.output_file_id)
        assert [o["custom_id"] for o in out] == ["r0", "r1", "r2", "r3"]
        for o in out:
            body = o["response"]["body"]
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"]
            assert 0 < body["usage"]["completion_tokens"] <= 8
        assert batch.usage.output_tokens == sum(
            o["response"]["body"]["usage"]["completion_tokens"] for o in out
        )
        [err] = read_lines(c.client, batch.error_file_id)
        assert err["custom_id"] == "too-long"
        assert err["response"]["status_code"] == 400  # the upstream's own answer, kept
        assert "context" in err["response"]["body"]["error"]["message"].lower()
    finally:
        c.close()


def test_responses_through_llama_cpp_server(tmp_path: Path, llama_server: Upstream) -> None:
    """A /v1/responses batch on an upstream without a Responses API: sent as chat
    completions, answered as response objects; a built-in tool fails its line alone."""
    c = Cluster(tmp_path, config=registry(llama_server.url, model="smol"))
    try:

        def line(custom_id: str, **body: object) -> dict[str, object]:
            body = {"model": "upstream", "max_output_tokens": 8, "temperature": 0, **body}
            return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}

        lines = [
            line("plain", input="Say hello.", instructions="Be brief.", metadata={"a": "b"}),
            line("web", input="News?", tools=[{"type": "web_search"}]),
        ]
        created = submit(c.client, lines, endpoint="/v1/responses")
        batch = wait_for(c.client, created.id, timeout=120)
        assert batch.status == "completed", batch
        [out] = read_lines(c.client, batch.output_file_id)
        resp = Response.model_validate(out["response"]["body"])
        assert resp.object == "response" and resp.id.startswith("resp_")
        assert resp.instructions == "Be brief." and resp.metadata == {"a": "b"}
        assert resp.output[0].type == "message"
        assert resp.output[0].content[0].text
        assert resp.usage is not None and 0 < resp.usage.output_tokens <= 8
        assert batch.usage.output_tokens == resp.usage.output_tokens
        [err] = read_lines(c.client, batch.error_file_id)
        assert err["custom_id"] == "web"
        assert err["response"]["body"]["error"]["code"] == "unsupported_value"
    finally:
        c.close()


def test_retries_on_429_5xx_and_timeouts_with_bounded_concurrency(tmp_path: Path) -> None:
    script = str(ROOT / "tests" / "latency_upstream.py")
    flaky = Upstream([script, "--latency", "0.1", "--flaky"], tmp_path / "flaky.log", "/stats")
    c = Cluster(
        tmp_path,
        {"unit_size": 20},
        config=registry(
            flaky.url, max_concurrency=4, backoff_seconds=0.05, max_retries=3, timeout=0.6
        ),
    )
    try:
        lines = [chat_line(f"r{i}", f"Hello {i}", model="upstream") for i in range(16)]
        lines.append(chat_line("slow", "SLOW the first time", model="upstream"))
        lines.append(chat_line("rejected", "REJECT this one", model="upstream"))
        batch = wait_for(c.client, submit(c.client, lines).id, timeout=60)
        assert batch.status == "completed", batch
        assert (batch.request_counts.completed, batch.request_counts.failed) == (17, 1)
        out = read_lines(c.client, batch.output_file_id)
        assert [o["custom_id"] for o in out] == [f"r{i}" for i in range(16)] + ["slow"]
        [err] = read_lines(c.client, batch.error_file_id)
        assert err["response"]["status_code"] == 400
        assert err["response"]["body"]["error"]["code"] == "rejected_by_upstream"
        stats = httpx.get(flaky.url + "/stats").json()
        # each failed (429, 503 or a timeout) once, then succeeded; the rejection is final
        assert stats["requests"] == 2 * 17 + 1
        # at most 4 in flight (+1: the timed-out attempt still sleeping in the upstream)
        assert 2 <= stats["max_in_flight"] <= 5
    finally:
        c.close()
        flaky.stop()
