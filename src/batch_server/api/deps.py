"""Shared request helpers: the application context and list pagination."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Select
from sqlalchemy.orm import Session

from batch_server.app_context import AppContext
from batch_server.errors import APIError, NotFound


def context(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(context)]


def check_limit(limit: int, maximum: int) -> int:
    if not 1 <= limit <= maximum:
        raise APIError(
            f"'limit' must be between 1 and {maximum}", param="limit", code="invalid_value"
        )
    return limit


def paginate(
    session: Session,
    query: Select[Any],
    model: Any,
    after: str | None,
    limit: int,
    descending: bool = True,
    kind: str = "object",
) -> tuple[list[Any], bool]:
    """Keyset pagination on the model's ``seq`` column; ``after`` is an object id that
    ``query`` itself could return (so another tenant's id is not a cursor)."""
    if after:
        cursor = session.execute(
            query.with_only_columns(model.seq).where(model.id == after)
        ).scalar()
        if cursor is None:
            raise NotFound(kind, after, param="after")
        query = query.where(model.seq < cursor if descending else model.seq > cursor)
    query = query.order_by(model.seq.desc() if descending else model.seq.asc()).limit(limit + 1)
    rows = list(session.execute(query).scalars())
    return rows[:limit], len(rows) > limit
