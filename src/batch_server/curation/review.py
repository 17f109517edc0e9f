"""What the review page reads: a batch's requests with their answers, filtered (unreviewed,
by label, failed) and ordered (input order, or least confident first), a page at a time,
with the batch's review counts.

A batch is streamed (``requests.iter_pairs``), never loaded whole: input order keeps only
the requested page; "least confident first" keeps one ``(confidence, disagreement,
index)`` key per matching request, sorts them and reads the page's requests in a second
pass. Confidence is the mean token log-probability of the answer (when the request asked
for logprobs); disagreement is whether the other models of a comparison answered the same
request differently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from batch_server.curation.annotations import LABELS
from batch_server.curation.requests import RequestPair, iter_pairs
from batch_server.curation.texts import answer_text
from batch_server.db.session import Database
from batch_server.db.tables import AnnotationRow, BatchRow, ComparisonRow
from batch_server.storage import FileStore

FILTERS: tuple[str, ...] = ("all", "unreviewed", *LABELS, "failed")
ORDERS: tuple[str, ...] = ("input", "least_confident")
UNLABELLED = ""  # an annotation with a rating or a note but no label


@dataclass(frozen=True)
class Item:
    pair: RequestPair
    confidence: float | None
    disagreement: bool | None

    @property
    def answer_text(self) -> str | None:
        return answer_text(self.pair.response)


@dataclass(frozen=True)
class Counts:
    total: int
    reviewed: int
    labels: dict[str, int]
    failed: int


@dataclass
class Page:
    items: list[Item] = field(default_factory=list)
    matching: int = 0  # requests that pass the filter
    has_more: bool = False


# -- one answer ------------------------------------------------------------------------


def parsed(text: str | None) -> tuple[Any, bool]:
    """``(value, is_json)``: a JSON object or array parsed, any other text as it is."""
    if text is None:
        return None, False
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped), True
        except (ValueError, RecursionError):
            pass
    return text, False


def prompt(request: dict[str, Any]) -> Any:
    """What the model was asked: the chat messages, the prompt, or the input."""
    for key in ("messages", "prompt", "input"):
        if key in request:
            return request[key]
    return None


def confidence(response: dict[str, Any] | None) -> float | None:
    """The mean token log-probability of the first choice (chat or completions shape);
    None when the response carries no logprobs."""
    choices = (response or {}).get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    logprobs = choices[0].get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    values: list[Any]
    if isinstance(logprobs.get("content"), list):
        values = [t.get("logprob") for t in logprobs["content"] if isinstance(t, dict)]
    else:
        values = logprobs.get("token_logprobs") or []
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return sum(numbers) / len(numbers) if numbers else None


def _comparable(text: str | None) -> Any:
    value, is_json = parsed(text)
    return value if is_json else (text or "").strip()


# -- a batch -----------------------------------------------------------------------------


def counts(db: Database, batch: BatchRow) -> Counts:
    with db.read() as s:
        rows = s.execute(
            select(AnnotationRow.label, func.count())
            .where(AnnotationRow.batch_id == batch.id)
            .group_by(AnnotationRow.label)
        ).all()
    labels = dict.fromkeys(LABELS, 0)
    reviewed = 0
    for label, n in rows:
        reviewed += n
        if label in labels:
            labels[label] = n
    return Counts(batch.total, reviewed, labels, batch.failed)


def _labels(db: Database, batch_id: str) -> dict[str, str]:
    """custom_id → label of the batch's annotated requests (only those: a small map)."""
    with db.read() as s:
        rows = s.execute(
            select(AnnotationRow.custom_id, AnnotationRow.label).where(
                AnnotationRow.batch_id == batch_id
            )
        ).all()
    return {custom_id: label or UNLABELLED for custom_id, label in rows}


def _matches(name: str, pair: RequestPair, labels: dict[str, str]) -> bool:
    if name == "all":
        return True
    if name == "unreviewed":
        return pair.custom_id not in labels
    if name == "failed":
        return pair.error is not None
    return labels.get(pair.custom_id) == name


def compared_batches(db: Database, store: FileStore, batch: BatchRow) -> list[BatchRow]:
    """The other batches of the comparison ``batch`` is part of (none if it is not)."""
    with db.read() as s:
        comparisons = s.execute(select(ComparisonRow.batches)).scalars().all()
        for batches in comparisons:
            ids = list((batches or {}).values())
            if batch.id in ids:
                others = [i for i in ids if i != batch.id]
                rows = s.execute(select(BatchRow).where(BatchRow.id.in_(others))).scalars()
                found = list(rows)
                for row in found:
                    s.expunge(row)
                return found
    return []


class _Other:
    """Another model's answers to the same input, read alongside (same request order)."""

    def __init__(self, pairs: Iterator[RequestPair]) -> None:
        self.pairs = pairs
        self.head = next(pairs, None)

    def answer(self, pair: RequestPair) -> str | None:
        while self.head is not None and self.head.index < pair.index:
            self.head = next(self.pairs, None)
        head = self.head
        if head is None or head.index != pair.index or head.custom_id != pair.custom_id:
            return None
        return answer_text(head.response)


def _items(
    db: Database, store: FileStore, batch: BatchRow, others: list[BatchRow], start: int = 0
) -> Iterator[Item]:
    streams = [_Other(iter_pairs(db, store, b, start)) for b in others]
    for pair in iter_pairs(db, store, batch, start):
        text = answer_text(pair.response)
        disagreement = None
        if streams and text is not None:
            theirs = [a for a in (o.answer(pair) for o in streams) if a is not None]
            if theirs:
                mine = _comparable(text)
                disagreement = any(_comparable(a) != mine for a in theirs)
        yield Item(pair, confidence(pair.response), disagreement)


def page(
    db: Database,
    store: FileStore,
    batch: BatchRow,
    filter_name: str = "all",
    order: str = "input",
    offset: int = 0,
    limit: int = 20,
) -> Page:
    """The requests ``offset .. offset+limit`` of those that pass ``filter_name``, in
    ``order``; ``matching`` counts all that pass."""
    labels = _labels(db, batch.id)
    others = compared_batches(db, store, batch)
    if order == "least_confident":
        return _least_confident(db, store, batch, others, labels, filter_name, offset, limit)
    result = Page()
    for item in _items(db, store, batch, others):
        if not _matches(filter_name, item.pair, labels):
            continue
        if offset <= result.matching < offset + limit:
            result.items.append(item)
        result.matching += 1
    result.has_more = result.matching > offset + limit
    return result


def sort_key(item: Item) -> tuple[bool, float, bool, int]:
    """Least confident first, then disagreeing answers first; without logprobs last."""
    c = item.confidence
    return (c is None, c if c is not None else 0.0, not item.disagreement, item.pair.index)


def _least_confident(
    db: Database,
    store: FileStore,
    batch: BatchRow,
    others: list[BatchRow],
    labels: dict[str, str],
    filter_name: str,
    offset: int,
    limit: int,
) -> Page:
    keys = [
        (sort_key(item), item.disagreement)
        for item in _items(db, store, batch, others)
        if _matches(filter_name, item.pair, labels)
    ]
    keys.sort(key=lambda k: k[0])
    chosen = keys[offset : offset + limit]
    result = Page(matching=len(keys), has_more=len(keys) > offset + limit)
    if not chosen:
        return result
    wanted = {key[3]: position for position, (key, _d) in enumerate(chosen)}
    found: list[Item | None] = [None] * len(chosen)
    disagreements = {key[3]: d for key, d in chosen}
    missing = len(chosen)
    for pair in iter_pairs(db, store, batch, min(wanted)):
        position = wanted.get(pair.index)
        if position is not None:
            found[position] = Item(pair, confidence(pair.response), disagreements[pair.index])
            missing -= 1
            if not missing:
                break
    result.items = [f for f in found if f is not None]
    return result
