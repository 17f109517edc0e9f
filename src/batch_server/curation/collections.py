"""Collections: named, versioned sets of annotated examples across batches (e.g.
"golden-recruiting-v3"). Each version is built by a rule (requests of some batches with
some labels, on top of an earlier version, minus some) and its items are frozen copies
(:mod:`.examples`), so exporting version N later gives the same bytes whatever happens
to the annotations since.

Storage: ``collections.version`` is the latest finished version; a version's row in
``collection_versions`` is written first (``building``: its unique key reserves the
number), the items in chunks, then the version turns ``ready`` and the collection's
``version`` moves on. A build that fails removes what it wrote; readers see only
``ready`` versions.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from batch_server.curation import examples
from batch_server.curation.annotations import LABELS
from batch_server.curation.requests import iter_pairs
from batch_server.db.pages import Scope
from batch_server.db.session import Database
from batch_server.db.tables import (
    AnnotationRow,
    BatchRow,
    CollectionItemRow,
    CollectionRow,
    CollectionVersionRow,
)
from batch_server.errors import APIError, Conflict, NotFound
from batch_server.storage import FileStore

ID_PREFIX = "coll_"
CHUNK = 500
DEFAULT_LABELS = ("golden", "fixed")


@dataclass(frozen=True)
class Add:
    """Requests of one batch annotated with one of ``labels`` (only ``custom_ids`` when
    given)."""

    batch: BatchRow
    labels: tuple[str, ...] = DEFAULT_LABELS
    custom_ids: tuple[str, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch.id,
            "labels": list(self.labels),
            "custom_ids": None if self.custom_ids is None else list(self.custom_ids),
        }


@dataclass(frozen=True)
class Remove:
    """Items of one batch (only ``custom_ids`` when given) left out of the new version."""

    batch_id: str
    custom_ids: frozenset[str] | None = None

    def matches(self, batch_id: str, custom_id: str) -> bool:
        return batch_id == self.batch_id and (
            self.custom_ids is None or custom_id in self.custom_ids
        )


@dataclass(frozen=True)
class Rule:
    """How a version is built: ``base`` (a version number, ``"latest"``, or None for an
    empty start) minus ``remove``, plus fresh copies of ``add`` (which replace the base's
    items of the same requests)."""

    add: Sequence[Add] = ()
    remove: Sequence[Remove] = ()
    base: int | str | None = "latest"

    def describe(self, base: int) -> dict[str, Any]:
        return {
            "base": base,
            "add": [a.describe() for a in self.add],
            "remove": [
                {
                    "batch_id": r.batch_id,
                    "custom_ids": None if r.custom_ids is None else sorted(r.custom_ids),
                }
                for r in self.remove
            ],
        }


@dataclass
class Version:
    number: int
    created_at: int
    count: int
    rule: dict[str, Any]
    stats: dict[str, int] = field(default_factory=dict)


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    unknown = [x for x in labels if x not in LABELS]
    if unknown or not labels:
        raise APIError(
            f"labels must be some of {', '.join(LABELS)}", param="labels", code="invalid_value"
        )
    return tuple(dict.fromkeys(labels))


# -- collections -----------------------------------------------------------------------


def create(db: Database, name: str, description: str | None, owner: str | None) -> CollectionRow:
    now = int(time.time())
    row = CollectionRow(
        id=f"{ID_PREFIX}{secrets.token_hex(12)}",
        name=name,
        owner=owner,
        description=description,
        created_at=now,
        updated_at=now,
        version=0,
    )
    try:
        with db.write() as s:
            s.add(row)
    except IntegrityError as exc:
        raise Conflict(
            f"A collection named '{name}' exists already", param="name", code="already_exists"
        ) from exc
    return row


def find(db: Database, ident: str, scope: Scope, owner: str | None) -> CollectionRow:
    """A collection by id, or by name (the caller's own first); another tenant's is "not
    found"."""
    row: CollectionRow | None
    with db.read() as s:
        row = s.execute(scope(select(CollectionRow)).where(CollectionRow.id == ident)).scalar()
        if row is None:
            named = list(
                s.execute(scope(select(CollectionRow)).where(CollectionRow.name == ident))
                .scalars()
                .all()
            )
            row = next((r for r in named if r.owner == owner), None)
            if row is None and len(named) == 1:
                row = named[0]
    if row is None:
        raise NotFound("collection", ident, param="collection_id")
    return row


def remove(db: Database, collection_id: str) -> None:
    with db.write() as s:
        s.execute(delete(CollectionItemRow).where(CollectionItemRow.collection_id == collection_id))
        s.execute(
            delete(CollectionVersionRow).where(CollectionVersionRow.collection_id == collection_id)
        )
        s.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))


def versions(db: Database, collection_id: str) -> list[Version]:
    """The finished versions, oldest first."""
    with db.read() as s:
        rows = s.execute(
            select(CollectionVersionRow)
            .where(
                CollectionVersionRow.collection_id == collection_id,
                CollectionVersionRow.state == "ready",
            )
            .order_by(CollectionVersionRow.version)
        ).scalars()
        return [_version(r) for r in rows]


def version(db: Database, collection: CollectionRow, number: int | None) -> int:
    """``number`` (None: the latest), checked to be a finished version."""
    wanted = collection.version if number is None else number
    if wanted == 0 and number is None:
        raise APIError(
            f"Collection '{collection.name}' has no version yet",
            param="version",
            code="invalid_value",
        )
    if wanted not in {v.number for v in versions(db, collection.id)}:
        raise NotFound("version", str(wanted), param="version")
    return wanted


def _version(row: CollectionVersionRow) -> Version:
    return Version(row.version, row.created_at, row.count, row.rule, row.stats or {})


# -- items -----------------------------------------------------------------------------


def items(
    db: Database, collection_id: str, number: int, after: int | None, limit: int
) -> tuple[list[CollectionItemRow], bool]:
    """A page of a version's items, in the order they were written."""
    query = _items(collection_id, number)
    if after is not None:
        query = query.where(CollectionItemRow.id > after)
    with db.read() as s:
        rows = list(s.execute(query.order_by(CollectionItemRow.id).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def iter_examples(db: Database, collection_id: str, number: int) -> Iterator[dict[str, Any]]:
    """Every example of a version, in order, read a chunk at a time."""
    after: int | None = None
    while True:
        rows, more = items(db, collection_id, number, after, CHUNK)
        for row in rows:
            yield row.example
        if not more:
            return
        after = rows[-1].id


def _items(collection_id: str, number: int) -> Any:
    return select(CollectionItemRow).where(
        CollectionItemRow.collection_id == collection_id,
        CollectionItemRow.version == number,
    )


# -- building a version ----------------------------------------------------------------


def build(db: Database, store: FileStore, collection: CollectionRow, rule: Rule) -> Version:
    """Make the next version of ``collection`` by ``rule``. The batches of ``rule.add``
    are the caller's already (the API checks tenancy)."""
    base = _base(db, collection, rule.base)
    number, created_at = _reserve(db, collection.id, rule.describe(base))
    try:
        stats = _fill(db, store, collection.id, number, base, rule)
    except BaseException:
        with db.write() as s:
            s.execute(
                delete(CollectionItemRow).where(
                    CollectionItemRow.collection_id == collection.id,
                    CollectionItemRow.version == number,
                )
            )
            s.execute(
                delete(CollectionVersionRow).where(
                    CollectionVersionRow.collection_id == collection.id,
                    CollectionVersionRow.version == number,
                )
            )
        raise
    count = stats["added"] + stats["kept"]
    described = rule.describe(base)
    with db.write() as s:
        s.execute(
            update(CollectionVersionRow)
            .where(
                CollectionVersionRow.collection_id == collection.id,
                CollectionVersionRow.version == number,
            )
            .values(state="ready", count=count, rule=described, stats=stats)
        )
        s.execute(
            update(CollectionRow)
            .where(CollectionRow.id == collection.id, CollectionRow.version < number)
            .values(version=number, updated_at=int(time.time()))
        )
    return Version(number, created_at, count, described, stats)


def _base(db: Database, collection: CollectionRow, base: int | str | None) -> int:
    if base is None or base == 0:
        return 0
    if base == "latest":
        return collection.version
    if not isinstance(base, int) or base < 0:
        raise APIError("base must be 'latest' or a version number", param="base")
    return version(db, collection, base)


def _reserve(db: Database, collection_id: str, rule: dict[str, Any]) -> tuple[int, int]:
    """Write the next version number's row (``building``)."""
    now = int(time.time())
    for _ in range(20):
        try:
            with db.write() as s:
                top = s.execute(
                    select(func.max(CollectionVersionRow.version)).where(
                        CollectionVersionRow.collection_id == collection_id
                    )
                ).scalar()
                number = (top or 0) + 1
                s.add(
                    CollectionVersionRow(
                        collection_id=collection_id,
                        version=number,
                        state="building",
                        created_at=now,
                        count=0,
                        rule=rule,
                    )
                )
            return number, now
        except IntegrityError:
            continue  # another build took this number at the same moment
    raise Conflict("Could not reserve a version number", code="conflict")


def _fill(
    db: Database, store: FileStore, collection_id: str, number: int, base: int, rule: Rule
) -> dict[str, int]:
    fresh = _added_keys(db, rule.add)
    kept = removed = 0
    pending: list[CollectionItemRow] = []
    if base:
        for ex in iter_examples(db, collection_id, base):
            key = (ex["batch_id"], ex["custom_id"])
            if any(r.matches(*key) for r in rule.remove):
                removed += 1
            elif key not in fresh:
                kept += 1
                pending.append(_item(collection_id, number, ex))
                _flush(db, pending)
    added = 0
    written: set[tuple[str, str]] = set()
    for add in rule.add:
        for ex in _examples(db, store, add):
            key = (ex["batch_id"], ex["custom_id"])
            if key in written or any(r.matches(*key) for r in rule.remove):
                continue
            written.add(key)
            added += 1
            pending.append(_item(collection_id, number, ex))
            _flush(db, pending)
    _flush(db, pending, force=True)
    return {"added": added, "kept": kept, "removed": removed}


def _item(collection_id: str, number: int, ex: dict[str, Any]) -> CollectionItemRow:
    return CollectionItemRow(
        collection_id=collection_id,
        version=number,
        batch_id=ex["batch_id"],
        custom_id=ex["custom_id"],
        example=ex,
    )


def _flush(db: Database, pending: list[CollectionItemRow], force: bool = False) -> None:
    if pending and (force or len(pending) >= CHUNK):
        with db.write() as s:
            s.add_all(pending)
        pending.clear()


def _annotations(add: Add) -> Any:
    query = select(AnnotationRow).where(
        AnnotationRow.batch_id == add.batch.id, AnnotationRow.label.in_(add.labels)
    )
    if add.custom_ids is not None:
        query = query.where(AnnotationRow.custom_id.in_(add.custom_ids))
    return query


def _added_keys(db: Database, adds: Sequence[Add]) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    with db.read() as s:
        for add in adds:
            query = _annotations(add).with_only_columns(AnnotationRow.custom_id)
            keys.update((add.batch.id, c) for c in s.execute(query).scalars())
    return keys


def _examples(db: Database, store: FileStore, add: Add) -> Iterator[dict[str, Any]]:
    """The examples of one rule's requests: its annotations (in request order, a chunk at
    a time) joined with the batch's requests streamed alongside."""
    notes = _iter_annotations(db, add)
    note = next(notes, None)
    if note is None:
        return
    for pair in iter_pairs(db, store, add.batch, note.request_index):
        while note is not None and note.request_index < pair.index:
            note = next(notes, None)
        if note is None:
            return
        if note.request_index == pair.index and note.custom_id == pair.custom_id:
            yield examples.example(add.batch.endpoint, pair, note)
            note = next(notes, None)
            if note is None:
                return


def _iter_annotations(db: Database, add: Add) -> Iterator[AnnotationRow]:
    after = -1
    while True:
        with db.read() as s:
            rows = list(
                s.execute(
                    _annotations(add)
                    .where(AnnotationRow.request_index > after)
                    .order_by(AnnotationRow.request_index)
                    .limit(CHUNK)
                ).scalars()
            )
        yield from rows
        if len(rows) < CHUNK:
            return
        after = rows[-1].request_index
