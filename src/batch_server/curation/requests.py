"""The requests of a batch next to their answers, streamed in input order: what review,
collections, exports and Label Studio read. Finished results come from the ``results``
table while the batch runs and from its output and error files once finalized; both are
in request order, so one pass over the input reads them alongside (flat memory, any
size)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, ResultRow
from batch_server.jobs.reports import VIEW_LINE_LIMIT, file_lines
from batch_server.jobs.result_fields import plugin_data
from batch_server.jobs.validation import iter_lines
from batch_server.plugins.manager import PluginError, loaded
from batch_server.plugins.results import build_body
from batch_server.statuses import LIVE
from batch_server.storage import FileStore

CHUNK = 500  # results read from the database at a time


@dataclass(frozen=True)
class RequestPair:
    index: int
    custom_id: str
    request: dict[str, Any]  # the request body
    status_code: int | None  # None: not run yet
    response: dict[str, Any] | None  # the response body of a request that succeeded
    error: dict[str, Any] | None  # the error of one that failed
    # a templated line (batch_server.plugins): its template, and what plugins made of the
    # answer (parsed fields, a parse or rating failure, automatic ratings)
    template: str | None = None
    input: Any = None  # a templated line's record
    fields: dict[str, Any] | None = None
    plugin_error: str | None = None
    ratings: dict[str, Any] | None = None

    @property
    def model(self) -> str | None:
        """The model that answered (as the response names it), else the one asked for."""
        name = (self.response or {}).get("model") or self.request.get("model")
        return name if isinstance(name, str) else None


def iter_pairs(
    db: Database, store: FileStore, batch: BatchRow, start: int = 0
) -> Iterator[RequestPair]:
    """Every request of ``batch`` from index ``start``, with its outcome so far."""
    try:
        fh = store.open(batch.input_file_id)
    except FileNotFoundError:
        return
    live = batch.status in LIVE and batch.output_file_id is None
    streams = (
        [_Head(_live_outcomes(db, batch.id, start))]
        if live
        else [
            _Head(_file_outcomes(store, batch.output_file_id)),
            _Head(_file_outcomes(store, batch.error_file_id)),
        ]
    )
    plugged = _Plugged(db, batch.id, start)
    with fh:
        for index, line in enumerate(iter_lines(fh, limit=VIEW_LINE_LIMIT)):
            try:
                obj = json.loads(line.raw)
            except (ValueError, RecursionError):
                continue  # a batch that ran has only valid lines; a failed one may not
            if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
                continue
            custom_id = obj["custom_id"]
            # each stream is in request order: the outcome of this request, if there is
            # one yet, is at the head of one of them
            found = next((h.take() for h in streams if h.custom_id == custom_id), None)
            if index < start:
                continue
            body = obj.get("body")
            body = body if isinstance(body, dict) else {}
            template = obj.get("template") if isinstance(obj.get("template"), str) else None
            if template is None:
                yield _pair(index, custom_id, body, found)
                continue
            pair = _pair(index, custom_id, _templated_body(obj, body), found)
            yield plugged.add(replace(pair, template=template, input=obj.get("input")))


def _templated_body(line: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The body a templated line's template builds (what the engine was sent: the review
    page shows it, fine-tuning exports learn from it); the record itself where the
    template cannot build it here (its plugin gone, disabled or failing)."""
    plugins = loaded()
    if plugins is not None:
        try:
            return build_body(plugins, line)[1]
        except PluginError:
            pass
    return {"template": line["template"], "input": line.get("input"), **overrides}


class _Plugged:
    """The plugin data of a batch's results, read alongside its requests."""

    def __init__(self, db: Database, batch_id: str, start: int) -> None:
        self.rows: Iterator[Any] | None = None
        self.start = (db, batch_id, start)
        self.head: Any = None

    def add(self, pair: RequestPair) -> RequestPair:
        if self.rows is None:  # read only for a batch with templated lines
            self.rows = plugin_data(*self.start)
            self.head = next(self.rows, None)
        while self.head is not None and self.head[0] < pair.index:
            self.head = next(self.rows, None)
        if self.head is None or self.head[0] != pair.index:
            return pair
        _index, fields, error, ratings = self.head
        return replace(pair, fields=fields, plugin_error=error, ratings=ratings)


class _Head:
    """An ordered stream of output lines and the line at its head."""

    def __init__(self, lines: Iterator[dict[str, Any]]) -> None:
        self.lines = lines
        self.head = next(lines, None)

    @property
    def custom_id(self) -> Any:
        return None if self.head is None else self.head.get("custom_id")

    def take(self) -> dict[str, Any] | None:
        head, self.head = self.head, next(self.lines, None)
        return head


def find(db: Database, store: FileStore, batch: BatchRow, custom_id: str) -> RequestPair | None:
    """The request ``custom_id`` of ``batch``. A search remembers every index it passes,
    so the next look-up of the same batch reads from that request on."""
    start = _INDEX.get((batch.id, custom_id))
    if start is not None:
        pair = next(iter_pairs(db, store, batch, start), None)
        if pair is not None and pair.custom_id == custom_id:
            return pair
    return _search(db, store, batch, custom_id)


def _search(db: Database, store: FileStore, batch: BatchRow, custom_id: str) -> RequestPair | None:
    for pair in iter_pairs(db, store, batch):
        _remember((batch.id, pair.custom_id), pair.index)
        if pair.custom_id == custom_id:
            return pair
    return None


_INDEX: OrderedDict[tuple[str, str], int] = OrderedDict()
_INDEX_SIZE = 200_000


def _remember(key: tuple[str, str], index: int) -> None:
    _INDEX[key] = index
    _INDEX.move_to_end(key)
    while len(_INDEX) > _INDEX_SIZE:
        _INDEX.popitem(last=False)


def _pair(
    index: int, custom_id: str, body: dict[str, Any], found: dict[str, Any] | None
) -> RequestPair:
    if found is None:
        return RequestPair(index, custom_id, body, None, None, None)
    response = found.get("response") or {}
    status = response.get("status_code")
    payload = response.get("body")
    if status == 200:
        return RequestPair(index, custom_id, body, 200, payload, None)
    error = found.get("error") or (payload or {}).get("error")
    return RequestPair(index, custom_id, body, status, None, error)


def _live_outcomes(db: Database, batch_id: str, start: int) -> Iterator[dict[str, Any]]:
    """The finished results of a running batch, in request order."""
    after = start - 1
    while True:
        with db.read() as s:
            rows = s.execute(
                select(ResultRow.request_index, ResultRow.payload)
                .where(ResultRow.batch_id == batch_id, ResultRow.request_index > after)
                .order_by(ResultRow.request_index)
                .limit(CHUNK)
            ).all()
        for index, payload in rows:
            yield json.loads(payload)
            after = index
        if len(rows) < CHUNK:
            return


def _file_outcomes(store: FileStore, file_id: str | None) -> Iterator[dict[str, Any]]:
    for raw in file_lines(store, file_id):
        yield json.loads(raw)
