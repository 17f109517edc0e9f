"""Exports of a collection's version, each written as a File (so the Files API and the
SDKs fetch it): OpenAI fine-tuning chat JSONL, few-shot examples (a JSON list and a ready
prompt block), CSV and Parquet. The examples are read a chunk at a time in the version's
frozen order, and nothing in the bytes depends on the time of the export, so exporting
one version twice gives the same bytes.

Few-shot selection, in the version's order: an example is left out when its prompt is
near-identical to one already chosen (``diverse``: the Jaccard similarity of their word
3-gram sets, lower-cased, is ≥ ``similarity``, 0.8 by default; prompts shorter than three
words compare their word sets), and when it does not fit in what is left of
``token_budget``. Tokens are estimated as ``ceil(characters / 4)`` of the example's
rendered block ("Example N\\nInput: …\\nOutput: …"): the tokenizer lives in the engine's
process, not in the API server, and the estimate is what OpenAI's guidance uses for
English text. The same budget selects the same examples in both few-shot formats.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, get_args

from batch_server import ids
from batch_server.curation import collections
from batch_server.curation.finetune_format import example_errors
from batch_server.db.session import Database
from batch_server.db.tables import CollectionRow, FileRow
from batch_server.errors import APIError
from batch_server.plugins.manager import PluginError, Plugins
from batch_server.plugins.results import guarded_iter
from batch_server.plugins.types import Exporter
from batch_server.storage import CHUNK, FileStore, Writer

Format = Literal["openai-finetune-jsonl", "few-shot-json", "few-shot-prompt", "csv", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
SUFFIX = {
    "openai-finetune-jsonl": ".jsonl",
    "few-shot-json": ".few-shot.json",
    "few-shot-prompt": ".few-shot.txt",
    "csv": ".csv",
    "parquet": ".parquet",
}
COLUMNS = (
    "batch_id",
    "custom_id",
    "model",
    "prompt",
    "answer",
    "fixed_answer",
    "label",
    "rating",
    "note",
    "rater",
)
TOKEN_ESTIMATE = "ceil(chars/4)"
MAX_FEW_SHOT = 1000
PARQUET_ROW_GROUP = 1000


@dataclass(frozen=True)
class Options:
    labels: tuple[str, ...] | None = None  # None: golden and fixed for fine-tuning, else all
    token_budget: int | None = None
    diverse: bool = False
    similarity: float = 0.8
    max_examples: int | None = None  # few-shot only; at most MAX_FEW_SHOT
    include_system: bool = True  # fine-tuning: keep the request's system messages


@dataclass(frozen=True)
class Export:
    file: FileRow
    format: str
    version: int
    count: int  # examples written
    skipped: int  # examples that matched the labels but were left out
    tokens: int | None  # few-shot: the estimated tokens of what was chosen


@dataclass
class _Tally:
    count: int = 0
    skipped: int = 0
    tokens: int | None = None


def export(
    db: Database,
    store: FileStore,
    collection: CollectionRow,
    number: int,
    fmt: str,
    options: Options,
    plugins: Plugins | None = None,
) -> Export:
    """Write version ``number`` of ``collection`` as ``fmt`` (a built-in format or an
    enabled plugin's exporter) into a new File (owned by the collection's owner)."""
    found = plugins.exporter(fmt) if plugins is not None and fmt not in FORMATS else None
    if fmt not in FORMATS and found is None:
        extra = sorted(n for n in plugins.exporters if plugins.exporter(n)) if plugins else []
        raise APIError(
            f"format must be one of {', '.join([*FORMATS, *extra])}",
            param="format",
            code="invalid_value",
        )
    labels = options.labels or (collections.DEFAULT_LABELS if fmt == FORMATS[0] else None)

    def examples() -> Iterator[dict[str, Any]]:
        for ex in collections.iter_examples(db, collection.id, number):
            if labels is None or ex.get("label") in labels:
                yield ex

    file_id = ids.file_id()
    tally = _Tally()
    writer = _WRITERS[fmt] if found is None else _plugin_writer(*found)
    try:
        with store.writer(file_id) as out:
            writer(examples, out, options, tally)
            size = out.tell()
    except PluginError as exc:
        store.delete(file_id)
        raise APIError(str(exc), param="format", code="plugin_error", status_code=500) from exc
    if tally.count == 0 and fmt in FORMATS[:3]:
        store.delete(file_id)
        raise APIError(
            f"No example of version {number} can be exported as {fmt} "
            f"(labels {', '.join(labels or ['any'])})",
            param="options",
            code="empty_export",
        )
    purpose = "fine-tune" if fmt == "openai-finetune-jsonl" else "user_data"
    suffix = SUFFIX[fmt] if found is None else found[1].suffix
    filename = f"{collection.name}-v{number}{suffix}"
    row = save_file(db, file_id, purpose, filename, size, collection.owner)
    return Export(row, fmt, number, tally.count, tally.skipped, tally.tokens)


def save_file(
    db: Database, file_id: str, purpose: str, filename: str, size: int, owner: str | None
) -> FileRow:
    """Register bytes written to the store under ``file_id`` as a File (kept until
    deleted), so the Files API and the SDK fetch an export like any other file."""
    row = FileRow(
        id=file_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        created_at=int(time.time()),
        expires_at=None,
        status="processed",
        deleted=False,
        owner=owner,
    )
    with db.write() as s:
        s.add(row)
    return row


Examples = Callable[[], Iterator[dict[str, Any]]]


# -- fine-tuning -----------------------------------------------------------------------


def finetune_line(ex: dict[str, Any], include_system: bool = True) -> dict[str, Any]:
    """One example as a line of OpenAI's fine-tuning chat format."""
    messages = [
        {"role": m["role"], "content": m["content"]}
        for m in ex.get("messages") or []
        if include_system or m["role"] != "system"
    ]
    return {"messages": [*messages, {"role": "assistant", "content": ex.get("target") or ""}]}


def _finetune(examples: Examples, out: Writer, options: Options, tally: _Tally) -> None:
    for ex in examples():
        line = finetune_line(ex, options.include_system)
        if example_errors(line):  # no answer to learn from, or no prompt left
            tally.skipped += 1
            continue
        out.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        tally.count += 1


# -- few-shot --------------------------------------------------------------------------


def shingles(text: str, size: int = 3) -> frozenset[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < size:
        return frozenset(words)
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def block(number: int, prompt: str, answer: str) -> str:
    return f"Example {number}\nInput: {prompt}\nOutput: {answer}"


def choose(examples: Iterable[dict[str, Any]], options: Options, tally: _Tally) -> list[Any]:
    """The few-shot examples ``(prompt, answer)``, by the rule in the module's docstring."""
    limit = min(options.max_examples or MAX_FEW_SHOT, MAX_FEW_SHOT)
    chosen: list[tuple[str, str]] = []
    seen: list[frozenset[str]] = []
    used = 0
    for ex in examples:
        prompt, answer = ex.get("prompt") or "", ex.get("target") or ""
        if not prompt.strip() or not answer.strip() or len(chosen) >= limit:
            tally.skipped += 1
            continue
        grams = shingles(prompt)
        if options.diverse and any(jaccard(grams, s) >= options.similarity for s in seen):
            tally.skipped += 1
            continue
        cost = estimate_tokens(block(len(chosen) + 1, prompt, answer))
        if options.token_budget is not None and used + cost > options.token_budget:
            tally.skipped += 1
            continue
        chosen.append((prompt, answer))
        seen.append(grams)
        used += cost
    tally.count, tally.tokens = len(chosen), used
    return chosen


def _few_shot_json(examples: Examples, out: Writer, options: Options, tally: _Tally) -> None:
    chosen = choose(examples(), options, tally)
    data = [{"input": p, "output": a} for p, a in chosen]
    out.write(json.dumps(data, ensure_ascii=False, indent=2).encode() + b"\n")


def _few_shot_prompt(examples: Examples, out: Writer, options: Options, tally: _Tally) -> None:
    chosen = choose(examples(), options, tally)
    text = "\n\n".join(block(i, p, a) for i, (p, a) in enumerate(chosen, start=1))
    out.write(text.encode() + b"\n")


# -- tables ----------------------------------------------------------------------------


def field_names(examples: Examples) -> list[str]:
    """The union of the parsed answers' field names (first pass of a table export)."""
    names: dict[str, None] = {}
    for ex in examples():
        names.update(dict.fromkeys(ex.get("fields") or {}))
    return sorted(names)


def row(ex: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """One table row: the columns, then ``field.<name>`` (strings as they are, other JSON
    values as JSON text, so every row of a column has one type)."""
    values = {c: ex.get(c) for c in COLUMNS}
    parsed = ex.get("fields") or {}
    for name in fields:
        value = parsed.get(name)
        values[f"field.{name}"] = (
            value if value is None or isinstance(value, str) else json.dumps(value)
        )
    return values


def _csv(examples: Examples, out: Writer, options: Options, tally: _Tally) -> None:
    fields = field_names(examples)
    buffer = io.StringIO()
    table = csv.writer(buffer, lineterminator="\n")
    table.writerow([*COLUMNS, *(f"field.{f}" for f in fields)])
    for ex in examples():
        table.writerow(["" if v is None else v for v in row(ex, fields).values()])
        tally.count += 1
        if buffer.tell() > CHUNK:
            out.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue().encode())


def _parquet(examples: Examples, out: Writer, options: Options, tally: _Tally) -> None:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:
        raise APIError(
            "Parquet exports need pyarrow (pip install 'pyarrow>=15')",
            param="format",
            code="unsupported_format",
        ) from exc
    fields = field_names(examples)
    schema = pa.schema(
        [(c, pa.int64() if c == "rating" else pa.string()) for c in COLUMNS]
        + [(f"field.{f}", pa.string()) for f in fields]
    )
    with tempfile.TemporaryFile() as tmp:
        with pq.ParquetWriter(tmp, schema) as table:
            rows: list[dict[str, Any]] = []
            for ex in examples():
                rows.append(row(ex, fields))
                tally.count += 1
                if len(rows) >= PARQUET_ROW_GROUP:
                    table.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows.clear()
            if rows or tally.count == 0:
                table.write_table(pa.Table.from_pylist(rows, schema=schema))
        _copy(tmp, out)


def _copy(src: BinaryIO, out: Writer) -> None:
    src.seek(0)
    while chunk := src.read(CHUNK):
        out.write(chunk)


# -- plugins ---------------------------------------------------------------------------


def _plugin_writer(plugin: str, exporter: Exporter) -> _Write:
    """A plugin's exporter as a writer: its exception becomes a :class:`PluginError`."""

    def write(examples: Examples, out: Writer, options: Options, tally: _Tally) -> None:
        def counted() -> Iterator[dict[str, Any]]:
            for ex in examples():
                tally.count += 1
                yield ex

        def chunks() -> Iterator[bytes]:
            data = exporter.write(counted())
            yield from [data] if isinstance(data, bytes) else data

        for chunk in guarded_iter(plugin, f"exporter {exporter.name}", chunks()):
            out.write(chunk)

    return write


_Write = Callable[[Examples, Writer, Options, _Tally], None]
_WRITERS: dict[str, _Write] = {
    "openai-finetune-jsonl": _finetune,
    "few-shot-json": _few_shot_json,
    "few-shot-prompt": _few_shot_prompt,
    "csv": _csv,
    "parquet": _parquet,
}
