"""Annotations: a reviewer's verdict on one request of a batch. This module is the only
writer of the ``annotations`` and ``annotation_events`` tables; every change is kept in
the history with the values before and after."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from batch_server.db.session import Database
from batch_server.db.tables import AnnotationEventRow, AnnotationRow

Label = Literal["golden", "fixed", "wrong", "skip"]
LABELS: tuple[str, ...] = ("golden", "fixed", "wrong", "skip")
Source = Literal["api", "dashboard", "label_studio"]


class InvalidAnnotation(ValueError):
    """The values break a rule (a ``fixed`` label without its corrected answer, a rating
    outside 1–5, an unknown label); ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Verdict:
    """What a reviewer says of one answer."""

    label: str | None = None
    fixed_answer: str | None = None
    note: str | None = None
    rating: int | None = None

    def check(self) -> Verdict:
        if self.label is not None and self.label not in LABELS:
            raise InvalidAnnotation(f"label must be one of {', '.join(LABELS)} (or null)", "label")
        if self.label == "fixed" and not (self.fixed_answer or "").strip():
            raise InvalidAnnotation(
                "label 'fixed' needs fixed_answer: the corrected answer", "fixed_answer"
            )
        if self.rating is not None and not 1 <= self.rating <= 5:
            raise InvalidAnnotation("rating must be an integer from 1 to 5", "rating")
        return self


@dataclass(frozen=True)
class Target:
    """The request an annotation is about."""

    batch_id: str
    custom_id: str
    request_index: int
    owner: str | None
    model: str | None


def values(row: AnnotationRow) -> dict[str, Any]:
    """An annotation's reviewable values (as the history records them)."""
    return {
        "label": row.label,
        "fixed_answer": row.fixed_answer,
        "note": row.note,
        "rating": row.rating,
        "rater": row.rater,
        "source": row.source,
    }


def put(
    db: Database, target: Target, verdict: Verdict, rater: str | None, source: str = "api"
) -> AnnotationRow:
    """Set the annotation of ``target`` to ``verdict`` (replacing what was there)."""
    verdict.check()
    now = time.time()
    with db.write() as s:
        row = _find(s, target.batch_id, target.custom_id)
        before = values(row) if row is not None else None
        if row is None:
            row = AnnotationRow(
                batch_id=target.batch_id,
                custom_id=target.custom_id,
                request_index=target.request_index,
                owner=target.owner,
                model=target.model,
                created_at=now,
            )
            s.add(row)
        row.label, row.fixed_answer = verdict.label, verdict.fixed_answer
        row.note, row.rating = verdict.note, verdict.rating
        row.rater, row.source, row.updated_at = rater, source, now
        s.flush()
        _event(s, target, now, rater, "put", before, values(row))
        s.expunge(row)
    return row


def delete(db: Database, batch_id: str, custom_id: str, rater: str | None) -> bool:
    """Remove an annotation (its history stays); False when there was none."""
    with db.write() as s:
        row = _find(s, batch_id, custom_id)
        if row is None:
            return False
        target = Target(batch_id, custom_id, row.request_index, row.owner, row.model)
        _event(s, target, time.time(), rater, "delete", values(row), None)
        s.delete(row)
    return True


def get(db: Database, batch_id: str, custom_id: str) -> AnnotationRow | None:
    with db.read() as s:
        return _find(s, batch_id, custom_id)


def for_batch(db: Database, batch_id: str, custom_ids: Sequence[str]) -> dict[str, AnnotationRow]:
    """The annotations of these requests of one batch, by custom_id."""
    if not custom_ids:
        return {}
    with db.read() as s:
        rows = s.execute(
            select(AnnotationRow).where(
                AnnotationRow.batch_id == batch_id, AnnotationRow.custom_id.in_(list(custom_ids))
            )
        ).scalars()
        return {r.custom_id: r for r in rows}


def history(db: Database, batch_id: str, custom_id: str) -> list[AnnotationEventRow]:
    with db.read() as s:
        return list(
            s.execute(
                select(AnnotationEventRow)
                .where(
                    AnnotationEventRow.batch_id == batch_id,
                    AnnotationEventRow.custom_id == custom_id,
                )
                .order_by(AnnotationEventRow.id)
            ).scalars()
        )


def _find(s: Session, batch_id: str, custom_id: str) -> AnnotationRow | None:
    return s.execute(
        select(AnnotationRow).where(
            AnnotationRow.batch_id == batch_id, AnnotationRow.custom_id == custom_id
        )
    ).scalar()


def _event(
    s: Session,
    target: Target,
    at: float,
    rater: str | None,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    s.add(
        AnnotationEventRow(
            batch_id=target.batch_id,
            custom_id=target.custom_id,
            at=at,
            rater=rater,
            action=action,
            before=before,
            after=after,
        )
    )
