"""``batch-server plugins list|enable|disable``: the plugins API over HTTP (enable and
disable with an admin key: ``--api-key`` or ``BATCH_SERVER_API_KEY``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from batch_server.client_commands import (
    DEFAULT_URL,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    connect,
    console,
)

app = typer.Typer(help="Plugins: list them, switch them on or off (docs/plugins.md).")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The plugin's name")]


def _state(plugin: dict[str, Any]) -> str:
    if not plugin["loaded"]:
        return "[red]failed to load[/red]"
    return "enabled" if plugin["enabled"] else "[yellow]disabled[/yellow]"


@app.command("list")
def list_plugins(
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """The server's plugins: version, state, templates, exporters, ratings, errors."""
    with connect(url, api_key) as client:
        found = client._json("GET", "/v1/plugins")
    if as_json:
        console.print_json(data=found)
        return
    table = Table()
    table.add_column("name", overflow="fold", min_width=12)  # never cut: enable/disable take it
    for column in ("version", "source", "state", "templates", "exporters", "error"):
        table.add_column(column, overflow="fold")
    for p in found["data"]:
        table.add_row(
            p["name"],
            p["version"] or "-",
            p["source"],
            _state(p),
            ", ".join(t["name"] for t in p["templates"]) or "-",
            ", ".join(p["exporters"]) or "-",
            p["error"] or "",
        )
    console.print(table)


def _switch(name: str, action: str, url: str, api_key: str | None) -> None:
    with connect(url, api_key) as client:
        plugin = client._json("POST", f"/v1/admin/plugins/{quote(name, safe='')}/{action}")
    console.print(f"{plugin['name']}: {_state(plugin)}")


@app.command()
def enable(name: NameArg, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Switch a plugin on for every worker and API replica (within about a second)."""
    _switch(name, "enable", url, api_key)


@app.command()
def disable(name: NameArg, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Switch a plugin off for every worker and API replica (within about a second)."""
    _switch(name, "disable", url, api_key)
