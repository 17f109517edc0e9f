"""Evaluate a candidate profile against a role: the example plugin of vLLM Batch Server.

A template turns a record (candidate + role) into a chat request whose answer must follow
``OUTPUT_SCHEMA``; a parser keeps its fields, a renderer shows them, an exporter writes
them as CSV, a rating marks strong candidates."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from markupsafe import Markup

from batch_server.plugins import Exporter, Rating, Template, hookimpl

__version__ = "0.1.0"

TEMPLATE = "candidate_evaluation"

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["candidate", "role"],
    "properties": {
        "candidate": {
            "type": "object",
            "required": ["name", "title", "years_experience", "skills", "summary"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "title": {"type": "string"},
                "years_experience": {"type": "number", "minimum": 0},
                "skills": {"type": "array", "items": {"type": "string"}},
                "summary": {"type": "string"},
            },
        },
        "role": {
            "type": "object",
            "required": ["title", "requirements"],
            "properties": {
                "title": {"type": "string", "minLength": 1},
                "requirements": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}

# Short phrases, at most two of each: the JSON grammar that constrains generation keeps
# the answer short enough to finish within max_tokens (a small model otherwise goes on
# listing). The score is an enum, not minimum/maximum, for the same grammar's sake.
PHRASES: dict[str, Any] = {
    "type": "array",
    "maxItems": 2,
    "items": {"type": "string", "minLength": 1, "maxLength": 40},
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["score", "verdict", "strengths", "concerns"],
    "additionalProperties": False,
    "properties": {
        "score": {"type": "integer", "enum": list(range(1, 11))},
        "verdict": {"type": "string", "enum": ["hire", "maybe", "reject"]},
        "strengths": PHRASES,
        "concerns": PHRASES,
    },
}

SYSTEM_PROMPT = (
    "You are a hiring assistant. Compare the candidate with the role's requirements. "
    "Answer with a JSON object: score (an integer from 1 to 10), verdict (hire, maybe or "
    "reject), strengths (a list of short phrases) and concerns (a list of short phrases)."
)


def build(record: dict[str, Any]) -> dict[str, Any]:
    """The chat request for one candidate and role."""
    c, role = record["candidate"], record["role"]
    user = (
        f"Role: {role['title']}\n"
        f"Requirements: {', '.join(role['requirements']) or 'none given'}\n\n"
        f"Candidate: {c['name']}, {c['title']}, {c['years_experience']} years of experience\n"
        f"Skills: {', '.join(c['skills']) or 'none given'}\n"
        f"Summary: {c['summary']}"
    )
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "candidate_evaluation",
                "strict": True,
                "schema": OUTPUT_SCHEMA,
            },
        },
        "temperature": 0,
        "max_tokens": 200,
    }


@hookimpl
def batch_server_templates() -> list[Template]:
    return [
        Template(
            name=TEMPLATE,
            build=build,
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
            description="A candidate profile evaluated against a role: score, verdict, "
            "strengths, concerns",
        )
    ]


@hookimpl
def batch_server_parse(template: Template, text: str | None) -> dict[str, Any] | None:
    """The answer's JSON object, lists of phrases cleaned of blanks (the output schema is
    checked by the server afterwards)."""
    if template.name != TEMPLATE:
        return None
    fields = json.loads((text or "").strip())
    if not isinstance(fields, dict):
        raise ValueError("the answer is not a JSON object")
    for key in ("strengths", "concerns"):
        if isinstance(fields.get(key), list):
            fields[key] = [s.strip() for s in fields[key] if isinstance(s, str) and s.strip()]
    return fields


@hookimpl
def batch_server_render(
    template: Template, fields: dict[str, Any] | None, plugin_error: str | None
) -> Markup | str | None:
    """A score badge, the verdict and both lists (every value escaped)."""
    if template.name != TEMPLATE:
        return None
    if fields is None:
        return f"No evaluation: {plugin_error or 'not run yet'}"  # a str: escaped
    items = Markup("").join

    def listing(values: list[str]) -> Markup:
        return items(Markup("<li>{}</li>").format(v) for v in values) or Markup("<li>–</li>")

    return Markup(
        '<div class="candidate-evaluation" data-verdict="{verdict}">'
        '<p><strong class="score" data-score="{score}">{score}/10</strong> {verdict}</p>'
        '<p>Strengths</p><ul class="strengths">{strengths}</ul>'
        '<p>Concerns</p><ul class="concerns">{concerns}</ul></div>'
    ).format(
        verdict=fields.get("verdict", ""),
        score=fields.get("score", ""),
        strengths=listing(fields.get("strengths") or []),
        concerns=listing(fields.get("concerns") or []),
    )


def write_csv(examples: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """One row per evaluated candidate: who, score, verdict, strengths, concerns."""
    buffer = io.StringIO()
    table = csv.writer(buffer, lineterminator="\n")
    table.writerow(["custom_id", "candidate", "score", "verdict", "strengths", "concerns", "label"])
    for ex in examples:
        fields = ex.get("fields") or {}
        record = _record(ex)
        table.writerow(
            [
                ex.get("custom_id"),
                (record.get("candidate") or {}).get("name", ""),
                fields.get("score", ""),
                fields.get("verdict", ""),
                "; ".join(fields.get("strengths") or []),
                "; ".join(fields.get("concerns") or []),
                ex.get("label") or "",
            ]
        )
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()


def _record(ex: dict[str, Any]) -> dict[str, Any]:
    """The candidate record an example was made from (its templated line's ``input``)."""
    value = ex.get("input")
    return value if isinstance(value, dict) else {}


@hookimpl
def batch_server_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="candidate-csv",
            write=write_csv,
            suffix=".candidates.csv",
            description="One row per candidate: score, verdict, strengths, concerns",
        )
    ]


def strong(fields: dict[str, Any], response: dict[str, Any]) -> bool | None:
    score = fields.get("score")
    if not isinstance(score, int):
        return None
    return score >= 7 and bool(fields.get("strengths"))


@hookimpl
def batch_server_ratings() -> list[Rating]:
    return [
        Rating(
            name="strong_candidate",
            rate=strong,
            templates=(TEMPLATE,),
            description="score >= 7 and at least one strength",
        )
    ]
