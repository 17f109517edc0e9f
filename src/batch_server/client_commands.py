"""CLI commands that talk to a (possibly remote) server over HTTP: ``submit``, ``status``,
``list``, ``queue``, ``results``, ``cancel``, ``priority``, ``models``.

Each takes ``--url`` (env ``BATCH_SERVER_URL``, default http://localhost:4080) and
``--api-key`` (env ``BATCH_SERVER_API_KEY``). Errors print the server's message and exit 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from batch_server.client import DEFAULT_URL as DEFAULT_URL  # the commands' default, for cli
from batch_server.client import Client, ServerError

TERMINAL = ("completed", "failed", "expired", "cancelled")

UrlOpt = Annotated[
    str, typer.Option("--url", envvar="BATCH_SERVER_URL", help="Server URL", show_default=True)
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="BATCH_SERVER_API_KEY", help="API key (Bearer token)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's JSON")]

console = Console()
err_console = Console(stderr=True)


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    client = Client(url, api_key)
    try:
        yield client
    except ServerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        client.close()


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _counts(batch: dict[str, Any]) -> str:
    c = batch["request_counts"]
    return f"{c['completed'] + c['failed']}/{c['total']} ({c['failed']} failed)"


def _parse_metadata(items: list[str]) -> dict[str, str] | None:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--metadata")
        pairs[key] = value
    return pairs or None


def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL requests")],
    model: Annotated[str | None, typer.Option(help="Model for lines without body.model")] = None,
    wait: Annotated[bool, typer.Option(help="Show progress, then download the results")] = False,
    priority: Annotated[int | None, typer.Option(help="Higher runs first")] = None,
    endpoint: str = "/v1/chat/completions",
    completion_window: str = "24h",
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable)")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where --wait saves output and errors")] = Path(
        "."
    ),
    poll: Annotated[float, typer.Option(help="Seconds between progress updates")] = 1.0,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Upload FILE and create a batch; with --wait, follow it and download the results."""
    with connect(url, api_key) as client:
        batch = client.submit(
            file,
            model=model,
            endpoint=endpoint,
            completion_window=completion_window,
            priority=priority,
            metadata=_parse_metadata(metadata or []),
        )
        console.print(f"created [bold]{batch['id']}[/bold] ({batch['status']})")
        if not wait:
            return
        batch = _follow(client, batch["id"], poll)
        _finish(client, batch, output_dir)


def _follow(client: Client, batch_id: str, poll: float) -> dict[str, Any]:
    """A live progress bar with the server's ETA until the batch ends."""
    columns = (
        TextColumn("{task.fields[status]:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("batch", total=None, status="validating", rate="", eta="unknown")
        while True:
            batch = client.batch(batch_id)
            entry = client.queue_entry(batch_id) if batch["status"] not in TERMINAL else None
            counts = batch["request_counts"]
            rate = ((entry or {}).get("throughput") or {}).get("requests_per_second")
            progress.update(
                task,
                total=counts["total"] or None,
                completed=counts["completed"] + counts["failed"],
                status=batch["status"],
                rate=f"{rate:.2f} req/s" if rate else "",
                eta=entry["eta"]["text"] if entry else "-",
            )
            if batch["status"] in TERMINAL:
                return batch
            time.sleep(poll)


def _finish(client: Client, batch: dict[str, Any], output_dir: Path) -> None:
    console.print(f"{batch['id']}: [bold]{batch['status']}[/bold], {_counts(batch)}")
    for error in (batch.get("errors") or {}).get("data") or []:
        line = f"line {error['line']}: " if error.get("line") else ""
        err_console.print(f"  {line}{error['code']}: {error['message']}")
    output_dir.mkdir(parents=True, exist_ok=True)
    for key, suffix in (("output_file_id", "output"), ("error_file_id", "errors")):
        if batch.get(key):
            dest = output_dir / f"{batch['id']}_{suffix}.jsonl"
            client.download(batch[key], dest)
            console.print(f"{suffix}: {dest}")
    if batch["status"] != "completed":
        raise typer.Exit(1)


def status(
    batch_id: str, as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None
) -> None:
    """Show a batch: status, progress, queue position and ETA, usage, files."""
    with connect(url, api_key) as client:
        batch = client.batch(batch_id)
        entry = client.queue_entry(batch_id) if batch["status"] not in TERMINAL else None
    if as_json:
        console.print_json(data={"batch": batch, "queue": entry})
        return
    table = Table(show_header=False, box=None)
    rows: list[tuple[str, str]] = [
        ("id", batch["id"]),
        ("status", batch["status"]),
        ("model", batch.get("model") or "-"),
        ("requests", _counts(batch)),
        ("created", _when(batch["created_at"])),
        ("output tokens", str(batch["usage"]["output_tokens"])),
    ]
    if entry:
        rows += [
            ("position", f"{entry['position']} ({entry['jobs_ahead']} ahead)"),
            ("priority", str(entry["priority"])),
            ("ETA", entry["eta"]["text"]),
        ]
    rows += [("output file", batch.get("output_file_id") or "-")]
    rows += [("error file", batch.get("error_file_id") or "-")]
    for error in (batch.get("errors") or {}).get("data") or []:
        rows.append(("error", f"line {error.get('line')}: {error['message']}"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


def list_batches(
    status: Annotated[str, typer.Option(help="Statuses (comma-separated) or 'all'")] = "all",
    limit: int = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """List recent batches, newest first."""
    with connect(url, api_key) as client:
        rows = client.history(status, limit)
    if as_json:
        console.print_json(data=rows)
        return
    table = Table("id", "status", "model", "requests", "created", "duration", "req/s", "reason")
    for r in rows:
        duration = r.get("duration_seconds")
        rps = r.get("requests_per_second")
        table.add_row(
            r["id"],
            r["status"],
            r.get("model") or "-",
            _counts(r),
            _when(r["created_at"]),
            f"{duration}s" if duration is not None else "-",
            f"{rps:.2f}" if rps else "-",
            r.get("failure_reason") or "",
        )
    console.print(table)


def queue(url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Show the queue in run order with ETAs, and the workers."""
    with connect(url, api_key) as client:
        q = client.queue()
    if as_json:
        console.print_json(data=q)
        return
    table = Table("#", "id", "state", "priority", "progress", "ETA")
    for e in q["data"]:
        table.add_row(
            str(e["position"]),
            e["id"],
            e["state"],
            str(e["priority"]),
            f"{e['progress']:.0%} {_counts(e)}",
            e["eta"]["text"],
        )
    console.print(table)
    for w in q["workers"]:
        doing = f" on {w['current_batch_id']}" if w["current_batch_id"] else ""
        console.print(f"worker {w['id']}: {w['state']}{doing}, model {w['loaded_model'] or '-'}")


def results(
    batch_id: str,
    errors: Annotated[bool, typer.Option("--errors", help="The error file instead")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to a file")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Download a finished batch's output (or error) file to stdout or a file."""
    with connect(url, api_key) as client:
        batch = client.batch(batch_id)
        file_id = batch.get("error_file_id" if errors else "output_file_id")
        if file_id is None:
            what = "error" if errors else "output"
            err_console.print(f"{batch_id} ({batch['status']}) has no {what} file")
            raise typer.Exit(1)
        client.download(file_id, output)


def cancel(batch_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Cancel a batch; finished requests are kept."""
    with connect(url, api_key) as client:
        batch = client.cancel(batch_id)
    console.print(f"{batch['id']}: {batch['status']}")


def priority(batch_id: str, value: int, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Change a waiting or running batch's priority (higher runs first)."""
    with connect(url, api_key) as client:
        batch = client.set_priority(batch_id, value)
    console.print(f"{batch['id']}: priority {batch['priority']}")


def models(url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the server's models with their measured throughput."""
    with connect(url, api_key) as client:
        data = client.models()
    if as_json:
        console.print_json(data=data)
        return
    table = Table("id", "engine", "aliases", "req/s", "output tok/s")
    for m in data:
        rate = m.get("throughput") or {}
        rps, tps = rate.get("requests_per_second"), rate.get("output_tokens_per_second")
        table.add_row(
            m["id"],
            m.get("engine", "-"),
            ", ".join(m.get("aliases") or []),
            f"{rps:.2f}" if rps else "unknown",
            f"{tps:.1f}" if tps else "unknown",
        )
    console.print(table)


COMMANDS: dict[str, Callable[..., None]] = {
    "submit": submit,
    "status": status,
    "list": list_batches,
    "queue": queue,
    "results": results,
    "cancel": cancel,
    "priority": priority,
    "models": models,
}
