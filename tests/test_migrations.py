"""The Alembic migrations produce exactly the schema declared in ``db/tables.py``, on
SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from batch_server.db.session import Database
from batch_server.db.tables import Base
from conftest import DATABASES, database_url


@DATABASES
def test_migrated_schema_matches_declared(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    db = Database(database_url(request, database) or f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    db.migrate()  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == []
