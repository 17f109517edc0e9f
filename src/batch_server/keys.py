"""API keys: created, listed and revoked by the ``batch-server keys`` command, verified by
the API on every request (through :class:`KeyCache`). Only a SHA-256 of each token is
stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import exists, select, update

from batch_server.db.session import Database, rowcount
from batch_server.db.tables import ApiKeyRow

TOKEN_PREFIX = "bsk-"
# How long an API process trusts what it read about a key: a revoked key is refused,
# and a server that got its first key stops being open, this long afterwards at most.
CACHE_SECONDS = 1.0


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
    return _lookup_hash(db, hash_token(token))


def _lookup_hash(db: Database, digest: str) -> ApiKeyRow | None:
    with db.read() as s:
        return s.execute(
            select(ApiKeyRow).where(ApiKeyRow.token_hash == digest, ApiKeyRow.revoked_at.is_(None))
        ).scalar()


def any_active(db: Database) -> bool:
    with db.read() as s:
        return bool(s.execute(select(exists().where(ApiKeyRow.revoked_at.is_(None)))).scalar())


@dataclass(frozen=True)
class ActiveKey:
    """What a request needs of the active key it named."""

    id: str
    admin: bool
    name: str


class KeyCache:
    """Answers of :func:`lookup` and :func:`any_active`, each kept for ``ttl`` seconds.

    Dashboards and SDKs poll several times a second with the same key; reading the key on
    every poll was a database round trip per request. A key revoked (or created) by any
    process on the database takes effect in every API process within ``ttl``: an answer
    is never extended, only read again once it is older. Only keys found are kept (a
    flood of wrong tokens cannot grow the cache), at most ``max_keys`` of them."""

    def __init__(
        self,
        db: Database,
        ttl: float = CACHE_SECONDS,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.ttl, self.max_keys, self.clock = db, ttl, max_keys, clock
        self._keys: dict[str, tuple[float, ActiveKey]] = {}
        self._any_active: tuple[float, bool] | None = None

    def lookup(self, token: str) -> ActiveKey | None:
        digest = hash_token(token)
        now = self.clock()
        cached = self._keys.get(digest)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        row = _lookup_hash(self.db, digest)
        if row is None:
            self._keys.pop(digest, None)
            return None
        key = ActiveKey(row.id, row.admin, row.name)
        if len(self._keys) >= self.max_keys:
            self._keys.clear()
        self._keys[digest] = (now, key)
        return key

    def any_active(self) -> bool:
        now = self.clock()
        cached = self._any_active
        if cached is None or now - cached[0] >= self.ttl:
            cached = self._any_active = (now, any_active(self.db))
        return cached[1]
