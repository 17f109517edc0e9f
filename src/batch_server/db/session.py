"""Creating the SQLAlchemy engine and sessions for SQLite or PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class Database:
    """One engine and two session factories: ``read()`` for plain reads and ``write()``
    for transactions that change rows (on SQLite these take the write lock up front with
    ``BEGIN IMMEDIATE`` so concurrent writers wait instead of failing); and ``single()``,
    a bare connection for one read statement on the hottest paths."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_engine(
                url, connect_args={"timeout": 60, "check_same_thread": False}
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(immediate=True), expire_on_commit=False
        )
        # One statement is atomic on its own: no BEGIN, no ROLLBACK (on SQLite the begin
        # hook below leaves it out; PostgreSQL's driver runs in autocommit mode).
        self._single = self.engine.execution_options(
            **({"no_begin": True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def single(self) -> Iterator[Connection]:
        """A pooled connection, outside any transaction, for one read statement."""
        with self._single.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        A check that a write depends on (the input file is not deleted, the file is not
        the input of a live batch) must read its rows inside this transaction with
        ``.with_for_update()``: PostgreSQL then locks them until the commit, and SQLite,
        where SQLAlchemy renders no ``FOR UPDATE``, already serializes every ``write()``
        with ``BEGIN IMMEDIATE``. Either way, two such transactions cannot both pass the
        check against the other's write."""
        with self._write() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def rowcount(result: Result[Any]) -> int:
    """The number of rows an UPDATE or DELETE run by ``Session.execute`` matched.

    ``Session.execute`` is typed to return a plain ``Result``; for these statements it is a
    ``CursorResult``, which has the count."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(result).__name__} has no row count: not an UPDATE or DELETE")
    return result.rowcount


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if not options.get("no_begin", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate") else "BEGIN")
