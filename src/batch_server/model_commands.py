"""``batch-server models add|show|test|remove``: the model registry's admin endpoints
(``/v1/admin/models``) over HTTP, with an admin key (``--api-key`` or
``BATCH_SERVER_API_KEY``). ``models`` alone lists the models, ``models prepare`` makes a
local copy (see :mod:`batch_server.cli`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

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

WAIT_SECONDS = 1800  # a vLLM model may take minutes to load
POLL_SECONDS = 30  # the server's longest wait


def _path(model_id: str) -> str:
    return f"/v1/admin/models/{quote(model_id, safe='/')}"


def _engine_args(items: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that reads as JSON (a number, true, a list) is that value."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--engine-arg")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def _figure(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}"


def _print_test(test: dict[str, Any]) -> None:
    console.print(
        f"test [bold]{test['id']}[/bold] of {test['model']}: [bold]{test['status']}[/bold]"
    )
    if test.get("error"):
        err_console.print(f"  error: {test['error']}")
    if test["status"] in ("succeeded", "failed"):
        memory = test.get("memory_bytes")
        console.print(
            f"  load {_figure(test.get('load_seconds'))}, memory "
            f"{f'{memory / 2**20:.0f} MiB' if memory else '-'}, first token "
            f"{_figure(test.get('time_to_first_token'))}, request "
            f"{_figure(test.get('request_seconds'))}, tokens "
            f"{test.get('prompt_tokens') or '-'}/{test.get('output_tokens') or '-'}"
        )
        if test.get("output"):
            console.print(f"  output: {test['output']}")


def _print_model(model: dict[str, Any]) -> None:
    spec = model["spec"]
    table = Table(show_header=False, box=None)
    rows = [
        ("id", model["id"]),
        ("origin", model["origin"]),
        ("status", model["status"]),
        ("reason", model.get("status_reason") or "-"),
        ("engine", spec["engine"]),
        ("source", spec["source"] or "-"),
        ("engine args", json.dumps(spec["engine_args"])),
        ("aliases", ", ".join(spec["aliases"]) or "-"),
        ("unit size", str(spec["unit_size"] or "default")),
        ("max memory", f"{spec['max_memory_mb']} MiB" if spec["max_memory_mb"] else "-"),
        ("endpoints", ", ".join(spec["endpoints"] or []) or "not declared"),
        ("chat template", "set" if spec["chat_template"] else "the weights' own"),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)
    if model.get("latest_test"):
        _print_test(model["latest_test"])


def _test(client: Client, model_id: str, wait: bool) -> dict[str, Any]:
    """Ask for a test; with ``wait``, poll it (long polls of 30 s) until it ended."""
    params = {"wait": POLL_SECONDS} if wait else {}
    test = client._json("POST", f"{_path(model_id)}/test", params=params)
    deadline = time.monotonic() + WAIT_SECONDS
    while wait and test["status"] not in ("succeeded", "failed"):
        if time.monotonic() > deadline:
            err_console.print(f"the test has not ended after {WAIT_SECONDS} s")
            break
        test = client._json("GET", f"{_path(model_id)}/tests/{test['id']}", params=params)
    _print_test(test)
    return test


def add(
    model_id: Annotated[str, typer.Argument(metavar="ID", help="The new model's id")],
    engine: Annotated[str, typer.Option(help="llamacpp, vllm, openai or moderation")],
    source: Annotated[
        str | None, typer.Option(help="Local path of the weights, or package:MODULE/FILE")
    ] = None,
    engine_arg: Annotated[
        list[str] | None, typer.Option("--engine-arg", help="KEY=VALUE (repeatable)")
    ] = None,
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Repeatable")] = None,
    chat_template_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="A Jinja chat template to use"),
    ] = None,
    unit_size: Annotated[int | None, typer.Option(help="Requests per work unit")] = None,
    max_memory_mb: Annotated[int | None, typer.Option(help="Restart the engine above this")] = None,
    endpoint: Annotated[
        list[str] | None, typer.Option("--endpoint", help="A batch endpoint it serves")
    ] = None,
    test: Annotated[
        bool, typer.Option("--test", help="Test-load it and wait for the result")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a model to the server's registry (no restart); with --test, test-load it."""
    body: dict[str, Any] = {"id": model_id, "engine": engine}
    optional = {
        "source": source,
        "engine_args": _engine_args(engine_arg or []) or None,
        "aliases": alias or None,
        "chat_template": chat_template_file.read_text() if chat_template_file else None,
        "unit_size": unit_size,
        "max_memory_mb": max_memory_mb,
        "endpoints": endpoint or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    with connect(url, api_key) as client:
        model = client._json("POST", "/v1/admin/models", json=body)
        if as_json:
            console.print_json(data=model)
        else:
            console.print(f"added [bold]{model['id']}[/bold] ({model['spec']['engine']})")
        if test and _test(client, model["id"], wait=True)["status"] != "succeeded":
            raise typer.Exit(1)


def show(
    model_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's registry entry, origin, test status and latest test."""
    with connect(url, api_key) as client:
        model = client._json("GET", _path(model_id))
    if as_json:
        console.print_json(data=model)
    else:
        _print_model(model)


def test(
    model_id: Annotated[str, typer.Argument(metavar="ID")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Test-load a model on a worker: its load time, memory and one request."""
    with connect(url, api_key) as client:
        result = _test(client, model_id, wait)
    if wait and result["status"] != "succeeded":
        raise typer.Exit(1)


def remove(
    model_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Remove a model added over the API (not while a batch that has not ended uses it)."""
    with connect(url, api_key) as client:
        client._json("DELETE", _path(model_id))
    console.print(f"removed {model_id}")


COMMANDS: dict[str, Callable[..., None]] = {
    "add": add,
    "show": show,
    "test": test,
    "remove": remove,
}
