"""Streaming validation of a batch input file.

Reads the file once, line by line, and either returns the work units to run or the list
of errors (with 1-based line numbers) that fail the batch. Memory holds one line plus the
set of custom_ids seen.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from batch_server import limits
from batch_server.config import Settings
from batch_server.jobs import lifecycle
from batch_server.jobs.manager import JobManager
from batch_server.jobs.queue import describe_error
from batch_server.models.registry import Registry
from batch_server.plugins.manager import PluginError, Plugins
from batch_server.plugins.results import check_input
from batch_server.statuses import BatchStatus
from batch_server.storage import FileStore

log = logging.getLogger(__name__)

# Batches whose model replaces the model each line names: a benchmark or a comparison
# runs a user's file on the model being measured.
MODEL_OVERRIDING_KINDS = ("benchmark", "comparison")


@dataclass
class Unit:
    index: int
    model: str
    first_request: int  # index of the first request (0-based, among request lines)
    request_count: int
    byte_start: int
    byte_end: int


@dataclass
class Validation:
    total: int = 0
    units: list[Unit] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    models: set[str] = field(default_factory=set)


@dataclass
class ParsedLine:
    line_no: int  # 1-based physical line number in the file
    byte_start: int
    byte_end: int
    raw: bytes


def iter_lines(fh: BinaryIO, start: int = 0, limit: int | None = None) -> Iterator[ParsedLine]:
    """Yield the non-blank lines of ``fh`` from byte ``start`` with their byte ranges.

    With ``limit``, no more than ``limit + 1`` bytes of a line are held: a longer line
    (a file with no newline at all, say) comes with only its start in ``raw`` (so
    ``len(raw) > limit`` tells it) and its whole byte range.
    """
    fh.seek(start)
    offset = start
    line_no = 0
    while raw := fh.readline(limit + 1) if limit else fh.readline():
        line_no += 1
        begin = offset
        offset += len(raw)
        if limit and len(raw) > limit and not raw.endswith(b"\n"):
            while rest := fh.readline(1 << 20):  # the rest of the line, never held
                offset += len(rest)
                if rest.endswith(b"\n"):
                    break
        if raw.strip():
            yield ParsedLine(line_no, begin, offset, raw)


def validate(
    fh: BinaryIO,
    *,
    endpoint: str,
    batch_model: str | None,
    aliases: dict[str, str],
    max_requests: int,
    unit_size: int,
    max_errors: int,
    model_unit_sizes: dict[str, int] | None = None,
    max_line_bytes: int = 4 * 1024 * 1024,
    model_endpoints: dict[str, frozenset[str]] | None = None,
    unavailable: dict[str, str] | None = None,
    override_model: bool = False,
    plugins: Plugins | None = None,
) -> Validation:
    """Check every line; a line that passes can be stored and run (its strings are valid
    Unicode, its model serves the batch's endpoint, its template is there and enabled and
    its ``input`` passes the template's input schema)."""
    result = Validation()
    seen: set[str] = set()
    current: Unit | None = None

    def error(code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(result.errors) < max_errors:
            result.errors.append({"code": code, "message": message, "param": param, "line": line})

    for pl in iter_lines(fh, limit=max_line_bytes):
        n = pl.line_no
        if len(pl.raw) > max_line_bytes:
            error(
                "line_too_long",
                f"Line {n} is {pl.byte_end - pl.byte_start} bytes long; the limit is "
                f"{max_line_bytes}.",
                n,
            )
            continue
        try:
            # strict UTF-8: Python's parser lets encoded surrogates (\xed\xa0\x80) pass
            obj = strict_json(pl.raw)
        except UnicodeDecodeError:
            error("invalid_encoding", f"Line {n} is not valid UTF-8.", n)
            continue
        except ValueError as exc:
            error("invalid_json_line", f"Line {n} is not valid JSON: {exc}.", n)
            continue
        except RecursionError:
            error("invalid_json_line", f"Line {n} is nested too deeply.", n)
            continue
        if not isinstance(obj, dict):
            error("invalid_json_line", f"Line {n} is not a JSON object.", n)
            continue
        if has_lone_surrogate(pl.raw, obj):
            error(
                "invalid_encoding",
                f"Line {n} has a string with a lone UTF-16 surrogate escape (such as "
                "\\ud800), which is not valid Unicode text.",
                n,
            )
            continue
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            error(
                "missing_required_parameter", f"Line {n} has no 'custom_id' string.", n, "custom_id"
            )
            continue
        if custom_id in seen:
            error(
                "duplicate_custom_id",
                f"Line {n}: custom_id '{custom_id[:200]}' appears more than once.",
                n,
                "custom_id",
            )
            continue
        seen.add(custom_id)
        if obj.get("method") != "POST":
            error("invalid_method", f"Line {n}: 'method' must be 'POST'.", n, "method")
            continue
        if obj.get("url") != endpoint:
            error(
                "mismatched_endpoint",
                f"Line {n}: 'url' {obj.get('url')!r} does not match the batch endpoint "
                f"'{endpoint}'.",
                n,
                "url",
            )
            continue
        body = obj.get("body")
        if "template" in obj:  # a record for a plugin's template; "body" may add to it
            problem = (
                check_input(plugins, obj["template"], obj.get("input"))
                if plugins is not None
                else PluginError("templates are not available here", "template_not_found")
            )
            if problem is not None:
                param = "input" if problem.code == "invalid_input" else "template"
                error(problem.code, f"Line {n}: {problem}.", n, param)
                continue
            body = {} if body is None else body
        if not isinstance(body, dict):
            error("invalid_body", f"Line {n}: 'body' must be a JSON object.", n, "body")
            continue
        if body.get("stream") not in (None, False):
            error(
                "invalid_value",
                f"Line {n}: 'stream' is not supported in a batch (responses are written to "
                "the output file).",
                n,
                "body.stream",
            )
            continue
        name = batch_model if override_model else (body.get("model") or batch_model)
        if name and not isinstance(name, str):
            error("invalid_value", f"Line {n}: 'body.model' must be a string.", n, "body.model")
            continue
        if not name:
            error(
                "missing_required_parameter",
                f"Line {n}: no model given (set body.model or the batch's model).",
                n,
                "body.model",
            )
            continue
        model = aliases.get(name)
        if model is None:
            error(
                "model_not_found",
                f"Line {n}: model '{name}' is not served here (see GET /v1/models).",
                n,
                "body.model",
            )
            continue
        if unavailable and model in unavailable:
            error(
                "model_unavailable",
                f"Line {n}: model '{name}' is unavailable: its test load failed: "
                f"{unavailable[model]}",
                n,
                "body.model",
            )
            continue
        served = (model_endpoints or {}).get(model)
        if served is not None and endpoint not in served:
            error(
                "unsupported_endpoint",
                f"Line {n}: model '{name}' does not serve {endpoint} (it serves "
                f"{', '.join(sorted(served))}).",
                n,
                "body.model",
            )
            continue
        result.total += 1
        if result.total > max_requests:
            error(
                "too_many_requests",
                f"The file has more than {max_requests} requests, the limit per batch.",
                n,
            )
            break
        if result.errors:
            continue  # keep scanning for errors, but build no units
        result.models.add(model)
        size = (model_unit_sizes or {}).get(model, unit_size)
        if current is None or current.model != model or current.request_count >= size:
            current = Unit(len(result.units), model, result.total - 1, 0, pl.byte_start, 0)
            result.units.append(current)
        current.request_count += 1
        current.byte_end = pl.byte_end

    if result.total == 0 and not result.errors:
        error("empty_file", "The input file has no requests.", None)
    if result.errors:
        result.units.clear()
    return result


def strict_json(data: bytes) -> Any:
    """Parse JSON as the standard has it: strict UTF-8 (Python's parser lets surrogates
    encoded as bytes pass), no NaN or Infinity, no number too large for a float (``1e999``,
    which Python makes infinite). Raises ``ValueError`` (``UnicodeDecodeError`` for bad
    bytes) or ``RecursionError``."""
    return json.loads(data.decode("utf-8"), parse_constant=_not_json, parse_float=_finite)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large a number")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def has_lone_surrogate(raw: bytes, obj: Any) -> bool:
    """Whether a parsed line holds a string with an unpaired surrogate (JSON lets one be
    written as an escape; it cannot be stored as text, in a database or a file). Only lines
    with a surrogate escape are checked in full."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_input(
    fh: BinaryIO,
    settings: Settings,
    registry: Registry,
    *,
    endpoint: str,
    model: str | None,
    max_requests: int,
    override_model: bool = False,
    plugins: Plugins | None = None,
) -> Validation:
    """Validate a batch input file with the server's settings: what a batch's validation
    step and the dry run (``POST /v1/batches/validate``) both do."""
    return validate(
        fh,
        endpoint=endpoint,
        batch_model=model,
        aliases=registry.aliases(),
        max_requests=max_requests,
        unit_size=settings.unit_size,
        max_errors=settings.max_validation_errors,
        model_unit_sizes=registry.unit_sizes(),
        max_line_bytes=settings.max_line_bytes,
        model_endpoints=registry.endpoints(),
        unavailable=registry.unavailable(),
        override_model=override_model,
        plugins=plugins,
    )


def validate_batch(
    jobs: JobManager,
    store: FileStore,
    settings: Settings,
    registry: Registry,
    batch_id: str,
    token: str,
    plugins: Plugins | None = None,
) -> BatchStatus:
    """The worker's validation step: validate the input file, then move the batch to
    ``in_progress`` with its work units, or to ``failed`` with the errors. A file that
    cannot be read is tried again with backoff, and after ``engine_max_attempts`` the batch
    fails (``input_unreadable``)."""
    with jobs.db.read() as s:
        batch = lifecycle.get_batch(s, batch_id)
        assert batch is not None
        max_requests = limits.for_owner(s, settings, batch.owner).max_requests_per_batch
    unchanged = BatchStatus(batch.status)
    try:
        with store.open(batch.input_file_id) as fh:
            result = validate_input(
                fh,
                settings,
                registry,
                endpoint=batch.endpoint,
                model=batch.model,
                max_requests=max_requests,
                override_model=batch.kind in MODEL_OVERRIDING_KINDS,
                plugins=plugins,
            )
    except Exception as exc:  # the storage, not the file's lines
        log.exception("could not read the input of %s", batch_id)
        error = describe_error(exc)
        failures = jobs.step_failed(batch_id, token, "validate_error", "validation", error)
        if failures is None or failures < jobs.max_attempts:
            return unchanged
        message = f"The input file could not be read ({failures} attempts): {error}"
        result = Validation(
            errors=[{"code": "input_unreadable", "message": message, "param": None, "line": None}]
        )
    if result.errors:
        failed = jobs.fail_validation(batch_id, token, result.errors)
        return BatchStatus.FAILED if failed else unchanged
    model = next(iter(result.models)) if len(result.models) == 1 else batch.model
    units = [
        {
            "index": u.index,
            "model": u.model,
            "first_request": u.first_request,
            "request_count": u.request_count,
            "byte_start": u.byte_start,
            "byte_end": u.byte_end,
            "attempts": 0,
            "engine_failures": 0,
        }
        for u in result.units
    ]
    message = f"validated: {result.total} requests in {len(result.units)} units"
    started = jobs.start_units(batch_id, token, result.total, model, units, message)
    return BatchStatus.IN_PROGRESS if started else unchanged
