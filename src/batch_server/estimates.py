"""Measured throughput and the ETAs derived from it.

Workers record *samples*: slices of a few seconds of engine time on one batch, with the
requests and tokens finished in them (:class:`SampleRecorder`). From these:

- a model's rate is learned from its recent finished work (requests and tokens per second
  of engine time), benchmark batches left out (they are not the model's traffic);
- a model with no such work uses its latest benchmark's rate (basis ``benchmark``), else
  its latest succeeded test load's one request (basis ``model_test``); with none of these
  it has no rate, and its ETAs say "unknown";
- a running batch's rate blends its own measured rate with its model's rate, its own
  weighing more the longer it has run (its requests may be longer or shorter than usual);
- the queue's ETAs add up the remaining work of everything ahead in run order, divided by
  the number of live workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from batch_server.db.session import Database
from batch_server.db.tables import BenchmarkRow, ModelTestRow, ThroughputSampleRow

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 2.0  # a worker writes a sample at least this often while it runs
HISTORY_SECONDS = 7 * 86400  # a model's rate is learned from this much recent work
CURRENT_SECONDS = 60.0  # "current throughput" looks back this far
PRIOR_SECONDS = 10.0  # weight of the model's rate against a batch's own measured seconds

S = ThroughputSampleRow


@dataclass(frozen=True)
class Rate:
    """Work done in ``seconds`` of engine time."""

    requests: int
    input_tokens: int
    output_tokens: int
    seconds: float

    @property
    def requests_per_second(self) -> float | None:
        return self.requests / self.seconds if self.seconds > 0 and self.requests else None

    @property
    def output_tokens_per_second(self) -> float | None:
        return self.output_tokens / self.seconds if self.seconds > 0 else None

    @property
    def total_tokens_per_second(self) -> float | None:
        total = self.input_tokens + self.output_tokens
        return total / self.seconds if self.seconds > 0 else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "requests_per_second": _round(self.requests_per_second),
            "output_tokens_per_second": _round(self.output_tokens_per_second),
            "total_tokens_per_second": _round(self.total_tokens_per_second),
            "measured_requests": self.requests,
            "measured_seconds": round(self.seconds, 1),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class SampleRecorder:
    """Accumulates one worker's finished requests on one batch and writes a sample every
    :data:`SAMPLE_SECONDS` and at :meth:`flush`. Losing a sample only makes ETAs a little
    less informed, so write errors are logged, never raised into the worker."""

    def __init__(self, db: Database, batch_id: str, model: str, worker: str) -> None:
        self.db, self.batch_id, self.model, self.worker = db, batch_id, model, worker
        self._reset(time.time())

    def _reset(self, now: float) -> None:
        self.started_at = now
        self.requests = self.input_tokens = self.output_tokens = 0

    def add(self, input_tokens: int, output_tokens: int) -> None:
        self.requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if time.time() - self.started_at >= SAMPLE_SECONDS:
            self.flush()

    def flush(self) -> None:
        now = time.time()
        if self.requests:
            try:
                with self.db.write() as s:
                    s.execute(
                        insert(S).values(
                            batch_id=self.batch_id,
                            model=self.model,
                            worker=self.worker,
                            started_at=self.started_at,
                            ended_at=now,
                            requests=self.requests,
                            input_tokens=self.input_tokens,
                            output_tokens=self.output_tokens,
                        )
                    )
            except Exception:
                log.exception("could not record a throughput sample")
        self._reset(now)


def _rates(
    session: Session, key: InstrumentedAttribute[str], *where: ColumnElement[bool]
) -> dict[str, Rate]:
    rows = session.execute(
        select(
            key,
            func.sum(S.requests),
            func.sum(S.input_tokens),
            func.sum(S.output_tokens),
            func.sum(S.ended_at - S.started_at),
        )
        .where(*where)
        .group_by(key)
    )
    return {r[0]: Rate(int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows}


def model_rates(session: Session, now: float | None = None) -> dict[str, Rate]:
    """Each model's rate over its work of the last :data:`HISTORY_SECONDS`."""
    since = (now or time.time()) - HISTORY_SECONDS
    benchmarks = select(BenchmarkRow.batch_id)
    return _rates(session, S.model, S.ended_at >= since, S.batch_id.not_in(benchmarks))


PRIOR_LOOKBACK = 200  # latest benchmarks and model tests looked at for models with no rate


def prior_rates(session: Session, skip: Iterable[str] = ()) -> dict[str, tuple[Rate, str]]:
    """A rate for each model not in ``skip`` (those with measured traffic) and its basis:
    its latest benchmark with measured work (``benchmark``), else its latest succeeded
    test load (``model_test``: one request in ``request_seconds``)."""
    skipped = set(skip)
    priors: dict[str, tuple[Rate, str]] = {}
    recent = [
        (model, batch_id)
        for model, batch_id in session.execute(
            select(BenchmarkRow.model, BenchmarkRow.batch_id)
            .order_by(BenchmarkRow.seq.desc())
            .limit(PRIOR_LOOKBACK)
        )
        if model not in skipped
    ]
    measured = batch_rates(session, {batch_id for _, batch_id in recent})
    for model, batch_id in recent:
        rate = measured.get(batch_id)
        if model not in priors and rate is not None and rate.requests_per_second:
            priors[model] = (rate, "benchmark")
    tests = session.execute(
        select(ModelTestRow)
        .where(ModelTestRow.status == "succeeded", ModelTestRow.request_seconds > 0)
        .order_by(ModelTestRow.seq.desc())
        .limit(PRIOR_LOOKBACK)
    ).scalars()
    for t in tests:
        if t.model not in skipped and t.model not in priors and t.request_seconds:
            rate = Rate(1, t.prompt_tokens or 0, t.output_tokens or 0, t.request_seconds)
            priors[t.model] = (rate, "model_test")
    return priors


def batch_rates(session: Session, batch_ids: Iterable[str]) -> dict[str, Rate]:
    """Each batch's own rate over all of its measured work."""
    ids = list(batch_ids)
    return _rates(session, S.batch_id, S.batch_id.in_(ids)) if ids else {}


def current_rates(session: Session, batch_ids: Iterable[str], now: float) -> dict[str, Rate]:
    """Each batch's rate over the last :data:`CURRENT_SECONDS` (None when idle)."""
    ids = list(batch_ids)
    if not ids:
        return {}
    return _rates(session, S.batch_id, S.batch_id.in_(ids), S.ended_at >= now - CURRENT_SECONDS)


def blended_rate(
    own: Rate | None,
    model: Rate | None,
    max_tokens: int | None = None,
    prompt_tokens: float | None = None,
) -> tuple[float | None, str]:
    """Requests per second of engine time for a batch, and what it is based on.

    A request's work is its prompt plus its answer tokens: on these CPUs a prompt token
    costs about as much as an answer token decoded beside others (bench_eta.py: counting
    answers only, a benchmark of 120-token prompts predicted a batch of 25-token prompts
    twice too slow). Before a batch has run, the model's rate is scaled from the model's
    usual request to the batch's: its prompt (``prompt_tokens``, estimated from its
    input) and its answers (cut at ``max_tokens`` when that is below the usual answer).
    Once it runs, the model's rate is scaled to the batch's own requests so far and
    blended with the batch's own rate, which weighs more the longer it has run."""
    model_rps = model.requests_per_second if model else None
    own_rps = own.requests_per_second if own else None
    if own_rps is None:
        if model_rps is None:
            return None, "unknown"
        assert model is not None
        usual_in = model.input_tokens / model.requests
        usual_out = model.output_tokens / model.requests
        out = min(max_tokens, usual_out) if max_tokens and max_tokens > 0 else usual_out
        work = (usual_in if prompt_tokens is None else prompt_tokens) + out
        if work > 0 and usual_in + usual_out > 0:
            model_rps *= (usual_in + usual_out) / work
        return model_rps, "model"
    assert own is not None
    if model_rps is None:
        return own_rps, "batch"
    assert model is not None
    own_work = (own.input_tokens + own.output_tokens) / own.requests
    model_work = (model.input_tokens + model.output_tokens) / model.requests
    if own_work and model_work:
        model_rps *= model_work / own_work
    rate = (own.requests + model_rps * PRIOR_SECONDS) / (own.seconds + PRIOR_SECONDS)
    return rate, "batch+model"


CHARS_PER_TOKEN = 4.0  # English text in the usual BPE vocabularies
TOKENS_PER_MESSAGE = 4.0  # a chat template's role markers around each message


def prompt_tokens(body: dict[str, Any]) -> float:
    """A rough count of a request body's prompt tokens (before its engine tokenizes it):
    its text (messages, prompt, input) at :data:`CHARS_PER_TOKEN`, plus each chat
    message's template markers."""
    chars, messages = 0, 0
    for key in ("messages", "prompt", "input"):
        value = body.get(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, dict):
                messages += 1
                content = item.get("content")
                parts = content if isinstance(content, list) else [content]
                for part in parts:
                    if isinstance(part, str):
                        chars += len(part)
                    elif isinstance(part, dict) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
    return chars / CHARS_PER_TOKEN + messages * TOKENS_PER_MESSAGE


@dataclass
class Planned:
    """The input of :func:`plan` for one live batch, in run order."""

    batch_id: str
    model: str | None
    remaining: int | None  # None when the request count is not known
    max_tokens: int | None = None  # the first request's token limit
    prompt_tokens: float | None = None  # estimated prompt tokens per request


@dataclass(frozen=True)
class Eta:
    seconds: float | None
    at: int | None
    basis: str  # "batch", "model", "batch+model", "benchmark", "model_test", "done", …
    requests_per_second: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "at": self.at,
            "basis": self.basis,
            "requests_per_second": _round(self.requests_per_second),
            "text": "unknown" if self.seconds is None else human_duration(self.seconds),
        }


def plan(
    batches: Sequence[Planned],
    own: dict[str, Rate],
    models: dict[str, Rate],
    workers: int,
    now: float,
    priors: dict[str, tuple[Rate, str]] | None = None,
) -> dict[str, Eta]:
    """ETAs for live batches given in run order: each finishes after the remaining work
    of everything ahead of it plus its own, shared by ``workers`` workers. A model with
    no measured rate uses its prior (:func:`prior_rates`), if any. Once one batch ahead
    has no rate, every later ETA is unknown too: no invented numbers."""
    etas: dict[str, Eta] = {}
    ahead = 0.0
    known = True
    for b in batches:
        model, prior = models.get(b.model or ""), "model"
        if model is None and priors and b.model in priors:
            model, prior = priors[b.model]
        rate, basis = blended_rate(own.get(b.batch_id), model, b.max_tokens, b.prompt_tokens)
        basis = basis.replace("model", prior)
        if b.remaining == 0:
            etas[b.batch_id] = Eta(ahead / max(workers, 1), None, "done", rate)
            continue
        if b.remaining is None or rate is None or not known:
            known = False
            etas[b.batch_id] = Eta(None, None, "unknown", rate)
            continue
        ahead += b.remaining / rate
        seconds = ahead / max(workers, 1)
        etas[b.batch_id] = Eta(seconds, int(now + seconds), basis, rate)
    return etas


def series(
    session: Session, now: float, window: float = 3600.0, bucket: float = 60.0
) -> list[dict[str, float]]:
    """Throughput of all workers per ``bucket`` over the last ``window`` seconds, oldest
    first: requests and tokens finished per second of wall time."""
    n = int(window // bucket)
    start = now - n * bucket
    sums = [[0, 0, 0] for _ in range(n)]
    rows = session.execute(
        select(S.ended_at, S.requests, S.input_tokens, S.output_tokens).where(S.ended_at > start)
    )
    for ended, req, inp, out in rows:
        i = min(int((ended - start) // bucket), n - 1)
        sums[i][0] += req
        sums[i][1] += inp
        sums[i][2] += out
    return [
        {
            "start": int(start + i * bucket),
            "requests_per_second": round(req / bucket, 3),
            "output_tokens_per_second": round(out / bucket, 2),
            "total_tokens_per_second": round((inp + out) / bucket, 2),
        }
        for i, (req, inp, out) in enumerate(sums)
    ]


def human_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
