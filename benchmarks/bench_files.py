"""Big files: a 50,000-line upload and its validation, and a 200,000-line download.

1. Uploads the bench workload (``bench_llamacpp_batch.workload``) as a 50,000-line batch
   input file with the official ``openai`` SDK, creates the batch and times it until it
   leaves ``validating`` (the goal: ≤ 2 s from the upload's start). The baseline, measured
   in the same run: this process reading the same bytes with ``json.loads`` line by line.
   The batch is cancelled once it runs.
2. Downloads a 200,000-line file of result lines (the shape of a chat batch's output, so
   as big as a 200,000-request batch's output file; output files are served by the same
   ``GET /v1/files/{id}/content``) and samples the server's resident memory meanwhile:
   a streamed download keeps it flat whatever the file's size.

Run: ``.venv/bin/python benchmarks/bench_files.py [--lines 50000] [--download-lines 200000]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
from bench_core import start_server
from bench_llamacpp_batch import workload


def batch_input(n: int) -> bytes:
    return "".join(
        json.dumps(
            {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        + "\n"
        for i, body in enumerate(workload(n))
    ).encode()


def output_lines(n: int) -> bytes:
    """``n`` lines shaped like a chat batch's output lines (~0.7 KB each)."""
    text = "The candidate fits the role: eight years of backend work. Weakest: no Go. " * 3
    return "".join(
        json.dumps(
            {
                "id": f"batch_req_{i:024x}",
                "custom_id": f"c{i}",
                "response": {
                    "status_code": 200,
                    "request_id": f"req_{i:024x}",
                    "body": {
                        "id": f"chatcmpl-{i:024x}",
                        "object": "chat.completion",
                        "model": "smollm2-135m-instruct",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "length",
                            }
                        ],
                        "usage": {"prompt_tokens": 80, "completion_tokens": 48},
                    },
                },
                "error": None,
            }
        )
        + "\n"
        for i in range(n)
    ).encode()


def upload_and_validate(client: openai.OpenAI, data: bytes) -> tuple[float, float, str]:
    """Seconds for the upload, and from its start until the batch leaves ``validating``."""
    started = time.perf_counter()
    file_id = client.files.create(file=("big.jsonl", data), purpose="batch").id
    uploaded = time.perf_counter() - started
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status == "validating":
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
    validated = time.perf_counter() - started
    assert batch.status == "in_progress", batch
    client.batches.cancel(batch.id)
    return uploaded, validated, batch.id


def download(url: str, file_id: str, server: psutil.Process) -> tuple[float, int, int]:
    """Seconds and bytes of a streamed download, and the server's peak RSS meanwhile."""
    peak = [server.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = 0
    started = time.perf_counter()
    with httpx.stream("GET", f"{url}/v1/files/{file_id}/content", timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes(1 << 16):
            size += len(chunk)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    return elapsed, size, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--download-lines", type=int, default=200_000)
    args = parser.parse_args()
    data = batch_input(args.lines)
    started = time.perf_counter()
    for line in data.splitlines():
        json.loads(line)
    parse_s = time.perf_counter() - started
    results = output_lines(args.download_lines)
    os.environ.setdefault("BATCH_SERVER_MAX_UPLOAD_BYTES", str(len(results) + (1 << 20)))

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench")
            uploaded, validated, _ = upload_and_validate(client, data)
            server = psutil.Process(proc.pid)
            file_id = client.files.create(file=("results.jsonl", results), purpose="batch").id
            before = server.memory_info().rss
            seconds, size, peak = download(url, file_id, server)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)

    mb = len(data) / 2**20
    print(f"{args.lines} lines ({mb:.1f} MiB), {os.cpu_count()} CPU cores")
    print(f"  json.loads of every line in one process (baseline): {parse_s:.3f} s")
    print(
        f"  upload: {uploaded:.3f} s; upload + create + validated (status in_progress): "
        f"{validated:.3f} s = {validated / parse_s:.1f}× the baseline (goal ≤ 2 s)"
    )
    print(
        f"{args.download_lines}-line file ({size / 2**20:.0f} MiB) downloaded in {seconds:.2f} s "
        f"({size / 2**20 / seconds:.0f} MiB/s); server RSS {before / 2**20:.0f} MiB before, "
        f"peak {peak / 2**20:.0f} MiB during ({peak / before:.2f}×)"
    )


if __name__ == "__main__":
    main()
