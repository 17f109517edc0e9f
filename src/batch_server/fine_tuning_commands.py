"""CLI commands for fine-tuning jobs, over HTTP like the other client commands:
``fine-tune create FILE --model M [--wait]``, ``fine-tune list``, ``show JOB``,
``events JOB`` and ``cancel JOB``. See docs/fine-tuning.md."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from batch_server.client import Client
from batch_server.client_commands import (
    DEFAULT_URL,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    connect,
    console,
    err_console,
)

ENDED = ("succeeded", "failed", "cancelled")

app = typer.Typer(
    help="Fine-tuning jobs: create, list, show, events, cancel.", no_args_is_help=True
)


def _auto(value: str | None) -> int | float | str | None:
    if value is None or value == "auto":
        return value
    return float(value) if "." in value else int(value)


def _summary(job: dict[str, Any]) -> str:
    steps = f"{job.get('step', 0)}/{job.get('total_steps') or '?'} steps saved"
    line = f"{job['id']} {job['status']} ({steps})"
    if job.get("fine_tuned_model"):
        line += f" → {job['fine_tuned_model']}"
    if job.get("error"):
        line += f": {job['error']['code']}: {job['error']['message']}"
    return line


def _follow(client: Client, job_id: str, poll: float) -> dict[str, Any]:
    """Print each new event until the job has ended."""
    seen: set[str] = set()
    while True:
        job = client.fine_tuning_job(job_id)
        for event in reversed(client.fine_tuning_events(job_id, 100)):
            if event["id"] not in seen:
                seen.add(event["id"])
                err_console.print(event["message"])
        if job["status"] in ENDED:
            return job
        time.sleep(poll)


@app.command("create")
def create(
    training_file: Annotated[
        Path, typer.Argument(help="A JSONL file of chat examples", exists=True)
    ],
    model: Annotated[str, typer.Option(help="The registry model to fine-tune")],
    validation_file: Annotated[Path | None, typer.Option(exists=True)] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name")] = None,
    epochs: Annotated[str | None, typer.Option(help="n_epochs (a number or auto)")] = None,
    batch_size: Annotated[str | None, typer.Option(help="batch_size (a number or auto)")] = None,
    learning_rate_multiplier: Annotated[str | None, typer.Option(help="(a number or auto)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job's events until it ends")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --wait")] = 2.0,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Upload the file(s) (purpose fine-tune) and create a job; prints its id (with --wait,
    the fine-tuned model's name once it has succeeded)."""
    hyper = {
        k: _auto(v)
        for k, v in (
            ("n_epochs", epochs),
            ("batch_size", batch_size),
            ("learning_rate_multiplier", learning_rate_multiplier),
        )
        if v is not None
    }
    with connect(url, api_key) as client:
        body: dict[str, Any] = {
            "model": model,
            "training_file": client.upload(training_file, "fine-tune")["id"],
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }
        if validation_file is not None:
            body["validation_file"] = client.upload(validation_file, "fine-tune")["id"]
        if suffix:
            body["suffix"] = suffix
        if seed is not None:
            body["seed"] = seed
        job = client.create_fine_tuning_job(body)
        console.print(job["id"])
        if wait:
            job = _follow(client, job["id"], poll)
            err_console.print(_summary(job))
            if job["status"] != "succeeded":
                raise typer.Exit(1)
            console.print(job["fine_tuned_model"])


@app.command("list")
def list_jobs(
    limit: int = 20, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """The caller's jobs, newest first."""
    with connect(url, api_key) as client:
        data = client.fine_tuning_jobs(limit)
    if as_json:
        console.print_json(data=data)
        return
    table = Table("id", "status", "model", "steps", "created", "fine-tuned model")
    for j in data:
        when = datetime.fromtimestamp(j["created_at"]).strftime("%Y-%m-%d %H:%M")
        steps = f"{j.get('step', 0)}/{j.get('total_steps') or '?'}"
        table.add_row(j["id"], j["status"], j["model"], steps, when, j["fine_tuned_model"] or "")
    console.print(table)


@app.command("show")
def show(
    job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """One job."""
    with connect(url, api_key) as client:
        job = client.fine_tuning_job(job_id)
    if as_json:
        console.print_json(data=job)
    else:
        console.print(_summary(job), soft_wrap=True)


@app.command("events")
def events(
    job_id: str,
    limit: int = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """The job's events, oldest first (the loss of every step)."""
    with connect(url, api_key) as client:
        if follow:
            _follow(client, job_id, 2.0)
            return
        for event in reversed(client.fine_tuning_events(job_id, limit)):
            when = datetime.fromtimestamp(event["created_at"]).strftime("%H:%M:%S")
            console.print(f"{when} {event['level']:5} {event['message']}", soft_wrap=True)


@app.command("cancel")
def cancel(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Cancel a job (a running one stops after its current step)."""
    with connect(url, api_key) as client:
        console.print(_summary(client.cancel_fine_tuning_job(job_id)), soft_wrap=True)
