"""Memory of the server and its engine process while one large batch runs.

Submits an embeddings batch (default 20,000 lines, all-MiniLM-L6-v2 on vLLM) and samples
the resident memory of the server's whole process tree (API and worker, the engine host,
vLLM's engine core and worker) every second as the batch progresses. The baseline is the
figure at 5 %; flat memory means the later figures and the peak stay close to it. The
engine restarts that kept it so (``engine_memory_growth_limit``) are listed.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--requests 200000]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import openai
import psutil
from bench_core import start_server

MODEL = "all-minilm-l6-v2"


def role(p: psutil.Process, root: psutil.Process) -> str:
    """Which part of the server a process is: the server itself, the engine host, vLLM."""
    if p.pid == root.pid:
        return "server"
    cmd = " ".join(p.cmdline())
    if "batch_server.engines.process" in cmd:
        return "engine"
    return p.name()[:15] or "other"


def tree_rss(pid: int) -> dict[str, int]:
    """Resident memory of the server's process tree, by role (bytes)."""
    root = psutil.Process(pid)
    by_role: dict[str, int] = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            name = role(p, root)
            by_role[name] = by_role.get(name, 0) + p.memory_info().rss
    return by_role


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    os.environ["BATCH_SERVER_MAX_REQUESTS_PER_BATCH"] = str(max(args.requests, 50_000))
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {
                "model": MODEL,
                "encoding_format": "base64",
                "input": f"Candidate {i}: ten years of experience in logistics and {i % 97}.",
            },
        }
        for i in range(args.requests)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench")
            file_id = client.files.create(file=("emb.jsonl", data), purpose="batch").id
            started = time.perf_counter()
            batch = client.batches.create(
                input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
            )
            marks = [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]
            seen: list[tuple[float, int, dict[str, int]]] = []
            peak = 0
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(1)
                batch = client.batches.retrieve(batch.id)
                done = batch.request_counts.completed + batch.request_counts.failed
                parts = tree_rss(proc.pid)
                if seen:  # the peak after the 5 % mark (warm-up excluded)
                    peak = max(peak, sum(parts.values()))
                if marks and done >= marks[0] * args.requests:
                    seen.append((marks.pop(0), done, parts))
            elapsed = time.perf_counter() - started
            assert batch.status == "completed", batch
            logs = httpx.get(f"{url}/v1/batches/{batch.id}/logs", timeout=30).json()["data"]
            restarts = [e["message"] for e in logs if e["kind"] == "engine"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    print(
        f"{args.requests} embeddings requests on {MODEL} (vLLM, CPU): {elapsed:.1f} s, "
        f"{args.requests / elapsed:.1f} req/s"
    )
    base = sum(seen[0][2].values())
    for frac, done, parts in seen:
        rss = sum(parts.values())
        detail = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(parts.items()))
        print(
            f"  at {frac:4.0%} ({done:6d} done): process tree RSS {rss / 2**20:7.1f} MiB "
            f"({rss / base:.2f}x the 5% figure; MiB by process: {detail})"
        )
    print(f"  peak after 5%: {peak / 2**20:.1f} MiB ({peak / base:.2f}x the 5% figure)")
    print(f"  engine restarts for memory: {len(restarts)}")
    for message in restarts:
        print(f"    {message}")


if __name__ == "__main__":
    main()
