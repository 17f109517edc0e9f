r"""Schemathesis hooks for tests/apifuzz.py (loaded with ``SCHEMATHESIS_HOOKS``).

- Uploaded files (multipart parts of type ``application/x-ndjson``) are batch files from
  tests/batch_files.py, near-valid JSONL, instead of arbitrary bytes.
- Real ids (seeded files, batches, dead letters, models, the throwaway key) replace the
  generated value of an id parameter or body field about half the time, so generated
  requests reach the code behind "not found". The ids come from the JSON file named by
  ``APIFUZZ_IDS``: ``{"ids": {name: [...]}}`` (``after`` takes the ids its listing pages
  over: files under /v1/files, else batches).
- A dictionary of values that break storage and parsing, as fuzzers keep (Hypothesis's
  unbounded integers seldom leave 64 bits): now and then an integer in the query or a
  JSON body becomes one past a machine limit, a run of digits in a string becomes a long
  one ("24h" → "9999999999999999999999999h"), and a string in a JSON body gets a lone
  surrogate (sent as a ``\ud800`` escape) or a NUL.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

from batch_files import files

schemathesis.openapi.media_type("application/x-ndjson", files())

_IDS_FILE = os.environ.get("APIFUZZ_IDS")
_CONFIG = json.loads(Path(_IDS_FILE).read_text()) if _IDS_FILE else {}
BODY_FIELDS = {"input_file_id": "file_id", "model": "model_id"}


IDS: dict[str, list[str]] = _CONFIG.get("ids", {})


def _name(name: str, path: str) -> str:
    if name == "after":
        return "file_id" if path.startswith("/v1/files") else "batch_id"
    return name


SURROGATE_MARKER = "<<lone-surrogate>>"
BIG_INTS = [2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**20, 10**30, -(10**30)]


@st.composite
def _interesting(draw: st.DrawFn, value: Any, in_json: bool, depth: int = 0) -> Any:
    """``value``, or (now and then) a value from the dictionary in its place or inside."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return draw(st.sampled_from(BIG_INTS)) if draw(st.integers(0, 4)) == 0 else value
    if isinstance(value, str):
        choice = draw(st.integers(0, 9))
        if choice == 0 and re.search(r"[0-9]", value):
            return re.sub(r"[0-9]+", "9" * 25, value, count=1)
        if choice == 1 and in_json:
            return value + draw(st.sampled_from([SURROGATE_MARKER, "\x00"]))
        return value
    if depth < 4 and isinstance(value, dict):
        return {k: draw(_interesting(v, in_json, depth + 1)) for k, v in value.items()}
    if depth < 4 and isinstance(value, list):
        return [draw(_interesting(v, in_json, depth + 1)) for v in value]
    return value


@schemathesis.hook
def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> Any:
    path = case.operation.path
    ids = IDS
    targets: list[tuple[dict[str, Any], str, list[str]]] = []
    for container in (case.path_parameters, case.query):
        for name in list(container or {}):
            values = ids.get(_name(name, path))
            if values:
                targets.append((container, name, values))
    if isinstance(case.body, dict):
        for name, kind in BODY_FIELDS.items():
            if name in case.body and ids.get(kind):
                targets.append((case.body, name, ids[kind]))
    in_json = (case.media_type or "").startswith("application/json")

    @st.composite
    def mutated(draw: st.DrawFn) -> schemathesis.Case:
        body = case.body if isinstance(case.body, dict) else None
        for container in (case.query, body):
            for name in list(container or {}):
                value = container[name]
                container[name] = draw(_interesting(value, in_json and container is body))
        for container, name, values in targets:
            if draw(st.booleans()):
                container[name] = draw(st.sampled_from(values))
        return case

    return mutated()


@schemathesis.serializer("application/json")
def json_with_lone_surrogates(ctx: Any, value: Any) -> bytes | None:
    """JSON as schemathesis sends it, with the marker spelled as a lone surrogate."""
    if value is None:
        return b"null"
    if isinstance(value, bytes):
        return value
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = json.dumps(value, default=str)
    return text.replace(SURROGATE_MARKER, "\\ud800").encode()
