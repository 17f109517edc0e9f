"""A comparison's picks as preference data: OpenAI's preference fine-tuning JSONL (one
line per pick and losing model: the request's messages, the picked model's answer as
``preferred_output``, the other's as ``non_preferred_output``), written as a File.

The linked batches share one input file, so their requests come in the same order:
one streamed pass over each batch (:func:`~batch_server.curation.requests.iter_pairs`)
side by side reads every request's answers without holding a batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from batch_server import ids
from batch_server.curation.examples import prompt_messages
from batch_server.curation.exports import save_file
from batch_server.curation.requests import RequestPair, iter_pairs
from batch_server.curation.texts import answer_text
from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, ComparisonPickRow, ComparisonRow, FileRow
from batch_server.errors import APIError
from batch_server.models.comparisons import pick_counts
from batch_server.storage import FileStore

FORMAT = "openai-preference-jsonl"


@dataclass(frozen=True)
class PreferenceExport:
    file: FileRow
    count: int  # lines written
    skipped: int  # picks that could not be written (an answer missing or failed)
    ties: int  # picks of no model (a tie): no preference to learn


def export(
    db: Database, store: FileStore, row: ComparisonRow, batches: dict[str, BatchRow]
) -> PreferenceExport:
    picks = _picks(db, row.id)
    runs = [(model, batches.get(batch_id)) for model, batch_id in row.batches.items()]
    missing = [m for m, b in runs if b is None]
    if missing:
        raise APIError(f"The batches of {', '.join(missing)} are gone", code="invalid_value")
    file_id = ids.file_id()
    count = skipped = 0
    with store.writer(file_id) as out:
        for request in _side_by_side(db, store, [(m, b) for m, b in runs if b is not None]):
            winner = picks.get(request[0][1].custom_id)
            if winner is None:
                continue
            lines = list(_lines(row.endpoint, winner, request))
            if not lines:
                skipped += 1
            for line in lines:
                out.write((json.dumps(line, ensure_ascii=False) + "\n").encode())
                count += 1
        size = out.tell()
    ties = int(pick_counts(db, row.id, list(row.batches))["ties"])
    if count == 0:
        store.delete(file_id)
        raise APIError(
            "No pick of this comparison can be exported: pick a better answer first "
            f"({ties} ties, {skipped} picks without both answers)",
            code="empty_export",
        )
    filename = f"{row.id}-preferences.jsonl"
    file = save_file(db, file_id, "fine-tune", filename, size, row.owner)
    return PreferenceExport(file, count, skipped, ties)


def _lines(
    endpoint: str, winner: str, request: list[tuple[str, RequestPair]]
) -> Iterator[dict[str, Any]]:
    answers = {m: _answer(p) for m, p in request}
    preferred = answers.get(winner)
    if preferred is None:
        return
    messages = prompt_messages(endpoint, request[0][1].request)
    for model, text in answers.items():
        if model == winner or text is None or text.strip() == preferred.strip():
            continue
        yield {
            "input": {"messages": messages},
            "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": text}],
        }


def _answer(pair: RequestPair) -> str | None:
    if pair.status_code != 200:
        return None
    text = answer_text(pair.response, tool_calls=False)
    return text if text and text.strip() else None


def _side_by_side(
    db: Database, store: FileStore, runs: list[tuple[str, BatchRow]]
) -> Iterator[list[tuple[str, RequestPair]]]:
    streams = [(model, iter_pairs(db, store, batch)) for model, batch in runs]
    while True:
        request = [(model, next(stream, None)) for model, stream in streams]
        if any(p is None for _, p in request):
            return
        yield [(m, p) for m, p in request if p is not None]


def _picks(db: Database, comparison_id: str) -> dict[str, str]:
    with db.read() as s:
        rows = s.execute(
            select(ComparisonPickRow.custom_id, ComparisonPickRow.model).where(
                ComparisonPickRow.comparison_id == comparison_id,
                ComparisonPickRow.model.is_not(None),
            )
        ).all()
    return {custom_id: model for custom_id, model in rows if model is not None}
