"""Hypothesis strategies for batch input files (JSONL): near-valid request lines with
mutated fields, arbitrary JSON values and arbitrary bytes, joined with the oddities real
files have (CRLF, blank lines, a BOM, no final newline).

Used by the validator's property tests (tests/test_validator_properties.py) and, through
tests/apifuzz_hooks.py, as the file content schemathesis uploads to the API.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

ENDPOINT = "/v1/chat/completions"
MODEL = "smollm2-135m-instruct"
ALIASES = {MODEL: MODEL, "smollm2": MODEL}

LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
BIG_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**20, 10**30, 10**400])
SPECIAL_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])

# Text that may hold anything a JSON string can spell: lone surrogates (as \ud800
# escapes once dumped with ensure_ascii), NUL, controls, astral characters (as surrogate
# pairs once escaped), a BOM character.
# (joined by hand: st.text() drops surrogates from any alphabet)
texts = st.lists(
    st.one_of(
        st.characters(exclude_categories=["Cs"]),
        LONE_SURROGATES,
        st.sampled_from(["\x00", "\ufeff", "\u2028", "\U0001f600", "\\", '"']),
    ),
    max_size=12,
).map("".join)
valid_texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    BIG_INTS,
    st.floats(),
    SPECIAL_FLOATS,
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def nested(draw: st.DrawFn) -> str:
    """JSON text nested deeper than a parser may go (or just deep)."""
    depth = draw(st.sampled_from([2, 50, 999, 1001, 5000, 100_000]))
    open_, close = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return open_ * depth + "1" + close * depth


def valid_request(custom_id: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    }


@st.composite
def near_valid_requests(draw: st.DrawFn) -> Any:
    """A request line's object with some of its fields mutated, dropped or added."""
    obj: dict[str, Any] = valid_request(draw(texts | st.just("x")))
    obj["body"]["messages"][0]["content"] = draw(texts)
    mutations = {
        "custom_id": json_values | texts | st.just("") | st.text(min_size=300, max_size=2000),
        "method": st.sampled_from(["POST", "post", "GET", "", " POST"]) | json_values,
        "url": st.sampled_from(
            [ENDPOINT, "/v1/completions", "/v1/embeddings", "", ENDPOINT + "/", "/v1/x"]
        )
        | json_values,
        "body": json_values,
        "body.model": st.sampled_from([MODEL, "smollm2", "no-such-model", "", " "]) | json_values,
        "body.max_tokens": st.integers() | BIG_INTS | SPECIAL_FLOATS | json_values,
        "body.messages": json_values,
        "body.extra": json_values,
        "extra": json_values,
    }
    for name in draw(st.lists(st.sampled_from(sorted(mutations)), max_size=3, unique=True)):
        where, key = (obj.get("body"), name[5:]) if name.startswith("body.") else (obj, name)
        if not isinstance(where, dict):
            continue
        if draw(st.booleans()) or name in ("extra", "body.extra"):
            where[key] = draw(mutations[name])
        else:
            where.pop(key, None)
    return obj


@st.composite
def dumped(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A value as one JSON line: ASCII with escapes, or raw UTF-8 (a lone surrogate then
    becomes invalid UTF-8 bytes), compact or spaced."""
    value = draw(values)
    ascii_ = draw(st.booleans())
    separators = draw(st.sampled_from([None, (",", ":")]))
    text = json.dumps(value, ensure_ascii=ascii_, separators=separators)
    return text.encode("utf-8", "surrogatepass")


# A valid request in another Unicode encoding: Python's json.loads(bytes) detects UTF-16
# and UTF-32, but a batch file is UTF-8 (valid only as a file's last line, with no
# newline after it: a b"\n" byte splits UTF-16 text).
OTHER_ENCODINGS = st.sampled_from(["utf-16-le", "utf-16-be", "utf-16", "utf-32"]).map(
    lambda codec: json.dumps(valid_request("u16")).encode(codec)
)

raw_lines = st.one_of(
    st.binary(max_size=40),
    OTHER_ENCODINGS,
    st.sampled_from(
        [b"", b" ", b"\t", b"\r", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe{}", b"{}", b"[]", b"null"]
    ),
    st.sampled_from([b"NaN", b"Infinity", b'{"custom_id": NaN}', b"1" * 5000, b"-1e999"]),
    nested().map(str.encode),
)


valid_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | valid_texts,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(valid_texts, children, max_size=3)
    ),
    max_leaves=8,
)
SNEAKY = ["custom_id", "content", "parameter", "model"]


@st.composite
def plausible_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request of valid text and values, or (one time in three) with one
    sneaky part: a custom_id or message of any text (lone surrogates, NUL), a parameter of
    any JSON value (NaN, huge numbers), a model that is no string."""
    sneaky = draw(st.sampled_from([None] * 8 + SNEAKY))  # shrinks to None: valid
    obj = valid_request(draw((texts if sneaky == "custom_id" else valid_texts).filter(bool)))
    obj["body"]["messages"][0]["content"] = draw(texts if sneaky == "content" else valid_texts)
    if draw(st.booleans()):
        obj["body"][draw(valid_texts)] = draw(valid_json_values)
    if sneaky == "parameter":
        obj["body"][draw(texts)] = draw(json_values)
    obj["body"]["model"] = draw(st.sampled_from([MODEL, "smollm2", None]))
    if sneaky == "model":
        obj["body"]["model"] = draw(json_values)
    if obj["body"]["model"] is None:
        del obj["body"]["model"]
    return obj


blank_lines = st.sampled_from([b"", b" ", b"\t", b"\r", b"\x0c"])
# Numbers JSON spells but Python reads as NaN or infinity (or refuses outright).
ODD_NUMBERS = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1E400", b"0e-999"])


@st.composite
def plausible_lines(draw: st.DrawFn) -> bytes:
    """Mostly a plausible request; now and then one with an odd number spliced into its
    JSON text, or a blank line."""
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(blank_lines)
    line = draw(dumped(plausible_requests()))
    if kind == 8:
        line = line.rstrip()[:-1] + b', "z": ' + draw(ODD_NUMBERS) + b"}"
    return line


request_lines = st.one_of(
    plausible_lines(),
    dumped(near_valid_requests()),
    dumped(json_values),
    raw_lines,
    # a valid request with something spliced into its JSON text
    st.tuples(dumped(st.just(valid_request("s"))), raw_lines).map(
        lambda t: t[0][:-1] + b', "z": ' + t[1] + b"}"
    ),
)


@st.composite
def files(
    draw: st.DrawFn, lines: st.SearchStrategy[bytes] = request_lines, min_lines: int = 0
) -> bytes:
    """A batch file: lines joined by LF or CRLF, maybe a BOM, maybe no final newline."""
    body = draw(st.lists(lines, min_size=min_lines, max_size=8))
    if body and draw(st.integers(0, 3)) == 3:  # a line again: a duplicate custom_id
        body.insert(draw(st.integers(0, len(body))), draw(st.sampled_from(body)))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = b"".join(line + newline for line in body)
    if body and draw(st.booleans()):
        data = data[: -len(newline)]
    if draw(st.integers(0, 9)) == 9:  # (shrinks to no BOM)
        data = b"\xef\xbb\xbf" + data
    return data


@st.composite
def valid_files(draw: st.DrawFn) -> bytes:
    """Files every line of which is a valid request with a distinct custom_id (any valid
    text: astral characters escaped as surrogate pairs are valid), maybe with blank lines."""
    ids = draw(st.lists(valid_texts.filter(bool), min_size=1, max_size=8, unique=True))
    lines = []
    for custom_id in ids:
        request = valid_request(custom_id)
        request["body"]["messages"][0]["content"] = draw(valid_texts)
        lines.append(json.dumps(request, ensure_ascii=draw(st.booleans())).encode())
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.sampled_from([b"", b"  ", b"\t"])))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    return b"".join(line + newline for line in lines)
