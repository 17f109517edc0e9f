"""How far off are the queue's ETAs? Measured on a real run, against a naive baseline.

1. A learning batch gives the model a measured rate (the server starts with no history).
2. Batch A (longer answers than the learning batch, so the model's rate alone is off) and
   batch B (short answers) are submitted together; B waits behind A.
3. Every 0.5 s the ETAs of ``GET /v1/queue`` are recorded, then compared with when each
   batch really finished. The baseline is the usual client-side extrapolation from the
   batch's own progress (elapsed / done × remaining), which has no answer before the batch
   has started.

Prints the absolute and relative error of the predictions made at 10/25/50/75/90 % of each
batch's waiting-plus-running time, and the mean relative error of ours vs the baseline.

With ``--benchmark``: how good is an ETA taken from a benchmark, for a model with no
traffic? On a fresh server, a benchmark of ``--bench-requests`` generated requests
(``POST /v1/benchmarks``: candidate-profile prompts, ``--bench-max-tokens``) runs first;
then a real batch of ``--batch-requests`` requests of another shape (short story prompts,
``--batch-max-tokens``) is submitted. Prints the ETA of ``GET /v1/queue`` right after the
batch starts (basis ``benchmark``: its model has no traffic of its own), the actual
duration from that moment, and the error.

Run: ``.venv/bin/python benchmarks/bench_eta.py [--benchmark]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_core import requests, start_server

TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class Track:
    batch_id: str
    submitted: float
    ours: list[tuple[float, float | None]] = field(default_factory=list)  # (t, predicted end)
    naive: list[tuple[float, float | None]] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None


def submit(http: httpx.Client, lines: list[dict]) -> str:
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    resp = http.post("/v1/batches", files={"file": ("eta.jsonl", data)})
    resp.raise_for_status()
    return resp.json()["id"]


def wait(http: httpx.Client, batch_id: str) -> None:
    while http.get(f"/v1/batches/{batch_id}").json()["status"] not in TERMINAL:
        time.sleep(0.2)


def observe(http: httpx.Client, tracks: list[Track], poll: float) -> None:
    while any(t.finished is None for t in tracks):
        now = time.time()
        queue = {e["id"]: e for e in http.get("/v1/queue").json()["data"]}
        for t in tracks:
            if t.finished is not None:
                continue
            entry = queue.get(t.batch_id)
            if entry is None:
                if http.get(f"/v1/batches/{t.batch_id}").json()["status"] in TERMINAL:
                    t.finished = now
                continue
            eta = entry["eta"]["seconds"]
            t.ours.append((now, None if eta is None else now + eta))
            counts = entry["request_counts"]
            done = counts["completed"] + counts["failed"]
            if done and t.started is None:
                t.started = now
            if done and counts["total"] and t.started is not None:
                elapsed = now - t.started
                t.naive.append((now, now + elapsed / done * (counts["total"] - done)))
            else:
                t.naive.append((now, None))
        time.sleep(poll)


def error_at(points: list[tuple[float, float | None]], track: Track, frac: float) -> tuple:
    """The prediction made closest to ``frac`` of the batch's life: (abs s, rel) or None."""
    assert track.finished is not None
    life = track.finished - track.submitted
    target = track.submitted + frac * life
    t, predicted = min(points, key=lambda p: abs(p[0] - target))
    if predicted is None:
        return None, None
    remaining = track.finished - t
    return predicted - track.finished, abs(predicted - track.finished) / max(remaining, 1.0)


def benchmark_eta(args: argparse.Namespace) -> None:
    """The ``--benchmark`` run (see the module's docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            http = httpx.Client(base_url=url, timeout=60)
            body = {
                "model": "smollm2-135m-instruct",
                "requests": args.bench_requests,
                "max_tokens": args.bench_max_tokens,
            }
            bench = http.post("/v1/benchmarks", json=body).json()
            wait(http, bench["batch_id"])
            bench = http.get(f"/v1/benchmarks/{bench['id']}").json()
            batch_id = submit(http, requests(args.batch_requests, args.batch_max_tokens))
            first: tuple[float, dict] | None = None  # (when, eta) once the batch runs
            seen: set[str] = set()
            while True:
                entry = next(
                    (e for e in http.get("/v1/queue").json()["data"] if e["id"] == batch_id),
                    None,
                )
                if entry is None:
                    break
                seen.add(entry["eta"]["basis"])
                if first is None and entry["state"] == "running":
                    first = (time.time(), entry["eta"])
                time.sleep(args.poll)
            wait(http, batch_id)
            ended = time.time()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    f = bench["figures"]
    print(
        f"model: smollm2-135m-instruct (llama.cpp, {os.cpu_count()} CPU cores); benchmark "
        f"{bench['id']}: {args.bench_requests} generated requests (max_tokens "
        f"{args.bench_max_tokens}): {f['requests_per_second']:.2f} req/s, "
        f"{f['output_tokens_per_second']:.1f} output tok/s of engine time "
        f"({f['output_tokens'] / max(f['requests'], 1):.1f} output tokens a request)"
    )
    print(
        f"batch: {args.batch_requests} story requests (max_tokens {args.batch_max_tokens}); "
        f"ETA bases seen in the queue: {', '.join(sorted(seen))}"
    )
    if first is None:
        print("the batch was never seen running (it finished between two polls)")
        return
    at, eta = first
    actual = ended - at
    predicted = eta["seconds"]
    if predicted is None:
        print(f"ETA right after it started: unknown (basis {eta['basis']}); took {actual:.1f} s")
        return
    print(
        f"ETA right after it started (basis {eta['basis']}, {eta['requests_per_second']:.2f} "
        f"req/s): {predicted:.1f} s; actual: {actual:.1f} s (to within {args.poll} s); "
        f"error {predicted - actual:+.1f} s ({(predicted - actual) / actual:+.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learn", type=int, default=30)
    parser.add_argument("--a", type=int, default=60)
    parser.add_argument("--b", type=int, default=40)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--benchmark", action="store_true", help="benchmark-based ETAs")
    parser.add_argument("--bench-requests", type=int, default=40)
    parser.add_argument("--bench-max-tokens", type=int, default=64)
    parser.add_argument("--batch-requests", type=int, default=60)
    parser.add_argument("--batch-max-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.benchmark:
        benchmark_eta(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            http = httpx.Client(base_url=url, timeout=60)
            wait(http, submit(http, requests(args.learn, 32)))
            learned = http.get("/v1/models").json()["data"][0]["throughput"]
            now = time.time()
            a = Track(submit(http, requests(args.a, 48)), now)
            b = Track(submit(http, requests(args.b, 16)), now)
            observe(http, [a, b], args.poll)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    print(
        f"model: smollm2-135m-instruct (llama.cpp, {os.cpu_count()} CPU cores); learned from "
        f"{args.learn} requests (max_tokens 32): {learned['requests_per_second']:.2f} req/s"
    )
    fracs = (0.1, 0.25, 0.5, 0.75, 0.9)
    ours_all: list[float] = []
    naive_all: list[float] = []
    paired: list[tuple[float, float]] = []
    for name, t, desc in (
        ("A", a, f"{args.a} requests, max_tokens 48, runs first"),
        ("B", b, f"{args.b} requests, max_tokens 16, waits behind A"),
    ):
        assert t.finished is not None
        print(f"batch {name} ({desc}): finished {t.finished - t.submitted:.1f} s after submit")
        for frac in fracs:
            o_abs, o_rel = error_at(t.ours, t, frac)
            n_abs, n_rel = error_at(t.naive, t, frac)
            ours = "unknown" if o_abs is None else f"{o_abs:+6.1f} s ({o_rel:6.1%})"
            naive = "no estimate" if n_abs is None else f"{n_abs:+6.1f} s ({n_rel:6.1%})"
            print(f"  at {frac:4.0%} of its life: ours {ours}   naive {naive}")
            if o_rel is not None:
                ours_all.append(o_rel)
            if n_rel is not None:
                naive_all.append(n_rel)
            if o_rel is not None and n_rel is not None:
                paired.append((o_rel, n_rel))
    ours_mean = statistics.mean(ours_all)
    print(
        f"mean relative ETA error (|predicted - actual end| / time remaining): "
        f"ours {ours_mean:.1%} over {len(ours_all)} predictions"
    )
    if paired:
        o_mean = statistics.mean(p[0] for p in paired)
        n_mean = statistics.mean(p[1] for p in paired)
        print(
            f"where both have an estimate ({len(paired)} predictions): ours {o_mean:.1%}, "
            f"naive baseline {n_mean:.1%}, ratio ours/naive {o_mean / n_mean:.2f}; the naive "
            f"one has no estimate for {len(ours_all) - len(paired)} of ours (batch waiting)"
        )


if __name__ == "__main__":
    main()
