"""What plugins do to one request and its result: a templated line's body built from its
record, its input checked at validation, the answer parsed into fields (checked against
the template's output schema) and rated, and a result rendered as an HTML fragment. Every
call into a plugin is guarded: its exception becomes a :class:`PluginError` naming it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import jsonschema
from markupsafe import Markup, escape

from batch_server.curation.texts import answer_text
from batch_server.plugins.manager import PluginError, Plugins

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What is stored with a result beside its line (the ``results`` table's columns)."""

    fields: dict[str, Any] | None = None
    plugin_error: str | None = None
    ratings: dict[str, Any] | None = None


def guarded(plugin: str, what: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except Exception as exc:
        raise PluginError(f"plugin {plugin}: {what}: {type(exc).__name__}: {exc}") from exc


def guarded_iter(plugin: str, what: str, items: Iterator[T]) -> Iterator[T]:
    """``items`` (made by a plugin) with an exception while making them named."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as exc:
            raise PluginError(f"plugin {plugin}: {what}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(item, bytes | bytearray):
            raise PluginError(f"plugin {plugin}: {what}: wrote a {type(item).__name__}")
        yield item


def check_input(plugins: Plugins, name: Any, record: Any) -> PluginError | None:
    """Why a templated line cannot run (its template missing or disabled, its input not a
    JSON object or not valid for the template), or ``None``."""
    if not isinstance(name, str):
        return PluginError("'template' must be a string", "invalid_value")
    if not isinstance(record, dict):
        return PluginError("'input' must be a JSON object (the template's record)", "invalid_input")
    try:
        plugin, template = plugins.template(name)
        validator = guarded(plugin, "input_schema", _validator, json.dumps(template.input_schema))
    except PluginError as exc:
        return exc
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    except RecursionError:
        return PluginError("input is nested too deeply", "invalid_input")
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(the record)"
    return PluginError(
        f"input does not match the input schema of template '{name}' at {where}: {error.message}"[
            :1000
        ],
        "invalid_input",
    )


@lru_cache(maxsize=256)
def _validator(schema: str) -> Any:
    value = json.loads(schema)
    cls = jsonschema.validators.validator_for(value)
    cls.check_schema(value)
    return cls(value)


def build_body(plugins: Plugins, line: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(template name, request body)`` of a templated line: the template's body with the
    line's ``body`` (if any) laid over it. Raises :class:`PluginError`."""
    name = line["template"]
    plugin, template = plugins.template(name)
    body = guarded(plugin, f"template {name}", template.build, line.get("input"))
    if not isinstance(body, dict):
        raise PluginError(f"plugin {plugin}: template {name} built a {type(body).__name__}")
    overrides = line.get("body")
    return name, {**body, **(overrides if isinstance(overrides, dict) else {})}


def annotate(plugins: Plugins, name: str, response: dict[str, Any]) -> Outcome:
    """The fields of an answer to template ``name`` and their ratings; a failure is kept
    as ``plugin_error`` (never an exception)."""
    try:
        plugin, template = plugins.template(name)
        text = answer_text(response)
        fields = plugins.call(
            plugin, "batch_server_parse", template=template, response=response, text=text
        )
        if fields is None:
            fields = json_object(text)
            if fields is None:
                raise PluginError(
                    f"plugin {plugin}: template {name}: the answer is not a JSON object",
                    "unparsed",
                )
        if not isinstance(fields, dict):
            raise PluginError(f"plugin {plugin}: parse returned a {type(fields).__name__}")
        if template.output_schema is not None:
            validator = guarded(
                plugin, "output_schema", _validator, json.dumps(template.output_schema)
            )
            error = jsonschema.exceptions.best_match(validator.iter_errors(fields))
            if error is not None:
                raise PluginError(
                    f"plugin {plugin}: the fields do not match the output schema of template "
                    f"{name}: {error.message}"[:1000],
                    "invalid_fields",
                )
    except PluginError as exc:
        return Outcome(plugin_error=str(exc)[:2000])
    ratings: dict[str, Any] = {}
    errors = []
    for owner, rating in plugins.enabled_ratings(name):
        try:
            value = guarded(owner, f"rating {rating.name}", rating.rate, fields, response)
            json.dumps(value)
        except (PluginError, TypeError, ValueError) as exc:
            errors.append(str(exc))
            continue
        if value is not None:
            ratings[rating.name] = {"value": value, "plugin": owner}
    return Outcome(fields, "; ".join(errors)[:2000] or None, ratings or None)


def json_object(text: str | None) -> dict[str, Any] | None:
    """The answer as a JSON object (optionally in a ```json fence), else ``None``."""
    stripped = (text or "").strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def render(
    plugins: Plugins,
    name: str | None,
    fields: dict[str, Any] | None,
    response: dict[str, Any] | None,
    plugin_error: str | None,
) -> Markup | None:
    """The HTML fragment for a result of template ``name`` (``None`` for a request without
    one): the plugin's renderer, escaped unless it returned ``Markup``; the default view
    when it has none; an error box naming the plugin when it raised."""
    if name is None or (fields is None and plugin_error is None and response is None):
        return None
    found = plugins.templates.get(name)
    html: Any = None
    if found is not None and plugins.enabled(found[0]):
        plugin, template = found
        try:
            html = plugins.call(
                plugin,
                "batch_server_render",
                template=template,
                fields=fields,
                response=response,
                plugin_error=plugin_error,
            )
        except PluginError as exc:
            return Markup('<div class="plugin-error" role="alert">{}</div>').format(str(exc))
    if html is None:
        return default_view(fields, plugin_error)
    return html if isinstance(html, Markup) else escape(str(html))


def default_view(fields: dict[str, Any] | None, plugin_error: str | None) -> Markup:
    """The fields as a table (values that are not strings as JSON), and the error."""
    rows = Markup("").join(
        Markup('<tr><th scope="row">{}</th><td>{}</td></tr>').format(
            k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        )
        for k, v in (fields or {}).items()
    )
    out = Markup('<table class="plugin-fields">{}</table>').format(rows) if rows else Markup("")
    if plugin_error:
        out += Markup('<p class="plugin-error">{}</p>').format(plugin_error)
    return out
