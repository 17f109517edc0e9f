"""Benchmarks API (an extension): run a model on a generated dataset or your own file
through the normal queue, then read its figures (see :mod:`batch_server.models.benchmarks`)."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from contextlib import suppress
from dataclasses import dataclass

from fastapi import APIRouter, Query
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from batch_server.api.auth import Auth, Principal
from batch_server.api.batch_creation import admit
from batch_server.api.deps import Ctx, check_limit
from batch_server.api.files import creation_limits, get_file, store_upload
from batch_server.api.openapi import errors
from batch_server.app_context import AppContext
from batch_server.db.pages import paginate
from batch_server.db.tables import BenchmarkRow
from batch_server.errors import NotFound
from batch_server.jobs import admission
from batch_server.jobs.history import INCLUDE_IN_HISTORY
from batch_server.jobs.manager import InputGone
from batch_server.jobs.validation import iter_lines
from batch_server.models import benchmarks
from batch_server.openai_types import SUPPORTED_ENDPOINTS, CreateBatchBody
from batch_server.openai_types.benchmarks import Benchmark, BenchmarkList, CreateBenchmarkBody

CHAT_COMPLETIONS = "/v1/chat/completions"

router = APIRouter(prefix="/v1/benchmarks", tags=["benchmarks"], responses=errors(400, 401))


@dataclass(frozen=True)
class Dataset:
    file_id: str
    name: str  # "generated", or the input file's id
    requests: int
    max_tokens: int | None
    endpoint: str


@router.post("", responses=errors(403, 404, 422, 429))
async def create_benchmark(body: CreateBenchmarkBody, ctx: Ctx, who: Auth) -> Benchmark:
    """Queue a benchmark batch of ``model`` on the generated dataset (``requests`` chat
    requests of ``max_tokens``) or on ``input_file_id``, every line run on ``model``."""
    creation_limits(ctx, who)  # the key's creation rate, as for files and batches
    registry = ctx.models.current()
    model = registry.resolve(body.model)
    if model is None:
        raise NotFound("model", body.model, param="model")
    admission.check_available(registry, model)
    if body.input_file_id:
        try:
            source = get_file(ctx, body.input_file_id, who)
        except NotFound:
            raise NotFound("file", body.input_file_id, param="input_file_id") from None
        count, endpoint = await run_in_threadpool(_shape, ctx, source.id)
        dataset = Dataset(source.id, source.id, count, None, endpoint)
    else:
        data = benchmarks.generated_dataset(body.requests, body.max_tokens, model)
        upload = UploadFile(io.BytesIO(data), filename=f"benchmark-{model}-{body.requests}.jsonl")
        stored = await store_upload(ctx, upload, "batch", who)
        dataset = Dataset(
            stored.id, benchmarks.GENERATED, body.requests, body.max_tokens, CHAT_COMPLETIONS
        )
    return await run_in_threadpool(_queue, ctx, who, model, dataset, body.include_in_history)


def _queue(
    ctx: AppContext, who: Principal, model: str, dataset: Dataset, in_history: bool
) -> Benchmark:
    """The benchmark's batch through the usual admission, then its row."""
    bench_id = benchmarks.benchmark_id()
    metadata = {"benchmark_id": bench_id, INCLUDE_IN_HISTORY: str(in_history).lower()}
    create = CreateBatchBody(
        input_file_id=dataset.file_id, endpoint=dataset.endpoint, model=model, metadata=metadata
    )
    new = admit(ctx, create, who)
    try:
        batch = ctx.jobs.create_batch(dataclasses.replace(new, kind="benchmark"))
    except InputGone as exc:
        raise NotFound("file", dataset.file_id, param="input_file_id") from exc
    row = BenchmarkRow(
        id=bench_id,
        model=model,
        batch_id=batch.id,
        owner=who.owner,
        created_at=int(time.time()),
        dataset=dataset.name,
        requests=dataset.requests,
        max_tokens=dataset.max_tokens,
    )
    with ctx.db.write() as s:
        s.add(row)
    return Benchmark.model_validate(benchmarks.benchmark_object(row, batch))


def _shape(ctx: AppContext, file_id: str) -> tuple[int, str]:
    """Lines of a batch input file and its first line's endpoint (validation judges the
    lines themselves, as for any batch)."""
    count, endpoint = 0, CHAT_COMPLETIONS
    with ctx.store.open(file_id) as fh:
        for line in iter_lines(fh):
            if count == 0:
                with suppress(ValueError, AttributeError, TypeError):
                    url = json.loads(line.raw).get("url")
                    endpoint = url if url in SUPPORTED_ENDPOINTS else endpoint
            count += 1
    return count, endpoint


@router.get("", responses=errors(404, 422))
def list_benchmarks(
    ctx: Ctx,
    who: Auth,
    model: str | None = Query(None, description="Only this model's (an id or an alias)"),
    limit: int = Query(20),
    after: str | None = None,
) -> BenchmarkList:
    """Benchmarks, newest first."""
    check_limit(limit, 100)
    query = who.scope(select(BenchmarkRow), BenchmarkRow)
    if model:
        query = query.where(BenchmarkRow.model == ctx.models.current().aliases().get(model, model))
    with ctx.db.read() as s:
        rows, more = paginate(s, query, BenchmarkRow, after, limit, kind="benchmark")
    return BenchmarkList.of(objects(ctx, rows), more)


@router.get("/{benchmark_id}", responses=errors(404))
def retrieve_benchmark(benchmark_id: str, ctx: Ctx, who: Auth) -> Benchmark:
    with ctx.db.read() as s:
        row = s.execute(select(BenchmarkRow).where(BenchmarkRow.id == benchmark_id)).scalar()
    if row is None or not who.owns(row.owner):
        raise NotFound("benchmark", benchmark_id, param="benchmark_id")
    return objects(ctx, [row])[0]


def objects(ctx: AppContext, rows: list[BenchmarkRow]) -> list[Benchmark]:
    return [Benchmark.model_validate(b) for b in benchmarks.objects(ctx.db, rows)]
