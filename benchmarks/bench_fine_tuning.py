"""Training speed and memory of the test-sized fine-tuning job.

Runs the code-word job of the tests (20 examples, SmolLM2-135M, LoRA on every linear
layer; tests/fine_tuning_data.py) through the real training child process, once with
each thread count asked for (default: 2, then 1 as the baseline), and prints per run:
start-up seconds (process start to the first step: imports, loading the model and the
data), training seconds, steps/s, trained tokens/s, the first and last loss, and the
child's peak resident memory. Then the merge into a vLLM checkpoint is timed.

With ``--probe`` (the default) a real server runs beside the training and one client asks
it ``GET /v1/batches?limit=1`` back to back: the latencies (median, p99) during each run,
against the same probe with nothing training, show what training costs the API.

Run: ``.venv/bin/python benchmarks/bench_fine_tuning.py [--threads 2 1] [--epochs 4]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_core import start_server  # noqa: E402

from batch_server.fine_tuning import hyperparameters  # noqa: E402
from batch_server.fine_tuning.merge import merge_adapter  # noqa: E402
from batch_server.fine_tuning.runner import (  # noqa: E402
    DoneEvent,
    StepEvent,
    TrainingRun,
    TrainingSpec,
)
from fine_tuning_data import (  # noqa: E402
    HYPERPARAMETERS,
    SEED,
    prepared_base,
    training_jsonl,
    validation_jsonl,
)


class Probe(threading.Thread):
    """Asks the API one request after another until stopped; keeps the latencies."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.latencies, self.halt = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.halt.is_set():
                started = time.perf_counter()
                client.get(f"{self.url}/v1/batches", params={"limit": 1}).raise_for_status()
                self.latencies.append(time.perf_counter() - started)

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies) or [0.0]
        return {
            "api_p50_ms": 1000 * statistics.median(ordered),
            "api_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "api_rps": len(ordered) / max(1e-9, self.elapsed),
        }

    def stop(self) -> dict[str, float]:
        self.halt.set()
        self.join()
        return self.figures()

    def start(self) -> None:
        self.started = time.perf_counter()
        super().start()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def probe_idle(url: str, seconds: float) -> dict[str, float]:
    probe = Probe(url)
    probe.start()
    time.sleep(seconds)
    return probe.stop()


def run_once(
    base: Path, work: Path, threads: int, epochs: int, url: str | None, nice: int
) -> tuple[dict[str, float], Path]:
    (work / "train.jsonl").write_bytes(training_jsonl())
    (work / "valid.jsonl").write_bytes(validation_jsonl())
    resolved = hyperparameters.resolve(HYPERPARAMETERS | {"n_epochs": epochs}, 20)
    spec = TrainingSpec(
        base_dir=base,
        train_path=work / "train.jsonl",
        valid_path=work / "valid.jsonl",
        work_dir=work / "run",
        hyperparameters=resolved,
        seed=SEED,
        threads=threads,
        nice=nice,
    )
    started = time.monotonic()
    first_step_at: float | None = None
    losses: list[float] = []
    probe = Probe(url) if url else None
    with TrainingRun(spec) as run:
        for event in run.events():
            if isinstance(event, StepEvent):
                losses.append(event.train_loss)
                if first_step_at is None:
                    first_step_at = time.monotonic() - started - event.elapsed
                    if probe is not None:
                        probe.start()  # while it trains, not while it loads
            elif isinstance(event, DoneEvent):
                done = event
            else:
                if not hasattr(event, "dir"):
                    raise SystemExit(f"training failed: {event}")
    api = probe.stop() if probe is not None else {}
    figures = {
        "threads": threads,
        "startup_s": first_step_at or 0.0,
        "train_s": done.seconds,
        "steps": len(losses),
        "steps_per_s": len(losses) / done.seconds,
        "tokens_per_s": done.trained_tokens / done.seconds,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_mib": done.peak_memory_bytes / 2**20,
        **api,
    }
    return figures, done.adapter_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--epochs", type=int, default=int(HYPERPARAMETERS["n_epochs"]))
    parser.add_argument("--no-probe", dest="probe", action="store_false")
    parser.add_argument("--nice", type=int, default=5, help="the trainer's niceness (worker: 5)")
    args = parser.parse_args()
    base = prepared_base()
    rows = []
    adapter: Path | None = None
    with tempfile.TemporaryDirectory(prefix="bench-ft-") as tmp:
        server, url = start_server(Path(tmp)) if args.probe else (None, None)
        try:
            idle = probe_idle(url, 10.0) if url else {}
            for threads in args.threads:
                work = Path(tmp) / f"threads-{threads}"
                work.mkdir()
                figures, adapter_dir = run_once(base, work, threads, args.epochs, url, args.nice)
                rows.append(figures)
                adapter = adapter or adapter_dir
                print(
                    f"threads={threads}: start-up {figures['startup_s']:.1f} s, "
                    f"{figures['steps']} steps in {figures['train_s']:.1f} s "
                    f"({figures['steps_per_s']:.2f} steps/s, "
                    f"{figures['tokens_per_s']:.0f} tokens/s), "
                    f"loss {figures['first_loss']:.3f} -> {figures['last_loss']:.4f}, "
                    f"peak RSS {figures['peak_mib']:.0f} MiB",
                    flush=True,
                )
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(60)
        assert adapter is not None
        started = time.monotonic()
        merge_adapter(base, adapter, Path(tmp) / "merged")
        merge_s = time.monotonic() - started
    baseline = rows[-1]
    print(
        "\n| threads | start-up s | train s | steps/s | tokens/s | loss first → last | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']:.0f} | {r['startup_s']:.1f} | {r['train_s']:.1f} | "
            f"{r['steps_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['first_loss']:.2f} → {r['last_loss']:.4f} | {r['peak_mib']:.0f} |"
        )
    if idle:
        print("\nAPI (GET /v1/batches?limit=1, one client) | p50 ms | p99 ms | req/s")
        print(
            f"nothing training | {idle['api_p50_ms']:.1f} | {idle['api_p99_ms']:.1f} | "
            f"{idle['api_rps']:.0f}"
        )
        for r in rows:
            print(
                f"training, {r['threads']:.0f} thread(s) | {r['api_p50_ms']:.1f} | "
                f"{r['api_p99_ms']:.1f} | {r['api_rps']:.0f}"
            )
    if len(rows) > 1:
        speedup = baseline["train_s"] / rows[0]["train_s"]
        print(f"\n{rows[0]['threads']:.0f} threads vs {baseline['threads']:.0f}: {speedup:.2f}x")
    print(f"merge into a vLLM checkpoint: {merge_s:.1f} s")


if __name__ == "__main__":
    main()
