"""Batched llama.cpp decoding against the sequential engine, in one process each.

The workload is this product's main use: one shared system prompt (a recruiting assistant,
~40 tokens), a short user message per candidate, ``max_tokens`` 48, ``temperature`` 0.
Prints requests/s of the sequential engine (the baseline, measured in the same run) and of
the batched engine at each ``parallel``, their ratio, the prompt tokens served from the
prefix cache, and how many outputs are identical to the sequential engine's. Then what the
shared prompt saves: the default engine on the same requests with the system prompt made
unique per request (a case number in front, so no prefix is shared).

Run: ``.venv/bin/python benchmarks/bench_llamacpp_batch.py [--requests 200]
[--parallel 1,2,4,8,16] [--threads N]``
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from batch_server.config import default_models
from batch_server.engines import LLAMACPP_PARALLEL, load_engine
from batch_server.engines.base import EngineRequest

SYSTEM = (
    "You are a recruiting assistant. Read the candidate profile and say in one short "
    "paragraph whether the candidate fits the role of a senior backend engineer, naming "
    "the strongest and the weakest point."
)
SKILLS = ["Python", "Go", "Rust", "Java", "SQL", "Kubernetes", "React", "C++", "Kafka", "AWS"]


def workload(n: int) -> list[dict[str, Any]]:
    """``n`` chat bodies: the shared system prompt and one candidate each."""
    return [
        {
            "model": "smollm2-135m-instruct",
            "max_tokens": 48,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {
                    "role": "user",
                    "content": f"Candidate {i}: {3 + i % 12} years of {SKILLS[i % 10]}, "
                    f"led a team of {2 + i % 7}, last role at company #{i % 31}.",
                },
            ],
        }
        for i in range(n)
    ]


def unshared(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``bodies`` with a different start of the system prompt each: nothing to share."""
    return [
        {
            **b,
            "messages": [
                {"role": "system", "content": f"Case {i:04d}. {SYSTEM}"},
                *b["messages"][1:],
            ],
        }
        for i, b in enumerate(bodies)
    ]


def run(bodies: list[dict[str, Any]], args: dict[str, Any]) -> tuple[float, list[dict]]:
    """Seconds and response bodies for ``bodies`` through one engine built with ``args``."""
    spec = default_models()["smollm2-135m-instruct"]
    spec = spec.model_copy(update={"engine_args": {**spec.engine_args, **args}})
    engine = load_engine("smollm2-135m-instruct", spec)
    reqs = [EngineRequest(i, f"r{i}", "/v1/chat/completions", b) for i, b in enumerate(bodies)]
    started = time.perf_counter()
    results = sorted(engine.run(reqs, lambda: False), key=lambda r: r.index)
    elapsed = time.perf_counter() - started
    engine.close()
    assert all(r.ok for r in results), [r.body for r in results if not r.ok][:1]
    return elapsed, [r.body for r in results]


def same(a: list[dict], b: list[dict]) -> str:
    """How many outputs of ``a`` and ``b`` are identical."""
    pairs = [
        (x["choices"][0]["message"]["content"], y["choices"][0]["message"]["content"])
        for x, y in zip(a, b, strict=True)
    ]
    hits = sum(x == y for x, y in pairs)
    # where they differ: how far the two texts agree before they part
    shared = [len(os.path.commonprefix([x, y])) / max(len(x), 1) for x, y in pairs if x != y]
    part = f", the others agree on their first {sum(shared) / len(shared):.0%}" if shared else ""
    return f"{hits}/{len(a)} outputs identical{part}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--parallel", default="1,2,4,8,16")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = parser.parse_args()
    bodies = workload(a.requests)
    base_s, base = run(bodies, {"parallel": 1, "n_threads": a.threads})
    base_rps = len(bodies) / base_s
    tokens = sum(b["usage"]["completion_tokens"] for b in base)
    print(f"{len(bodies)} requests, max_tokens 48, temperature 0, n_threads {a.threads}")
    print(f"sequential engine: {base_rps:.2f} req/s ({tokens} completion tokens)")
    # The sequential engine against itself in the opposite order: llama.cpp reuses the
    # cached prefix of the previous prompt, so how a prompt is split between cache and
    # new tokens (and with it the last bits of the logits) depends on what ran before.
    _, backwards = run(bodies[::-1], {"parallel": 1, "n_threads": a.threads})
    print(f"sequential engine, requests in reverse order: {same(base, backwards[::-1])}")
    print("| parallel | req/s | × sequential | cached prompt tokens | same output |")
    print("|---|---|---|---|---|")
    for p in (int(x) for x in a.parallel.split(",")):
        secs, out = run(bodies, {"parallel": p, "n_threads": a.threads})
        cached = sum(b["usage"]["prompt_tokens_details"]["cached_tokens"] for b in out)
        prompt = sum(b["usage"]["prompt_tokens"] for b in out)
        rps = len(bodies) / secs
        print(
            f"| {p} | {rps:.2f} | {rps / base_rps:.2f} | {cached}/{prompt} | {same(base, out)} |",
            flush=True,
        )
    p = LLAMACPP_PARALLEL
    shared_s, _ = run(bodies, {"n_threads": a.threads})
    alone_s, out = run(unshared(bodies), {"n_threads": a.threads})
    cached = sum(b["usage"]["prompt_tokens_details"]["cached_tokens"] for b in out)
    print(
        f"default engine (parallel {p}): shared system prompt {len(bodies) / shared_s:.2f} req/s, "
        f"unique system prompts {len(bodies) / alone_s:.2f} req/s ({cached} prompt tokens "
        f"cached): sharing gains {alone_s / shared_s:.2f}×"
    )


if __name__ == "__main__":
    main()
