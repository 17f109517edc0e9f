"""``batch-server bench MODEL``: run a benchmark on a server over HTTP, follow it with a
progress bar, then print its figures (see ``POST /v1/benchmarks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from batch_server.client_commands import (
    DEFAULT_URL,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    _follow,
    connect,
    console,
)


def bench(
    model: Annotated[str, typer.Argument(help="The model to benchmark (an id or an alias)")],
    file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Your own JSONL batch file"),
    ] = None,
    requests: Annotated[int, typer.Option(help="Generated requests (without --file)")] = 50,
    max_tokens: Annotated[int, typer.Option(help="Their answer length (without --file)")] = 64,
    include_in_history: Annotated[
        bool, typer.Option(help="List the benchmark's batch in the history")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between progress updates")] = 1.0,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Benchmark MODEL on a generated dataset (or --file) through the queue; print its
    requests/s, tokens/s, time to first result, load time and peak memory."""
    with connect(url, api_key) as client:
        body: dict[str, Any] = {
            "model": model,
            "requests": requests,
            "max_tokens": max_tokens,
            "include_in_history": include_in_history,
        }
        if file is not None:
            body["input_file_id"] = client.upload(file)["id"]
        created = client.create_benchmark(body)
        if not as_json:
            console.print(f"benchmark [bold]{created['id']}[/bold] (batch {created['batch_id']})")
        _follow(client, created["batch_id"], poll)
        result = client.benchmark(created["id"])
    if as_json:
        console.print_json(data=result)
        return
    console.print(figures_table(result))
    if result["status"] != "completed":
        raise typer.Exit(1)


def _num(value: Any, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def figures_table(b: dict[str, Any]) -> Table:
    f = b.get("figures") or {}
    host = b.get("host") or {}
    peak = f.get("peak_memory_bytes")
    rows = [
        ("model", b["model"]),
        ("status", b["status"]),
        ("dataset", f"{b['dataset']} ({b['requests']} requests)"),
        (
            "requests/s",
            f"{_num(f.get('requests_per_second'))} engine, "
            f"{_num(f.get('wall_requests_per_second'))} wall",
        ),
        (
            "prompt tokens/s",
            f"{_num(f.get('prompt_tokens_per_second'), digits=1)} engine, "
            f"{_num(f.get('wall_prompt_tokens_per_second'), digits=1)} wall",
        ),
        (
            "output tokens/s",
            f"{_num(f.get('output_tokens_per_second'), digits=1)} engine, "
            f"{_num(f.get('wall_output_tokens_per_second'), digits=1)} wall",
        ),
        ("time to first result", _num(f.get("time_to_first_result_seconds"), " s")),
        ("engine load", _num(f.get("engine_load_seconds"), " s")),
        ("peak engine memory", "-" if peak is None else f"{peak / 2**20:.0f} MiB"),
        ("engine", f"{b.get('engine') or '-'} {b.get('engine_version') or ''}".strip()),
        ("engine args", ", ".join(f"{k}={v}" for k, v in (b.get("engine_args") or {}).items())),
        (
            "host",
            f"{host.get('cpu') or '-'} ({host.get('cores') or '?'} cores)"
            + (f", GPUs: {', '.join(host['gpus'])}" if host.get("gpus") else ", no GPU"),
        ),
        ("packages", ", ".join(f"{k} {v}" for k, v in (b.get("packages") or {}).items())),
    ]
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    return table
