"""A comparison's rows: each input request with every model's answer, streamed in input
order (never the whole input or all results at once), and the agreement between models.

A batch's results are in the ``results`` table while it runs (``ResultRow.request_index``
orders them) and in its output and error files once finalized; both are in input order,
so one pass over the input with a cursor per model joins them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from sqlalchemy import select

from batch_server.curation import texts
from batch_server.curation.examples import parsed_fields
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, ResultRow
from batch_server.jobs.reports import file_lines
from batch_server.jobs.validation import iter_lines
from batch_server.statuses import LIVE
from batch_server.storage import FileStore

PROMPT_CHARS = 300  # of the last user message shown beside the answers
ANSWER_CHARS = 20_000  # of an answer kept in a row
CHUNK = 500  # results read per query while a batch runs
LINE_LIMIT = 8 * 1024 * 1024  # bytes of one input line read


@dataclass(frozen=True)
class Answer:
    """One model's answer to one request: its text, or the error it ended with."""

    text: str | None
    error: str | None

    @property
    def key(self) -> tuple[str, str]:
        """What two answers are compared by (white space around the text ignored)."""
        return ("text", self.text.strip()) if self.text is not None else ("error", self.error or "")


@dataclass(frozen=True)
class Row:
    index: int
    custom_id: str | None
    prompt: str
    answers: list[Answer | None]  # in the comparison's model order; None: not in yet

    @property
    def agree(self) -> bool | None:
        if any(a is None for a in self.answers):
            return None
        return len({a.key for a in self.answers if a is not None}) == 1


# -- reading texts out of request and response bodies --------------------------------------


def prompt_of(line: dict[str, Any]) -> str:
    """Short text of the request's last user message (or its prompt / input)."""
    body = line.get("body")
    text = texts.last_user_text(body) if isinstance(body, dict) else ""
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "…"


def _body_text(body: dict[str, Any]) -> str:
    """The answer in a response body of any endpoint (embeddings and moderations as the
    JSON of their data)."""
    text = texts.answer_text(body)
    if text is not None:
        return text
    return json.dumps(body.get("data") or body.get("results") or body, sort_keys=True)


def answer_of(line: dict[str, Any]) -> Answer:
    """The answer in an output or error line."""
    response = line.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    if isinstance(response, dict) and response.get("status_code") == 200 and isinstance(body, dict):
        return Answer(_body_text(body)[:ANSWER_CHARS], None)
    error = line.get("error") or (body or {}).get("error") or {}
    message = error.get("message") if isinstance(error, dict) else None
    return Answer(None, str(message or "request failed"))


# -- one cursor per model over its results ---------------------------------------------------


class _LiveCursor:
    """Results of a running batch, read from the ``results`` table a chunk at a time."""

    def __init__(self, db: Database, batch_id: str) -> None:
        self.db, self.batch_id = db, batch_id
        self.buffer: list[tuple[int, str]] = []
        self.pos = 0
        self.done = False  # the last read found fewer than CHUNK results: no more to read

    def _fill(self, index: int) -> None:
        with self.db.read() as s:
            rows = s.execute(
                select(ResultRow.request_index, ResultRow.payload)
                .where(ResultRow.batch_id == self.batch_id, ResultRow.request_index >= index)
                .order_by(ResultRow.request_index)
                .limit(CHUNK)
            ).all()
        self.buffer, self.pos = [(r[0], r[1]) for r in rows], 0
        self.done = len(rows) < CHUNK

    def skip(self, index: int, custom_id: str | None) -> None:
        """Nothing to do: reading starts at the first index taken."""

    def take(self, index: int, _custom_id: str | None) -> Answer | None:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos][0] < index:
                self.pos += 1
            if self.pos < len(self.buffer):
                found, payload = self.buffer[self.pos]
                return answer_of(json.loads(payload)) if found == index else None
            if self.done:
                return None
            self._fill(index)


class _FileCursor:
    """Results of a finalized batch: its output and error files, both in input order."""

    def __init__(self, store: FileStore, file_ids: list[str | None]) -> None:
        self.streams = [(json.loads(x) for x in file_lines(store, f)) for f in file_ids if f]
        self.heads: list[dict[str, Any] | None] = [next(s, None) for s in self.streams]

    def skip(self, index: int, custom_id: str | None) -> None:
        """Move past the request's answer (the files can only be read from the start)."""
        self.take(index, custom_id)

    def take(self, _index: int, custom_id: str | None) -> Answer | None:
        for i, head in enumerate(self.heads):
            if head is not None and head.get("custom_id") == custom_id:
                self.heads[i] = next(self.streams[i], None)
                return answer_of(head)
        return None


def _cursor(db: Database, store: FileStore, batch: BatchRow) -> _LiveCursor | _FileCursor:
    if batch.status in LIVE:
        return _LiveCursor(db, batch.id)
    return _FileCursor(store, [batch.output_file_id, batch.error_file_id])


def iter_rows(
    db: Database, store: FileStore, input_file_id: str, batches: list[BatchRow], after: int = -1
) -> Iterator[Row]:
    """The rows after input position ``after``, in input order, with each batch's answer."""
    cursors = [_cursor(db, store, b) for b in batches]
    try:
        fh = store.open(input_file_id)
    except FileNotFoundError:
        return
    with fh:
        for index, line in enumerate(iter_lines(fh, limit=LINE_LIMIT)):
            try:
                obj = json.loads(line.raw)
            except (ValueError, RecursionError):
                obj = {}
            obj = obj if isinstance(obj, dict) else {}
            custom_id = obj.get("custom_id") if isinstance(obj.get("custom_id"), str) else None
            if index <= after:
                for c in cursors:
                    c.skip(index, custom_id)
                continue
            answers = [c.take(index, custom_id) for c in cursors]
            yield Row(index, custom_id, prompt_of(obj), answers)


def page(rows: Iterator[Row], limit: int, disagree: bool = False) -> tuple[list[Row], bool]:
    """Up to ``limit`` rows (only those where the models disagree, with ``disagree``)."""
    out: list[Row] = []
    for row in rows:
        if disagree and row.agree is not False:
            continue
        if len(out) == limit:
            return out, True
        out.append(row)
    return out, False


# -- agreement ---------------------------------------------------------------------------------


@dataclass
class AgreementCounter:
    """Exact-match and per-field agreement over the rows every model answered."""

    models: list[str]
    requests: int = 0
    all_equal: int = 0
    pairs: dict[tuple[int, int], int] = field(default_factory=dict)
    json_requests: int = 0
    field_seen: dict[str, int] = field(default_factory=dict)
    field_equal: dict[str, int] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        if any(a is None or a.text is None for a in row.answers):
            return
        texts = [a.text.strip() for a in row.answers if a is not None and a.text is not None]
        self.requests += 1
        self.all_equal += len(set(texts)) == 1
        for i, j in combinations(range(len(texts)), 2):
            self.pairs[(i, j)] = self.pairs.get((i, j), 0) + (texts[i] == texts[j])
        objects = [parsed_fields(t) for t in texts]
        if any(o is None for o in objects):
            return
        self.json_requests += 1
        keys = set().union(*(o.keys() for o in objects if o is not None))
        for key in keys:
            values = [json.dumps(o.get(key, _MISSING), sort_keys=True) for o in objects if o]
            self.field_seen[key] = self.field_seen.get(key, 0) + 1
            self.field_equal[key] = self.field_equal.get(key, 0) + (len(set(values)) == 1)

    def result(self) -> dict[str, Any]:
        n = self.requests
        rate = (lambda k: round(k / n, 4)) if n else (lambda _k: None)
        pairwise = [
            {
                "models": [self.models[i], self.models[j]],
                "exact_match": rate(self.pairs.get((i, j), 0)),
            }
            for i, j in combinations(range(len(self.models)), 2)
        ]
        json_fields = None
        if self.json_requests:
            json_fields = {
                "requests": self.json_requests,
                "fields": {
                    k: round(self.field_equal[k] / self.field_seen[k], 4)
                    for k in sorted(self.field_seen)
                },
            }
        return {
            "requests": n,
            "exact_match": rate(self.all_equal),
            "pairwise": pairwise,
            "json_fields": json_fields,
        }


_MISSING = "\x00missing"  # a key one model's object lacks never equals a present value
