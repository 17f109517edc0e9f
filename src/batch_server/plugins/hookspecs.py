"""The hooks a plugin may implement (pluggy, project name ``batch_server``). A plugin is a
module with functions named like these, decorated with
:data:`~batch_server.plugins.hookimpl`; it may take any subset of a hook's arguments.
docs/plugins.md documents each one with an example."""

from __future__ import annotations

from typing import Any

import pluggy

from batch_server.plugins.types import Exporter, Rating, Template

hookspec = pluggy.HookspecMarker("batch_server")
hookimpl = pluggy.HookimplMarker("batch_server")


@hookspec
def batch_server_templates() -> list[Template]:  # type: ignore[empty-body]
    """The templates this plugin offers. A batch line ``{"custom_id": …, "method":
    "POST", "url": …, "template": NAME, "input": {record}}`` is turned into a request by
    the template called NAME. Called once, when the plugin is loaded."""


@hookspec
def batch_server_parse(
    template: Template, response: dict[str, Any], text: str | None
) -> dict[str, Any] | None:
    """The fields of an answer to one of this plugin's templates: ``response`` is the
    response body, ``text`` the answer's text. Return ``None`` to leave it to the default
    (the answer parsed as a JSON object). The fields are checked against the template's
    ``output_schema``; an exception or a mismatch is stored as the result's
    ``plugin_error``, and the request still succeeds."""


@hookspec
def batch_server_render(
    template: Template,
    fields: dict[str, Any] | None,
    response: dict[str, Any] | None,
    plugin_error: str | None,
) -> str | None:
    """An HTML fragment showing a result of one of this plugin's templates in the review
    and batch pages. A plain ``str`` is escaped; return ``markupsafe.Markup`` for HTML
    (escape what you put in it). ``None``: the default view (the fields as a table)."""


@hookspec
def batch_server_exporters() -> list[Exporter]:  # type: ignore[empty-body]
    """Extra export formats of collections (``POST /v1/collections/{id}/exports`` with
    ``format`` set to the exporter's name). Called once, when the plugin is loaded."""


@hookspec
def batch_server_ratings() -> list[Rating]:  # type: ignore[empty-body]
    """Automatic ratings of results with fields, stored with each result under the
    rating's name. Called once, when the plugin is loaded."""
