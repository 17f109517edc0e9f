"""Scale-out: one batch on 1, 2 and 4 worker processes sharing one PostgreSQL database,
and the time the other workers need to take over a killed worker's units.

The engine is ``openai`` forwarding to a local HTTP upstream whose every request takes a
fixed time while using no CPU (it sleeps), standing in for a GPU server on another host.
On this 2-core machine a CPU-bound engine would make the workers compete for the same
cores; this way the speed-up measures the queue (claims, leases, result writes, finalize).

Run: ``.venv/bin/python benchmarks/bench_workers.py [--requests 960] [--latency 0.2]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from latency_upstream import serve  # noqa: E402
from pgserver import PostgresServer  # noqa: E402

from conftest import Cluster, free_port, jsonl  # noqa: E402


def registry(upstream: str, concurrency: int) -> str:
    return f"""
default_model = "remote"
[models.remote]
engine = "openai"
engine_args = {{ base_url = "{upstream}/v1", max_concurrency = {concurrency} }}
"""


def batch_lines(n: int) -> bytes:
    return jsonl(
        [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "remote", "messages": [{"role": "user", "content": f"#{i}"}]},
            }
            for i in range(n)
        ]
    )


def start(tmp: Path, pg: PostgresServer, workers: int, config: str, settings: dict) -> Cluster:
    c = Cluster(tmp, settings, False, pg.create_database(), config)
    for _ in range(workers):
        c.start_worker()
    deadline = time.time() + 60
    while len(c.http.get("/health").json()["workers"]) < workers:
        if time.time() > deadline:
            raise RuntimeError("workers did not start")
        time.sleep(0.2)
    return c


def run_batch(c: Cluster, data: bytes, on_progress=None) -> tuple[str, float]:
    file_id = c.client.files.create(file=("in.jsonl", data), purpose="batch").id
    started = time.perf_counter()
    batch = c.client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.1)
        batch = c.client.batches.retrieve(batch.id)
        if on_progress:
            on_progress(batch)
    if batch.status != "completed" or batch.request_counts.completed != batch.request_counts.total:
        raise RuntimeError(f"batch did not complete: {batch}")
    return batch.id, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=960)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight per worker")
    parser.add_argument("--unit-size", type=int, default=32)
    parser.add_argument("--lease-seconds", type=float, default=5.0)
    args = parser.parse_args()

    port = free_port()
    upstream = serve(port, args.latency)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = registry(f"http://127.0.0.1:{port}", args.concurrency)
    settings = {
        "unit_size": args.unit_size,
        "lease_seconds": args.lease_seconds,
        "poll_seconds": 0.5,
    }
    data = batch_lines(args.requests)
    pg = PostgresServer()
    print(
        f"engine: openai -> local HTTP upstream, fixed {args.latency:g} s per request (sleeps, "
        f"no CPU), {args.concurrency} in flight per worker; PostgreSQL 15; "
        f"{args.requests} requests in units of {args.unit_size}"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            times: dict[int, float] = {}
            for n in (1, 2, 4):
                c = start(Path(tmp) / f"w{n}", pg, n, config, settings)
                try:
                    _, times[n] = run_batch(c, data)
                finally:
                    c.close()
                print(
                    f"{n} worker(s): {times[n]:6.2f} s  {args.requests / times[n]:7.1f} req/s  "
                    f"speed-up x{times[1] / times[n]:.2f}",
                    flush=True,
                )

            c = start(Path(tmp) / "kill", pg, 2, config, settings)
            killed: dict[str, float] = {}
            victim = c.workers[0]

            def kill_midway(batch) -> None:  # type: ignore[no-untyped-def]
                if not killed and batch.request_counts.completed >= args.requests // 3:
                    victim.kill9()
                    killed["at"] = time.time()

            try:
                batch_id, took = run_batch(c, data, kill_midway)
                events = c.http.get(f"/v1/batches/{batch_id}/logs").json()["data"]
            finally:
                c.close()
            takeovers = [e["at"] for e in events if "taken over by" in e["message"]]
            print(
                f"2 workers, one killed with SIGKILL a third of the way: batch done in "
                f"{took:.2f} s; its unit taken over {takeovers[0] - killed['at']:.2f} s after "
                f"the kill (lease_seconds={args.lease_seconds:g}, poll_seconds=0.5)"
                if takeovers
                else f"2 workers, one killed: batch done in {took:.2f} s; the killed worker "
                "held no unfinished unit"
            )
            print(json.dumps({"seconds": times, "lease_seconds": args.lease_seconds}))
    finally:
        pg.stop()
        upstream.shutdown()


if __name__ == "__main__":
    main()
