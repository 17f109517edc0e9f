"""Lists: keyset pagination as OpenAI's lists page (``after`` an object's id, newest
first), and the tenant scope a list is read in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from batch_server.errors import NotFound

# A tenant's view of a query (``Principal.scoper``); the dashboard sees everything.
Scope = Callable[[Select[Any]], Select[Any]]


def everything(query: Select[Any]) -> Select[Any]:
    return query


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
