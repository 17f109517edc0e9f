"""API keys: created, listed and revoked by the ``batch-server keys`` command, looked up by
the API on every request. Only a SHA-256 of each token is stored."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import exists, select, update

from batch_server.db.session import Database, rowcount
from batch_server.db.tables import ApiKeyRow

TOKEN_PREFIX = "bsk-"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(db: Database, name: str, admin: bool = False) -> tuple[ApiKeyRow, str]:
    """Create a key; the token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        id=f"key_{secrets.token_hex(8)}",
        name=name,
        prefix=token[:10],
        token_hash=hash_token(token),
        admin=admin,
        created_at=int(time.time()),
        revoked_at=None,
        limits=None,
    )
    with db.write() as s:
        s.add(row)
    return row, token


def list_keys(db: Database) -> list[ApiKeyRow]:
    with db.read() as s:
        return list(s.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).scalars())


def revoke_key(db: Database, key_id: str) -> bool:
    with db.write() as s:
        return bool(
            rowcount(
                s.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                    .values(revoked_at=int(time.time()))
                )
            )
        )


def lookup(db: Database, token: str) -> ApiKeyRow | None:
    """The active key with this token, if any."""
    with db.read() as s:
        return s.execute(
            select(ApiKeyRow).where(
                ApiKeyRow.token_hash == hash_token(token), ApiKeyRow.revoked_at.is_(None)
            )
        ).scalar()


def any_active(db: Database) -> bool:
    with db.read() as s:
        return bool(s.execute(select(exists().where(ApiKeyRow.revoked_at.is_(None)))).scalar())
