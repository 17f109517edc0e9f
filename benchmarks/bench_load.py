"""Load on the API: many concurrent clients polling batch status and listing batches.

Runs a real server (API + in-process worker, API keys on) and measures, for the same
client load, the status endpoint (``GET /v1/batches/{id}``) and the list endpoint
(``GET /v1/batches``) twice: with the server idle (the baseline) and while a batch runs on
the engine. Prints requests/s and latency percentiles and the running/idle ratio.

Run: ``.venv/bin/python benchmarks/bench_load.py [--clients 32] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from bench_core import requests, start_processes


def start(data_dir: Path, separate_worker: bool) -> tuple[list[subprocess.Popen], str]:
    """A server (with its in-process worker, or API-only plus a standalone worker)."""
    commands = [["serve", "--no-worker"], ["worker"]] if separate_worker else [["serve"]]
    return start_processes(data_dir, commands)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def hammer(url: str, token: str, batch_ids: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads, each polling status three times per listing, for ``seconds``."""
    status: list[float] = []
    listing: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(n: int) -> None:
        mine_s, mine_l = [], []
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            i = 0
            while time.perf_counter() < stop_at:
                i += 1
                started = time.perf_counter()
                if i % 4 == 0:
                    r = http.get("/v1/batches", params={"limit": 20})
                    mine_l.append(time.perf_counter() - started)
                else:
                    r = http.get(f"/v1/batches/{batch_ids[(n + i) % len(batch_ids)]}")
                    mine_s.append(time.perf_counter() - started)
                if r.status_code != 200:
                    with lock:
                        errors[0] += 1
        with lock:
            status.extend(mine_s)
            listing.extend(mine_l)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {
        "elapsed": elapsed,
        "status_rps": len(status) / elapsed,
        "status_p50": statistics.median(status),
        "status_p99": percentile(status, 0.99),
        "list_rps": len(listing) / elapsed,
        "list_p99": percentile(listing, 0.99),
        "total_rps": (len(status) + len(listing)) / elapsed,
        "errors": errors[0],
    }


def submit(http: httpx.Client, n: int, max_tokens: int) -> str:
    data = "".join(json.dumps(x) + "\n" for x in requests(n, max_tokens)).encode()
    file_id = http.post(
        "/v1/files", files={"file": ("load.jsonl", data)}, data={"purpose": "batch"}
    ).json()["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    return http.post("/v1/batches", json=body).json()["id"]


def report(label: str, r: dict) -> None:
    print(
        f"{label:<22} status: {r['status_rps']:7.1f} req/s  p50 {r['status_p50'] * 1000:6.1f} ms"
        f"  p99 {r['status_p99'] * 1000:6.1f} ms | list: {r['list_rps']:6.1f} req/s"
        f"  p99 {r['list_p99'] * 1000:6.1f} ms | errors {r['errors']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batches", type=int, default=50, help="finished batches to list")
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="API-only server plus a standalone worker process (default: in-process worker)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, BATCH_SERVER_DATA_DIR=str(Path(tmp)))
        token = subprocess.run(
            [sys.executable, "-m", "batch_server", "keys", "create", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        procs, url = start(Path(tmp), args.separate_worker)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                done = [submit(http, 1, 4) for _ in range(args.batches)]
                while any(
                    http.get(f"/v1/batches/{b}").json()["status"] != "completed" for b in done[-3:]
                ):
                    time.sleep(0.5)
                idle = hammer(url, token, done, args.clients, args.seconds)
                running_id = submit(http, 400, 48)
                while http.get(f"/v1/batches/{running_id}").json()["status"] != "in_progress":
                    time.sleep(0.1)
                before = http.get(f"/v1/batches/{running_id}").json()["request_counts"]
                busy = hammer(url, token, [running_id, *done], args.clients, args.seconds)
                after = http.get(f"/v1/batches/{running_id}").json()
                http.post(f"/v1/batches/{running_id}/cancel")
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

    progressed = after["request_counts"]["completed"] - before["completed"]
    print(
        f"{args.clients} concurrent clients, {args.seconds:.0f} s per phase, "
        f"{args.batches + 1} batches, API keys on, "
        f"{'standalone' if args.separate_worker else 'in-process'} worker, "
        f"{os.cpu_count()} CPU cores (clients, API and engine share them)"
    )
    report("idle server (baseline)", idle)
    report("while a batch runs", busy)
    print(
        f"batch progress during the load phase: {progressed} requests "
        f"({progressed / busy['elapsed']:.2f} req/s on the engine)"
    )
    print(
        f"ratio running/idle: status req/s {busy['status_rps'] / idle['status_rps']:.2f}, "
        f"status p99 {busy['status_p99'] / idle['status_p99']:.2f}"
    )


if __name__ == "__main__":
    main()
