"""Shared request helpers: the application context, parameter errors and list pagination."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import BaseModel

from batch_server.api.guards import JSONResponse
from batch_server.app_context import AppContext
from batch_server.errors import APIError
from batch_server.jobs.validation import strict_json


def app_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def context(request: Request) -> AppContext:
    """:func:`app_context` as a dependency: async, as FastAPI runs a plain function in a
    worker thread (a hop that costs more than this)."""
    return app_context(request)


Ctx = Annotated[AppContext, Depends(context)]


# Bounds of integer query parameters: request offsets index 32-bit database columns;
# times are Unix seconds up to the end of year 9999.
MAX_OFFSET = 2**31 - 1
MAX_TIMESTAMP = 253_402_300_799
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
Timestamp = Annotated[int | None, Query(ge=0, le=MAX_TIMESTAMP)]

# Pydantic error types of a value outside its bounds (too large, too long, not one of the
# allowed values): a 400, as OpenAI answers. A value of the wrong type in a query or path
# parameter stays FastAPI's 422.
OUT_OF_RANGE = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
        "string_too_short",
        "string_too_long",
        "too_short",
        "too_long",
        "literal_error",
        "enum",
    }
)


def invalid_parameter(err: Mapping[str, Any], skip: int = 0, type_status: int = 400) -> APIError:
    """OpenAI's error for one pydantic error: ``param`` is the top-level parameter, the
    message names the full path (``output_expires_after.seconds: …``). ``skip`` drops the
    leading parts of the location (FastAPI's "query", "path", "body")."""
    loc = [str(p) for p in err["loc"][skip:]] if err["type"] != "json_invalid" else []
    path = ".".join(loc)
    return APIError(
        f"{path}: {err['msg']}" if path else str(err["msg"]),
        param=loc[0] if loc else None,
        code="missing_required_parameter" if err["type"] == "missing" else "invalid_value",
        status_code=400 if err["type"] in OUT_OF_RANGE else type_status,
    )


def check_limit(limit: int, maximum: int) -> int:
    if not 1 <= limit <= maximum:
        raise APIError(
            f"'limit' must be between 1 and {maximum}", param="limit", code="invalid_value"
        )
    return limit


def verbatim(obj: BaseModel) -> JSONResponse:
    """``obj`` rendered by the app's JSON response rather than by pydantic's JSON mode, for
    objects that carry JSON read from input files or engines as it is: pydantic cannot
    write a key holding a lone surrogate (an input line may hold ``{"\\ud800": …}``), the
    app's response sends it as its JSON escape. The route declares ``response_model``."""
    return JSONResponse(obj.model_dump())


async def json_payload(request: Request) -> Any:
    """The request's JSON body (strict JSON), or OpenAI's ``invalid_json`` error."""
    try:
        return strict_json(await request.body())
    except (ValueError, RecursionError) as exc:
        raise APIError(
            "The request body is not valid UTF-8 JSON (or is nested too deeply)",
            code="invalid_json",
        ) from exc
