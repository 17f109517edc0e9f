"""Between work units and the engine: input lines become engine requests, engine results
become stored result lines (or the error lines that stand in for them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batch_server import ids
from batch_server.engines.base import EngineFailure, EngineRequest, EngineResult
from batch_server.errors import error_body
from batch_server.jobs.queue import Claim, Result
from batch_server.jobs.validation import iter_lines
from batch_server.openai_types import output_line
from batch_server.plugins.manager import PluginError, Plugins
from batch_server.plugins.results import build_body
from batch_server.storage import FileStore


@dataclass
class Prepared:
    """A request read from the input: its template's name for a templated line, and why
    its template could not build it (it then fails alone, without the engine)."""

    request: EngineRequest
    template: str | None = None
    failure: PluginError | None = None


def read_requests(
    store: FileStore, claim: Claim, plugins: Plugins | None = None
) -> Iterator[Prepared]:
    """The unit's requests, read from its slice of the input file (a templated line's
    body built by its template now)."""
    with store.open(claim.input_file_id) as fh:
        for offset, line in enumerate(iter_lines(fh, claim.byte_start)):
            if offset >= claim.request_count or line.byte_start >= claim.byte_end:
                break
            obj = json.loads(line.raw)
            index, custom_id = claim.first_request + offset, obj["custom_id"]
            if "template" not in obj:
                yield Prepared(EngineRequest(index, custom_id, claim.endpoint, obj["body"]))
                continue
            try:
                if plugins is None:
                    raise PluginError("templates are not available here", "template_not_found")
                name, body = build_body(plugins, obj)
            except PluginError as exc:
                yield Prepared(EngineRequest(index, custom_id, claim.endpoint, {}), None, exc)
                continue
            yield Prepared(EngineRequest(index, custom_id, claim.endpoint, body), name)


def template_failed(index: int, exc: PluginError) -> EngineResult:
    """The result of a templated request whose template could not build it."""
    status = 500 if exc.code == "plugin_error" else 400
    kind = "server_error" if status == 500 else "invalid_request_error"
    return EngineResult(index, status, error_body(str(exc)[:2000], kind, code=exc.code))


def to_result(result: EngineResult, custom_id: str) -> Result:
    """The line to store for a finished request, with its token counts."""
    line = output_line(
        custom_id, result.status_code, result.body, ids.batch_request_id(), ids.request_id()
    )
    use: dict[str, Any] = (result.body.get("usage") or {}) if result.ok else {}
    if "input_tokens" in use:  # a /v1/responses response: the same counts, other names
        use = {
            "prompt_tokens": use["input_tokens"],
            "completion_tokens": use.get("output_tokens"),
            "prompt_tokens_details": use.get("input_tokens_details"),
        }
    details = use.get("prompt_tokens_details") or {}
    error = result.body.get("error") if not result.ok else None
    code = error.get("code") if isinstance(error, dict) else None
    payload = json.dumps(line, ensure_ascii=False)
    if not payload.isascii():
        try:
            payload.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: stored escaped, as JSON allows
            payload = json.dumps(line)
    return Result(
        request_index=result.index,
        is_error=not result.ok,
        error_code=None if result.ok else str(code or result.status_code),
        payload=payload,
        input_tokens=int(use.get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        output_tokens=int(use.get("completion_tokens") or 0),
    )


def crashed(index: int, exc: Exception) -> EngineResult:
    """The result of a request the engine failed on (its process died, most often)."""
    return EngineResult(
        index,
        500,
        error_body(
            f"The engine failed while running this request, which was failed alone: "
            f"{engine_error(exc)}"[:2000],
            "server_error",
            code="engine_crashed",
        ),
    )


def unstorable(result: Result, exc: Exception) -> Result:
    """An error line in place of a result the database refused."""
    line = json.loads(result.payload)
    body = error_body(
        f"The result of this request could not be stored: {type(exc).__name__}: {exc}"[:2000],
        "server_error",
        code="result_not_storable",
    )
    line["response"] = {
        "status_code": 500,
        "request_id": line["response"]["request_id"],
        "body": body,
    }
    return Result(result.request_index, True, json.dumps(line), "result_not_storable")


def engine_error(exc: BaseException) -> str:
    """The message stored (and shown in the batch's errors) for an engine failure."""
    return str(exc) if isinstance(exc, EngineFailure) else f"{type(exc).__name__}: {exc}"
