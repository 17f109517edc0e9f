"""Memory of the server and its engine process while one large batch runs.

Submits an embeddings batch (default 20,000 lines, all-MiniLM-L6-v2 on vLLM) and samples
the resident memory of the server's whole process tree (API, worker, engine child and
vLLM's own processes) as the batch progresses. Flat memory means the figures at 25 %,
50 %, 75 % and 100 % stay close to the one at 5 %.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--requests 20000]``
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

import openai
import psutil
from bench_core import start_server

MODEL = "all-minilm-l6-v2"


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
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
            marks = [0.05, 0.25, 0.5, 0.75, 1.0]
            seen: list[tuple[float, int, int]] = []
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(1)
                batch = client.batches.retrieve(batch.id)
                done = batch.request_counts.completed + batch.request_counts.failed
                if marks and done >= marks[0] * args.requests:
                    seen.append((marks.pop(0), done, tree_rss(proc.pid)))
            elapsed = time.perf_counter() - started
            assert batch.status == "completed", batch
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    print(
        f"{args.requests} embeddings requests on {MODEL} (vLLM, CPU): {elapsed:.1f} s, "
        f"{args.requests / elapsed:.1f} req/s"
    )
    base = seen[0][2]
    for frac, done, rss in seen:
        print(
            f"  at {frac:4.0%} ({done:6d} done): process tree RSS {rss / 2**20:7.1f} MiB "
            f"({rss / base:.2f}x the 5% figure)"
        )


if __name__ == "__main__":
    main()
