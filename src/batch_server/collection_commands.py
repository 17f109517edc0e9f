"""CLI commands for collections and their exports, over HTTP like the other client
commands: ``export COLLECTION --format F`` (create the export, download its File, print
its id and path) and ``collections list | create | add``. COLLECTION is an id or a name."""

from __future__ import annotations

from datetime import datetime
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

FORMATS = ("openai-finetune-jsonl", "few-shot-json", "few-shot-prompt", "csv", "parquet")


def _labels(value: str | None) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def export(
    collection: Annotated[str, typer.Argument(help="Collection id or name")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}")],
    version: Annotated[int | None, typer.Option(help="Version (default: the latest)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to save it")] = None,
    labels: Annotated[str | None, typer.Option(help="Only these labels: golden,fixed")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Few-shot: token budget")] = None,
    diverse: Annotated[bool, typer.Option(help="Few-shot: drop near-identical prompts")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Export a collection's version as a File, download it, print its id and path."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"expected one of {', '.join(FORMATS)}", param_hint="--format")
    options: dict[str, Any] = {"diverse": diverse}
    if labels:
        options["labels"] = _labels(labels)
    if token_budget is not None:
        options["token_budget"] = token_budget
    with connect(url, api_key) as client:
        found = client.collection(collection)
        done = client.export(found["id"], {"format": fmt, "version": version, "options": options})
        dest = out or Path(done["filename"])
        client.download(done["file_id"], dest)
        err_console.print(
            f"{found['name']} v{done['version']}: {done['count']} examples "
            f"({done['skipped']} left out), {done['bytes']} bytes"
        )
        console.print(f"{done['file_id']} {dest}", soft_wrap=True)


collections_app = typer.Typer(help="Collections of annotated examples: list, create, add.")


@collections_app.command("list")
def list_collections(
    limit: int = 20, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """The caller's collections, newest first."""
    with connect(url, api_key) as client:
        data = client.collections(limit)
    if as_json:
        console.print_json(data=data)
        return
    table = Table("id", "name", "version", "updated", "description")
    for c in data:
        when = datetime.fromtimestamp(c["updated_at"]).strftime("%Y-%m-%d %H:%M")
        table.add_row(c["id"], c["name"], str(c["version"]), when, c.get("description") or "")
    console.print(table)


@collections_app.command("create")
def create_collection(
    name: str,
    description: Annotated[str | None, typer.Option(help="What it is for")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Create an empty collection; prints its id."""
    with connect(url, api_key) as client:
        console.print(client.create_collection(name, description)["id"])


@collections_app.command("add")
def add_version(
    collection: Annotated[str, typer.Argument(help="Collection id or name")],
    batch_ids: Annotated[list[str], typer.Argument(help="Batches to add from")],
    labels: Annotated[str, typer.Option(help="Labels to take")] = "golden,fixed",
    base: Annotated[str, typer.Option(help="'latest', a version number, or 'none'")] = "latest",
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Build the next version from ``base`` plus the batches' requests with these labels."""
    rule = {
        "add": [{"batch_id": b, "labels": _labels(labels)} for b in batch_ids],
        "base": None if base == "none" else int(base) if base.isdigit() else base,
    }
    with connect(url, api_key) as client:
        found = client.collection(collection)
        v = client.add_version(found["id"], rule)
    console.print(f"{found['name']} v{v['version']}: {v['count']} items ({v['stats']})")
