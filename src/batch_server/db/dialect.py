"""The statements that differ between SQLite and PostgreSQL, in one place: callers build
portable queries and let these add what the database in use needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session

S = TypeVar("S", bound=Select[Any])


def is_sqlite(s: Session) -> bool:
    return s.get_bind().dialect.name == "sqlite"


def skip_locked(s: Session, query: S, of: Any = None) -> S:
    """``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent claimers pass each other's
    rows by; nothing on SQLite, where every write transaction holds the one write lock."""
    if is_sqlite(s):
        return query
    return query.with_for_update(of=of, skip_locked=True)


def upsert(
    s: Session,
    table: type[DeclarativeBase] | Table,
    values: Mapping[str, Any],
    keys: Sequence[str],
    updates: Callable[[Any], Mapping[str, Any | ColumnElement[Any]]] | None = None,
) -> None:
    """Insert ``values``, or update the row with the same ``keys``: with ``updates``
    (given the ``excluded`` row: the values that would have been inserted), else with
    every value that is not a key."""
    dialect: Any = sqlite if is_sqlite(s) else postgresql
    stmt = dialect.insert(table).values(**values)
    set_ = (
        dict(updates(stmt.excluded))
        if updates is not None
        else {k: v for k, v in values.items() if k not in keys}
    )
    s.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=set_))


def insert_if_absent(
    s: Session, table: type[DeclarativeBase] | Table, values: Mapping[str, Any], keys: Sequence[str]
) -> bool:
    """Insert ``values`` unless a row with the same ``keys`` exists; ``True`` if inserted."""
    dialect: Any = sqlite if is_sqlite(s) else postgresql
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys))
    result = s.execute(stmt)
    return bool(getattr(result, "rowcount", 0))
