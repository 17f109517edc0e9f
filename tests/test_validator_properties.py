"""Property tests of the batch-file validator (``batch_server.jobs.validation.validate``):
any file, any line is either accepted and runnable, or refused with its line number.

A unit test: the validator is a pure function over a byte stream. The files come from
tests/batch_files.py (near-valid request lines with mutated fields, arbitrary JSON values
and bytes, lone surrogates as ``\\ud800`` escapes or as raw bytes, huge numbers, NaN, deep
nesting, NUL bytes, BOMs, CRLF, blank lines). ``BATCH_SERVER_PROPERTY_EXAMPLES`` sets the
examples per property (default 400).
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis import strategies as st

from batch_files import ALIASES, ENDPOINT, MODEL, files, plausible_lines, valid_files
from batch_server.jobs.validation import Validation, iter_lines, validate

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("BATCH_SERVER_PROPERTY_EXAMPLES", "400"))
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
    print_blob=True,
)


def documented_codes() -> set[str]:
    """The validation error codes docs/api.md lists (its "Codes:" paragraph)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    paragraph = text[text.index("\nCodes:") :].split("\n\n")[0]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


CODES = documented_codes()
WHOLE_FILE = {"empty_file", "too_many_requests"}  # may have no line


@dataclass
class Options:
    batch_model: str | None
    max_requests: int
    unit_size: int
    max_errors: int
    max_line_bytes: int


# hostile files, and files of plausible requests (accepted unless something is off)
any_files = files() | files(plausible_lines(), min_lines=1)

options = st.builds(
    Options,
    batch_model=st.sampled_from([None, MODEL, "smollm2", "no-such-model"]),
    max_requests=st.integers(1, 20),
    unit_size=st.integers(1, 4),
    max_errors=st.integers(1, 100),
    # mostly the default: with a small limit few files are accepted
    max_line_bytes=st.sampled_from([4 * 1024 * 1024] * 8 + [300, 30]),
)


def validated(data: bytes, opts: Options) -> Validation:
    """The validation of a file that does not make the validator raise: each property
    below fails for its own reason (a raise is test_validate_never_raises's)."""
    try:
        return run(data, opts)
    except Exception:
        reject()


def run(data: bytes, opts: Options) -> Validation:
    # The failing example, spelled out (Hypothesis 6.170 prints its arguments empty).
    note(f"file: {data!r}")
    note(f"options: {opts}")
    return validate(
        io.BytesIO(data),
        endpoint=ENDPOINT,
        batch_model=opts.batch_model,
        aliases=ALIASES,
        max_requests=opts.max_requests,
        unit_size=opts.unit_size,
        max_errors=opts.max_errors,
        max_line_bytes=opts.max_line_bytes,
    )


def physical_lines(data: bytes) -> list[bytes]:
    """Lines as the validator counts them (iterating a binary file: split after b"\\n")."""
    return io.BytesIO(data).readlines()


def worker_reads(data: bytes, unit: Any) -> list[tuple[str, dict[str, Any], bytes]]:
    """A unit's requests read back exactly as worker.py ``_read_requests`` does."""
    fh = io.BytesIO(data)
    requests = []
    for offset, line in enumerate(iter_lines(fh, unit.byte_start)):
        if offset >= unit.request_count or line.byte_start >= unit.byte_end:
            break
        obj = json.loads(line.raw)
        requests.append((obj["custom_id"], obj["body"], line.raw))
    return requests


@fuzz_settings
@given(data=any_files, opts=options)
def test_validate_never_raises(data: bytes, opts: Options) -> None:
    run(data, opts)


@fuzz_settings
@given(data=any_files, opts=options)
def test_refused_files_point_at_their_lines(data: bytes, opts: Options) -> None:
    result = validated(data, opts)
    if not result.errors:
        return
    lines = physical_lines(data)
    assert result.units == []
    assert len(result.errors) <= opts.max_errors
    numbered = [e["line"] for e in result.errors if e["line"] is not None]
    assert numbered == sorted(numbered), result.errors
    for error in result.errors:
        assert error["code"] in CODES, f"{error} (not a code docs/api.md lists)"
        assert isinstance(error["message"], str) and error["message"], error
        line = error["line"]
        if line is None:
            assert error["code"] in WHOLE_FILE, error
            continue
        assert type(line) is int, error
        assert 1 <= line <= len(lines), (error, len(lines))
        assert lines[line - 1].strip(), f"{error} points at a blank line"
    # the errors go back to the client as JSON, and into the database
    json.dumps(result.errors, ensure_ascii=False, allow_nan=False).encode("utf-8")


def accepted(data: bytes, opts: Options) -> list[tuple[str, dict[str, Any], bytes]]:
    """The requests of an accepted file as the worker reads them (none if refused),
    checked against the units: they cover the request lines in order, each once, and add
    up to the total."""
    result = validated(data, opts)
    if result.errors:
        return []
    request_lines = [raw for raw in physical_lines(data) if raw.strip()]
    assert result.total == len(request_lines) >= 1
    assert result.total <= opts.max_requests
    assert sum(u.request_count for u in result.units) == result.total
    assert result.models == {u.model for u in result.units}
    requests: list[tuple[str, dict[str, Any], bytes]] = []
    for index, unit in enumerate(result.units):
        assert unit.index == index
        assert unit.first_request == len(requests)
        assert 1 <= unit.request_count <= opts.unit_size
        assert unit.model in ALIASES.values()
        read = worker_reads(data, unit)
        assert len(read) == unit.request_count, unit
        for _custom_id, body, _raw in read:
            assert isinstance(body, dict)
            assert ALIASES[body.get("model") or opts.batch_model] == unit.model
        requests += read
    assert [raw for _, _, raw in requests] == request_lines
    return requests


@fuzz_settings
@given(data=any_files, opts=options)
def test_accepted_files_are_read_back_by_the_worker(data: bytes, opts: Options) -> None:
    """Every accepted line is read back by the worker as a request with a string
    custom_id (distinct from the others') and an object body, in the unit of its model."""
    requests = accepted(data, opts)
    custom_ids = [custom_id for custom_id, _, _ in requests]
    assert all(isinstance(c, str) and c for c in custom_ids), custom_ids
    assert len(set(custom_ids)) == len(custom_ids), custom_ids


@fuzz_settings
@given(data=any_files, opts=options)
def test_accepted_requests_can_be_stored_as_utf8(data: bytes, opts: Options) -> None:
    """Results and output files are UTF-8 (and so is PostgreSQL text): every string of an
    accepted request, its custom_id first, must encode; and an accepted line is UTF-8
    (a line that is not is an invalid_encoding, docs/api.md)."""
    for custom_id, _, raw in accepted(data, opts):
        custom_id.encode("utf-8")
        json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8")
        raw.decode("utf-8")


@fuzz_settings
@given(data=any_files, opts=options)
def test_accepted_requests_are_strict_json(data: bytes, opts: Options) -> None:
    """An accepted request can be sent to an engine and written back as JSON: no NaN or
    Infinity, which Python's parser takes but JSON has not."""
    for _, _, raw in accepted(data, opts):
        json.dumps(json.loads(raw), allow_nan=False)


@fuzz_settings
@given(data=valid_files(), batch_model=st.sampled_from([None, MODEL, "smollm2"]))
def test_valid_files_are_accepted(data: bytes, batch_model: str | None) -> None:
    """Valid requests (any valid text, astral characters as surrogate pairs included) are
    never refused, and each becomes exactly one request."""
    opts = Options(batch_model, 50, 3, 100, 4 * 1024 * 1024)
    result = run(data, opts)
    assert result.errors == []
    assert result.total == sum(1 for raw in physical_lines(data) if raw.strip())
