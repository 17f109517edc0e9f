"""End-to-end overhead of the server against the bare engine, measured in one run.

1. The bench workload (``bench_llamacpp_batch.workload``: 200 recruiting-assistant chat
   requests, one shared system prompt, ``max_tokens`` 48, temperature 0) straight through
   the default llama.cpp engine in this process (the baseline), then through a real server
   with the official ``openai`` SDK (upload → create → poll once a second → completed).
   Prints the throughput ratio, and the same server figure against the sequential engine
   (``parallel`` 1) for reference.
2. Submit-to-completed latency of a one-request batch on a warm model, next to the time
   the engine alone needs for that request.

Run: ``.venv/bin/python benchmarks/bench_core.py [--requests 200] [--poll 1.0]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
from bench_llamacpp_batch import workload

from batch_server.config import DEFAULT_MODEL_ID, default_models
from batch_server.engines import load_engine
from batch_server.engines.base import EngineRequest

TOPICS = [
    "the sea",
    "a mountain",
    "coffee",
    "trains",
    "the moon",
    "a library",
    "rain",
    "bicycles",
    "winter",
    "a market",
]


def requests(n: int, max_tokens: int) -> list[dict]:
    return [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": DEFAULT_MODEL_ID,
                "max_tokens": max_tokens,
                "temperature": 0,
                "messages": [
                    {
                        "role": "user",
                        "content": f"Write two sentences about {TOPICS[i % 10]} ({i}).",
                    }
                ],
            },
        }
        for i in range(n)
    ]


def bench_lines(n: int) -> list[dict]:
    """The bench workload as batch input lines."""
    return [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(workload(n))
    ]


def run_engine(lines: list[dict], **engine_args: object) -> tuple[float, int]:
    """Seconds and completion tokens for the requests straight through the engine (the
    default model as configured, ``engine_args`` on top)."""
    spec = default_models()[DEFAULT_MODEL_ID]
    spec = spec.model_copy(update={"engine_args": {**spec.engine_args, **engine_args}})
    engine = load_engine(DEFAULT_MODEL_ID, spec)
    reqs = [EngineRequest(i, x["custom_id"], x["url"], x["body"]) for i, x in enumerate(lines)]
    started = time.perf_counter()
    tokens = sum(r.body["usage"]["completion_tokens"] for r in engine.run(reqs, lambda: False))
    elapsed = time.perf_counter() - started
    engine.close()
    return elapsed, tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(
    data_dir: Path, commands: list[list[str]], attempts: int = 600
) -> tuple[list[subprocess.Popen], str]:
    """Start ``batch-server`` processes sharing one data directory and port; return them
    and the API URL once it is ready (a worker's heartbeat seen; ``/ready`` is asked up to
    ``attempts`` times, 0.1 s apart)."""
    port = free_port()
    env = dict(os.environ, BATCH_SERVER_DATA_DIR=str(data_dir), BATCH_SERVER_PORT=str(port))
    procs = []
    for n, args in enumerate(commands):
        log = open(data_dir / f"proc{n}.log", "wb")  # noqa: SIM115 - lives as long as the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "batch_server", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(attempts):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return procs, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """A server with its in-process worker."""
    procs, url = start_processes(data_dir, [["serve"]])
    return procs[0], url


def run_batch(client: openai.OpenAI, lines: list[dict], poll: float) -> tuple[float, dict]:
    """Seconds from upload to ``completed`` as a client sees it."""
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    started = time.perf_counter()
    file_id = client.files.create(file=("bench.jsonl", data), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(poll)
        batch = client.batches.retrieve(batch.id)
    elapsed = time.perf_counter() - started
    assert batch.status == "completed", batch
    return elapsed, batch.model_dump()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--poll", type=float, default=1.0, help="SDK poll interval (s)")
    parser.add_argument("--latency-runs", type=int, default=5)
    args = parser.parse_args()
    lines = bench_lines(args.requests)

    engine_s, engine_tokens = run_engine(lines)
    sequential_s, _ = run_engine(lines, parallel=1)
    one = requests(1, 16)
    engine_one = statistics.median(run_engine(one)[0] for _ in range(args.latency_runs))

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench")
            server_s, batch = run_batch(client, lines, poll=args.poll)
            latencies = [run_batch(client, one, poll=0.02)[0] for _ in range(args.latency_runs)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    server_tokens = batch["usage"]["output_tokens"]
    engine_rps, server_rps = args.requests / engine_s, args.requests / server_s
    print(
        f"requests: {args.requests}, max_tokens: 48, "
        f"model: {DEFAULT_MODEL_ID} (llama.cpp, {os.cpu_count()} CPU cores)"
    )
    sequential_rps = args.requests / sequential_s
    print(f"sequential engine alone: {sequential_s:7.2f} s  {sequential_rps:6.2f} req/s")
    print(
        f"engine alone:  {engine_s:7.2f} s  {engine_rps:6.2f} req/s  "
        f"{engine_tokens / engine_s:7.1f} tok/s"
    )
    print(
        f"through server:{server_s:7.2f} s  {server_rps:6.2f} req/s  "
        f"{server_tokens / server_s:7.1f} tok/s  "
        f"(upload → completed, polled every {args.poll:g} s)"
    )
    print(f"throughput ratio server/engine: {server_rps / engine_rps:.3f}")
    print(f"throughput ratio server/sequential engine: {server_rps / sequential_rps:.3f}")
    print(
        f"one-request batch, submit → completed: median {statistics.median(latencies):.3f} s "
        f"(min {min(latencies):.3f}, max {max(latencies):.3f}); "
        f"engine alone for that request: {engine_one:.3f} s; "
        f"overhead {statistics.median(latencies) - engine_one:.3f} s"
    )


if __name__ == "__main__":
    main()
