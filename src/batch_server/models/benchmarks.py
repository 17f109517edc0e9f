"""Benchmarks: a batch of kind "benchmark" run through the normal queue to measure a model
(every line runs on the benchmark's model), and the figures measured once it has ended.

The dataset is the caller's own batch file, or a built-in one generated here: chat
prompts of varied length asking to evaluate a candidate's profile, the same for the same
size (seeded), so runs on different days or hosts compare like with like.

Figures come from the batch row (counts, tokens), its throughput samples (engine time)
and its ``batch_runs`` rows (load time, first result, peak memory, provenance). They are
computed once, the first time the benchmark is read after its batch has ended.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from batch_server.db.session import Database
from batch_server.db.tables import BatchRow, BatchRunRow, BenchmarkRow, ThroughputSampleRow
from batch_server.jobs.history import INCLUDE_IN_HISTORY
from batch_server.statuses import TERMINAL

GENERATED = "generated"
S = ThroughputSampleRow

_ROLES = [
    "backend engineer",
    "data analyst",
    "product designer",
    "nurse",
    "sales manager",
    "machine learning engineer",
    "accountant",
    "site reliability engineer",
    "teacher",
    "project manager",
]
_SKILLS = [
    "Python",
    "SQL",
    "Kubernetes",
    "customer negotiation",
    "Figma",
    "statistics",
    "team leadership",
    "budget planning",
    "PostgreSQL",
    "patient care",
    "public speaking",
    "Go",
    "Excel",
    "incident response",
    "curriculum design",
    "PyTorch",
]
_EMPLOYERS = ["a bank", "a hospital", "a start-up", "a retailer", "a university", "an agency"]
_NAMES = ["Ada", "Bilal", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivo", "Jun"]


def benchmark_id() -> str:
    return f"bench_{secrets.token_hex(12)}"


def generated_dataset(requests: int, max_tokens: int, model: str) -> bytes:
    """``requests`` chat lines evaluating generated candidate profiles of 1 to 6 jobs
    (prompts from about 60 to 400 tokens), the same for the same arguments."""
    rng = random.Random(f"benchmark-{requests}")
    lines = []
    for i in range(requests):
        role = rng.choice(_ROLES)
        jobs = [
            f"- {rng.randint(1, 9)} years at {rng.choice(_EMPLOYERS)} as {rng.choice(_ROLES)}, "
            f"using {', '.join(rng.sample(_SKILLS, rng.randint(1, 4)))}"
            for _ in range(rng.randint(1, 6))
        ]
        profile = (
            f"Candidate: {rng.choice(_NAMES)} (id {i}).\nExperience:\n"
            + "\n".join(jobs)
            + f"\nEducation: {rng.choice(['BSc', 'MSc', 'PhD', 'diploma'])}."
        )
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "You screen job applications. Be brief."},
                {
                    "role": "user",
                    "content": f"Rate this candidate for a {role} role from 1 to 10 "
                    f"and give one reason.\n\n{profile}",
                },
            ],
        }
        line = {"custom_id": f"bench-{i}", "method": "POST", "url": "/v1/chat/completions"}
        lines.append(json.dumps(line | {"body": body}))
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Measured:
    figures: dict[str, Any]
    provenance: dict[str, Any] | None


def measure(s: Session, batch: BatchRow) -> Measured:
    """The figures of an ended benchmark batch."""
    requests, engine_sum, last_result = s.execute(
        select(
            func.sum(S.requests), func.sum(S.ended_at - S.started_at), func.max(S.ended_at)
        ).where(S.batch_id == batch.id)
    ).one()
    runs = list(
        s.execute(
            select(BatchRunRow).where(BatchRunRow.batch_id == batch.id).order_by(BatchRunRow.id)
        ).scalars()
    )
    done = batch.completed + batch.failed
    engine_seconds = float(engine_sum) if engine_sum else None
    started = min((r.started_at for r in runs), default=None)
    wall = (last_result - started) if started is not None and last_result else None
    firsts = [r.first_result_at for r in runs if r.first_result_at]
    provenance = runs[0].provenance if runs else None
    loads = [r.load_seconds for r in runs if r.load_seconds is not None]
    load = loads[0] if loads else (provenance or {}).get("engine_load_seconds")
    peaks = [r.peak_memory_bytes for r in runs if r.peak_memory_bytes]

    def per(amount: int, seconds: float | None) -> float | None:
        return round(amount / seconds, 3) if seconds and amount else None

    figures = {
        "requests": done,
        "failed": batch.failed,
        "prompt_tokens": batch.input_tokens,
        "output_tokens": batch.output_tokens,
        "engine_seconds": None if engine_seconds is None else round(engine_seconds, 3),
        "wall_seconds": None if wall is None else round(wall, 3),
        "requests_per_second": per(int(requests or 0), engine_seconds),
        "prompt_tokens_per_second": per(batch.input_tokens, engine_seconds),
        "output_tokens_per_second": per(batch.output_tokens, engine_seconds),
        "wall_requests_per_second": per(done, wall),
        "wall_prompt_tokens_per_second": per(batch.input_tokens, wall),
        "wall_output_tokens_per_second": per(batch.output_tokens, wall),
        "time_to_first_result_seconds": (
            round(min(firsts) - batch.created_at, 3) if firsts else None
        ),
        "engine_load_seconds": None if load is None else round(load, 3),
        "peak_memory_bytes": max(peaks) if peaks else None,
    }
    return Measured(figures, provenance)


def settle(db: Database, rows: Iterable[BenchmarkRow], batches: dict[str, BatchRow]) -> None:
    """Measure and store the figures of benchmarks whose batch has ended (once each)."""
    for row in rows:
        batch = batches.get(row.batch_id)
        if row.figures is not None or batch is None or batch.status not in TERMINAL:
            continue
        with db.read() as s:
            measured = measure(s, batch)
        ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
        host = (measured.provenance or {}).get("host")
        with db.write() as s:
            s.execute(
                update(BenchmarkRow)
                .where(BenchmarkRow.id == row.id, BenchmarkRow.figures.is_(None))
                .values(
                    figures=measured.figures,
                    host=host,
                    provenance=measured.provenance,
                    finished_at=ended,
                )
            )
        row.figures, row.host, row.provenance = measured.figures, host, measured.provenance
        row.finished_at = ended


def batches_of(db: Database, rows: Iterable[BenchmarkRow]) -> dict[str, BatchRow]:
    ids = [r.batch_id for r in rows]
    if not ids:
        return {}
    with db.read() as s:
        found = s.execute(select(BatchRow).where(BatchRow.id.in_(ids))).scalars()
        return {b.id: b for b in found}


def objects(db: Database, rows: list[BenchmarkRow]) -> list[dict[str, Any]]:
    """The benchmarks as JSON-ready objects, the figures of those whose batch has ended
    measured first."""
    batches = batches_of(db, rows)
    settle(db, rows, batches)
    return [benchmark_object(r, batches.get(r.batch_id)) for r in rows]


def benchmark_object(row: BenchmarkRow, batch: BatchRow | None) -> dict[str, Any]:
    """The Benchmark object as JSON-ready data."""
    prov = row.provenance or {}
    metadata = (batch.metadata_ if batch else None) or {}
    return {
        "id": row.id,
        "object": "benchmark",
        "model": row.model,
        "batch_id": row.batch_id,
        "status": batch.status if batch else "failed",
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "dataset": row.dataset,
        "requests": batch.total if batch and batch.total else row.requests,
        "max_tokens": row.max_tokens,
        "include_in_history": metadata.get(INCLUDE_IN_HISTORY) == "true",
        "figures": row.figures,
        "engine": prov.get("engine"),
        "engine_version": prov.get("engine_version"),
        "engine_args": prov.get("engine_args"),
        "host": row.host,
        "packages": prov.get("packages"),
        "weights": prov.get("weights"),
    }
