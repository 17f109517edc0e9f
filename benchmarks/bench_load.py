"""Status reads that hold a crowd: ``wrk`` against the endpoints dashboards and SDKs poll.

For API keys off and on, starts an API-only server (``serve --no-worker``) and a standalone
``worker`` on one data directory, then measures with ``wrk`` (32 connections, one wrk
thread) the requests/s and p50/p99 latency of

- idle: an unknown route and ``/health`` (the baselines: HTTP and middleware alone, and a
  small endpoint), then ``GET /v1/batches/{id}``, ``/v1/queue`` and ``/v1/models``;
- while a batch runs on the worker: ``GET /v1/batches/{id}`` of that batch and
  ``/v1/queue``, each with the engine's requests/s and output tokens/s during the load
  next to the same over an equal quiet window just before; and the engine's rate while
  four SDK-like clients each poll the status five times a second (the load a batch
  server meets in practice) against its quiet rate, over three alternating pairs of
  windows.

Ratios against the baselines of the same run are printed, so machines compare. The
clients, the API and the engine share the host's cores: on 2 cores wrk takes part of one.

Run: ``.venv/bin/python benchmarks/bench_load.py [--connections 32] [--seconds 10]``
(``make bench-load`` installs Debian's ``wrk`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_core import requests, start_processes

UNKNOWN = "/v1/no-such-route"
STATUS = "/v1/batches/{id}"
POLLERS = "4 clients polling 5/s each"
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Load:
    """One wrk run."""

    rps: float
    p50: float  # seconds
    p99: float
    non_2xx: int
    socket_errors: int

    def __str__(self) -> str:
        errors = f"  non-2xx {self.non_2xx}" if self.non_2xx else ""
        errors += f"  socket errors {self.socket_errors}" if self.socket_errors else ""
        return (
            f"{self.rps:8.1f} req/s  p50 {self.p50 * 1000:7.2f} ms  "
            f"p99 {self.p99 * 1000:7.2f} ms{errors}"
        )


@dataclass(frozen=True)
class EngineRate:
    """The running batch's progress over a window."""

    requests_per_second: float
    tokens_per_second: float

    def __str__(self) -> str:
        return f"{self.requests_per_second:5.2f} req/s, {self.tokens_per_second:6.1f} tokens/s"


def _duration(text: str) -> float:
    """Seconds in one of wrk's durations (``635.91us``, ``1.20ms``, ``2.00s``)."""
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def parse_wrk(output: str) -> Load:
    """requests/s, p50, p99 and errors from ``wrk --latency`` output."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M))
    if "99" not in percentiles:
        raise RuntimeError(f"no latency distribution in wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: (.*)", output)
    return Load(
        rps=float(re.findall(r"Requests/sec:\s+([\d.]+)", output)[0]),
        p50=_duration(percentiles["50"]),
        p99=_duration(percentiles["99"]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, re.findall(r"\d+", sockets.group(1)))) if sockets else 0,
    )


def wrk(url: str, token: str | None, connections: int, seconds: float) -> Load:
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    run = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "--latency"]
        + [*auth, url],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(run.stdout)


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


def wait_for(http: httpx.Client, batch_id: str, done: Callable[[dict], bool]) -> dict:
    while not done(batch := http.get(f"/v1/batches/{batch_id}").json()):
        time.sleep(0.2)
    return batch


def progress(http: httpx.Client, batch_id: str) -> tuple[float, int, int]:
    batch = http.get(f"/v1/batches/{batch_id}").json()
    counts = batch["request_counts"]
    return (
        time.perf_counter(),
        counts["completed"] + counts["failed"],
        batch["usage"]["output_tokens"],
    )


def poll_politely(url: str, headers: dict[str, str], path: str, seconds: float) -> None:
    """Four clients, each getting ``path`` five times a second, for ``seconds``."""

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            stop_at = time.perf_counter() + seconds
            while (now := time.perf_counter()) < stop_at:
                http.get(path).raise_for_status()
                time.sleep(max(0.0, 0.2 - (time.perf_counter() - now)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def summed(windows: list[tuple[tuple[float, int, int], tuple[float, int, int]]]) -> EngineRate:
    """The engine's rate over several windows together."""
    seconds = sum(end[0] - start[0] for start, end in windows)
    done = sum(end[1] - start[1] for start, end in windows)
    tokens = sum(end[2] - start[2] for start, end in windows)
    return EngineRate(done / seconds, tokens / seconds)


def engine_rate(start: tuple[float, int, int], end: tuple[float, int, int]) -> EngineRate:
    seconds = end[0] - start[0]
    return EngineRate((end[1] - start[1]) / seconds, (end[2] - start[2]) / seconds)


@dataclass
class Figures:
    """Every figure for one server: wrk runs idle and while a batch runs, and the engine's
    rate over a quiet window and then under each load."""

    idle: dict[str, Load] = field(default_factory=dict)
    running: dict[str, Load] = field(default_factory=dict)
    quiet: dict[str, EngineRate] = field(default_factory=dict)
    loaded: dict[str, EngineRate] = field(default_factory=dict)


def measure(keys_on: bool, connections: int, seconds: float) -> Figures:
    figures = Figures()
    with tempfile.TemporaryDirectory() as tmp:
        token = None
        if keys_on:
            token = subprocess.run(
                [sys.executable, "-m", "batch_server", "keys", "create", "bench"],
                env=dict(os.environ, BATCH_SERVER_DATA_DIR=tmp),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        procs, url = start_processes(Path(tmp), [["serve", "--no-worker"], ["worker"]])
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                finished = submit(http, 1, 4)
                wait_for(http, finished, lambda b: b["status"] == "completed")
                idle = {
                    "unknown route": UNKNOWN,
                    "/health": "/health",
                    STATUS: f"/v1/batches/{finished}",
                    "/v1/queue": "/v1/queue",
                    "/v1/models": "/v1/models",
                }
                for label, path in idle.items():
                    figures.idle[label] = wrk(url + path, token, connections, seconds)
                running = submit(http, 600, 48)
                wait_for(http, running, lambda b: b["request_counts"]["completed"] > 0)
                for label, path in {
                    STATUS: f"/v1/batches/{running}",
                    "/v1/queue": "/v1/queue",
                }.items():
                    quiet = progress(http, running)
                    time.sleep(seconds)
                    loaded = progress(http, running)
                    figures.running[label] = wrk(url + path, token, connections, seconds)
                    figures.quiet[label] = engine_rate(quiet, loaded)
                    figures.loaded[label] = engine_rate(loaded, progress(http, running))
                # Quiet and polled windows alternate three times: a batch's rate drifts by
                # a few percent from one window to the next on its own.
                quiet_parts, loaded_parts = [], []
                for _ in range(3):
                    start = progress(http, running)
                    time.sleep(seconds)
                    middle = progress(http, running)
                    poll_politely(url, headers, f"/v1/batches/{running}", seconds)
                    quiet_parts.append((start, middle))
                    loaded_parts.append((middle, progress(http, running)))
                figures.quiet[POLLERS] = summed(quiet_parts)
                figures.loaded[POLLERS] = summed(loaded_parts)
                http.post(f"/v1/batches/{running}/cancel")
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    return figures


def report(keys_on: bool, f: Figures) -> None:
    print(f"\nAPI keys {'on' if keys_on else 'off'}")
    for label, load in f.idle.items():
        print(f"  idle     {label:<22} {load}")
    for label, load in f.running.items():
        print(f"  running  {label:<22} {load}")
        print(f"           engine quiet {f.quiet[label]}  under this load {f.loaded[label]}")
    quiet, loaded = f.quiet[POLLERS], f.loaded[POLLERS]
    print(f"  running  {POLLERS}: engine quiet {quiet}  meanwhile {loaded}")
    status, busy = f.idle[STATUS], f.running[STATUS]
    engine = ratio(f.loaded[STATUS], f.quiet[STATUS])
    print(
        f"  ratios: status / unknown route {status.rps / f.idle['unknown route'].rps:.2f}, "
        f"status / health {status.rps / f.idle['/health'].rps:.2f}, "
        f"status running / idle {busy.rps / status.rps:.2f}, "
        f"engine tokens/s under status load / quiet {engine}, "
        f"with {POLLERS} / quiet {ratio(f.loaded[POLLERS], f.quiet[POLLERS])}"
    )


def ratio(loaded: EngineRate, quiet: EngineRate) -> str:
    if not quiet.tokens_per_second:
        return "n/a"
    return f"{loaded.tokens_per_second / quiet.tokens_per_second:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--keys", choices=["off", "on", "both"], default="both")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: 'make bench-load' installs it (Debian's package wrk)")
    print(
        f"wrk: {args.connections} connections, 1 thread, {args.seconds:.0f} s per run; "
        f"serve --no-worker + worker; {os.cpu_count()} CPU cores shared by wrk, API and engine"
    )
    for keys_on in {"off": [False], "on": [True], "both": [False, True]}[args.keys]:
        report(keys_on, measure(keys_on, args.connections, args.seconds))


if __name__ == "__main__":
    main()
