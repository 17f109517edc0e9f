"""Training speed and memory of the test-sized fine-tuning job.

Runs the code-word job of the tests (20 examples, SmolLM2-135M, LoRA on every linear
layer; tests/fine_tuning_data.py) through the real training child process, once with
each thread count asked for (default: 2, then 1 as the baseline), and prints per run:
start-up seconds (process start to the first step: imports, loading the model and the
data), training seconds, steps/s, trained tokens/s, the first and last loss, and the
child's peak resident memory. Then the merge into a vLLM checkpoint is timed.

Run: ``.venv/bin/python benchmarks/bench_fine_tuning.py [--threads 2 1] [--epochs 4]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

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


def run_once(base: Path, work: Path, threads: int, epochs: int) -> tuple[dict[str, float], Path]:
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
    )
    started = time.monotonic()
    first_step_at: float | None = None
    losses: list[float] = []
    with TrainingRun(spec) as run:
        for event in run.events():
            if isinstance(event, StepEvent):
                losses.append(event.train_loss)
                if first_step_at is None:
                    first_step_at = time.monotonic() - started - event.elapsed
            elif isinstance(event, DoneEvent):
                done = event
            else:
                if not hasattr(event, "dir"):
                    raise SystemExit(f"training failed: {event}")
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
    }
    return figures, done.adapter_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--epochs", type=int, default=int(HYPERPARAMETERS["n_epochs"]))
    args = parser.parse_args()
    base = prepared_base()
    rows = []
    adapter: Path | None = None
    with tempfile.TemporaryDirectory(prefix="bench-ft-") as tmp:
        for threads in args.threads:
            work = Path(tmp) / f"threads-{threads}"
            work.mkdir()
            figures, adapter_dir = run_once(base, work, threads, args.epochs)
            rows.append(figures)
            adapter = adapter or adapter_dir
            print(
                f"threads={threads}: start-up {figures['startup_s']:.1f} s, "
                f"{figures['steps']} steps in {figures['train_s']:.1f} s "
                f"({figures['steps_per_s']:.2f} steps/s, {figures['tokens_per_s']:.0f} tokens/s), "
                f"loss {figures['first_loss']:.3f} -> {figures['last_loss']:.4f}, "
                f"peak RSS {figures['peak_mib']:.0f} MiB",
                flush=True,
            )
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
    if len(rows) > 1:
        speedup = baseline["train_s"] / rows[0]["train_s"]
        print(f"\n{rows[0]['threads']:.0f} threads vs {baseline['threads']:.0f}: {speedup:.2f}x")
    print(f"merge into a vLLM checkpoint: {merge_s:.1f} s")


if __name__ == "__main__":
    main()
