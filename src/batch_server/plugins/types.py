"""What plugins hand to the server: templates, exporters and ratings (plain objects, so a
plugin needs nothing but these classes and :data:`~batch_server.plugins.hookimpl`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True)
class Template:
    """Turns a record (a batch line's ``input``) into a request body.

    ``build(record)`` returns the body (for ``/v1/chat/completions``: ``messages``, and
    usually ``response_format`` with ``output_schema``); ``input_schema`` is the JSON
    schema the record must pass (checked at validation, with the line's number);
    ``output_schema`` the JSON schema the parsed fields must pass."""

    name: str
    build: Callable[[Record], dict[str, Any]]
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] | None = None
    description: str = ""


@dataclass(frozen=True)
class Exporter:
    """An export format of collections, next to the built-in ones.

    ``write(examples)`` is given the version's examples (dicts, see docs/exports.md; a
    plugin's fields are under ``fields``, its ratings under ``ratings``) and returns the
    file's bytes, at once or as an iterable of chunks."""

    name: str
    write: Callable[[Iterator[Record]], bytes | Iterable[bytes]]
    suffix: str = ".txt"
    description: str = ""


@dataclass(frozen=True)
class Rating:
    """An automatic rating of a result with fields: ``rate(fields, response)`` returns a
    JSON value (``None``: no rating). ``templates`` limits it to results of those
    templates (empty: every templated result)."""

    name: str
    rate: Callable[[Record, dict[str, Any]], Any]
    templates: tuple[str, ...] = ()
    description: str = ""
