"""CLI commands for model comparisons, over HTTP like the other client commands:
``compare create FILE --model A --model B [--wait]`` (or ``--batch BATCH_ID`` for an
existing batch's input), ``compare list``, ``compare show ID`` (the runs side by side and
the agreement) and ``compare export ID`` (the picks as preference JSONL). See
docs/comparisons.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from batch_server.client_commands import (
    DEFAULT_URL,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    connect,
    console,
    err_console,
)

app = typer.Typer(
    help="Compare models on the same requests: create, list, show, export.",
    no_args_is_help=True,
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def runs_table(c: dict[str, Any]) -> Table:
    """One row per model: its batch, progress, tokens, throughput and cost."""
    table = Table(title=f"{c['id']} ({c['status']}, {c['endpoint']})")
    # cost: at the model's own price where the price table has one, else the reference
    for column in ("model", "batch", "status", "done", "failed", "output tokens", "req/s", "cost"):
        table.add_column(column)
    for run in c["runs"]:
        counts, cost = run["request_counts"], run.get("cost") or {}
        rate = (run.get("throughput") or {}).get("requests_per_second")
        priced = cost.get("own") or cost.get("reference")
        table.add_row(
            run["model"],
            run["batch_id"],
            run["status"],
            f"{counts['completed']}/{counts['total']}",
            str(counts["failed"]),
            str(run["tokens"]["output_tokens"]),
            "-" if rate is None else f"{rate:.2f}",
            "-" if priced is None else f"{priced['estimated']:.4f} {priced['currency']}",
        )
    return table


def _print(c: dict[str, Any]) -> None:
    console.print(runs_table(c))
    agreement = c.get("agreement")
    if agreement:
        console.print(
            f"agreement over {agreement['requests']} requests: "
            f"all models the same {_pct(agreement['exact_match'])}"
        )
        for pair in agreement["pairwise"]:
            console.print(f"  {' vs '.join(pair['models'])}: {_pct(pair['exact_match'])}")
    picks = c["picks"]
    if picks["total"]:
        by_model = ", ".join(f"{m} {n}" for m, n in picks["by_model"].items())
        console.print(f"picks: {picks['total']} ({by_model}; ties {picks['ties']})")


@app.command("create")
def create(
    file: Annotated[
        Path | None,
        typer.Argument(help="A JSONL batch file (or give --batch)", exists=True, dir_okay=False),
    ] = None,
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="A model to compare (2 to 8 of them)")
    ] = [],  # noqa: B006 (typer reads the default)
    batch: Annotated[str | None, typer.Option(help="Compare on this batch's input")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until every model's batch ended")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --wait")] = 2.0,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Run the same requests on every --model (one batch each, through the queue)."""
    if (file is None) == (batch is None):
        err_console.print("give a FILE or --batch BATCH_ID (one of them)")
        raise typer.Exit(2)
    with connect(url, api_key) as client:
        body: dict[str, Any] = {"models": model}
        if file is not None:
            body["input_file_id"] = client.upload(file)["id"]
        else:
            body["batch_id"] = batch
        c = client.create_comparison(body)
        if wait:
            if not as_json:
                err_console.print(f"comparison {c['id']}: waiting for {len(model)} batches")
            while c["status"] == "in_progress":
                time.sleep(poll)
                c = client.comparison(c["id"])
    if as_json:
        console.print_json(data=c)
    elif wait:
        _print(c)
    else:
        console.print(c["id"])
    if wait and c["status"] != "completed":
        raise typer.Exit(1)


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Comparisons, newest first."""
    with connect(url, api_key) as client:
        found = client.comparisons(limit)
    if as_json:
        console.print_json(data=found)
        return
    table = Table()
    for column in ("id", "status", "models", "requests"):
        table.add_column(column, overflow="fold")
    for c in found:
        total = max((r["request_counts"]["total"] for r in c["runs"]), default=0)
        table.add_row(c["id"], c["status"], ", ".join(c["models"]), str(total))
    console.print(table)


@app.command("show")
def show(
    comparison_id: Annotated[str, typer.Argument(help="The comparison's id")],
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Each model's run, the agreement between their answers and the picks so far."""
    with connect(url, api_key) as client:
        c = client.comparison(comparison_id)
    if as_json:
        console.print_json(data=c)
    else:
        _print(c)


@app.command("export")
def export(
    comparison_id: Annotated[str, typer.Argument(help="The comparison's id")],
    out: Annotated[Path | None, typer.Option(help="Also download the file here")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """The picks as OpenAI preference fine-tuning JSONL (a File of purpose fine-tune);
    prints its id."""
    with connect(url, api_key) as client:
        done = client.export_preferences(comparison_id)
        if out is not None:
            client.download(done["file_id"], out)
    console.print(done["file_id"])
    err_console.print(f"{done['count']} preference pairs ({done['skipped']} requests skipped)")
