"""``batch-server label-studio export|import``: the Label Studio round trip from the
command line, through a (possibly remote) server's API (see docs/label-studio.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from batch_server.client_commands import DEFAULT_URL, JsonOpt, KeyOpt, UrlOpt, connect, console

app = typer.Typer(
    help="Send a batch's answers to Label Studio for review and bring the annotations back.",
    no_args_is_help=True,
)

ProjectOpt = Annotated[
    int | None, typer.Option("--project", help="Label Studio project id (export: default new)")
]


@app.command("export")
def export(
    batch_id: str,
    project: ProjectOpt = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="Only requests with this label here (none: unreviewed)"),
    ] = None,
    custom_id: Annotated[list[str] | None, typer.Option("--custom-id")] = None,
    failed: Annotated[
        bool | None, typer.Option("--failed/--answered", help="Only failed / answered requests")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many tasks")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the batch's requests to a Label Studio project as tasks."""
    flt = {"labels": label, "custom_ids": custom_id, "failed": failed, "limit": limit}
    body: dict[str, Any] = {"filter": {k: v for k, v in flt.items() if v is not None}}
    if project is not None:
        body["project_id"] = project
    with connect(url, api_key) as client:
        out = client._json("POST", f"/v1/batches/{batch_id}/label-studio/export", json=body)
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(
        f"{out['tasks_created']} tasks sent to project {out['project_id']} "
        f"({out['already_sent']} were there already): {out['project_url']}"
    )


@app.command("import")
def import_(
    batch_id: str,
    project: ProjectOpt = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring the annotations made in Label Studio back as annotations."""
    body = {} if project is None else {"project_id": project}
    with connect(url, api_key) as client:
        out = client._json("POST", f"/v1/batches/{batch_id}/label-studio/import", json=body)
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(
        f"{out['imported']} imported, {out['unchanged']} unchanged, "
        f"{out['not_annotated']} not annotated yet, {out['skipped']} skipped"
    )
    for reason, count in out["skipped_reasons"].items():
        console.print(f"  skipped {count}: {reason}")
