"""Benchmarks (an extension): a batch run to measure a model, its figures and what
produced them; and a batch run's provenance, the ``provenance`` field of a retrieved
batch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_server.openai_types.common import APIObject, Identified, ListObject
from batch_server.statuses import BatchStatus

MAX_BENCHMARK_REQUESTS = 5000
MAX_BENCHMARK_TOKENS = 4096


class CreateBenchmarkBody(BaseModel):
    """``POST /v1/benchmarks``."""

    model_config = ConfigDict(extra="forbid")

    model: str
    requests: int = Field(
        default=50,
        ge=1,
        le=MAX_BENCHMARK_REQUESTS,
        description="Requests of the generated dataset (ignored with input_file_id)",
    )
    max_tokens: int = Field(
        default=64,
        ge=1,
        le=MAX_BENCHMARK_TOKENS,
        description="Answer length of the generated requests (ignored with input_file_id)",
    )
    input_file_id: str | None = Field(
        default=None,
        description="Your own batch input file (purpose 'batch'); default: a built-in "
        "generated dataset of chat prompts of varied length",
    )
    include_in_history: bool = Field(
        default=False, description="List the benchmark's batch in the history like user work"
    )


class Host(APIObject):
    hostname: str | None
    cpu: str | None = Field(description="The CPU's model name")
    cores: int | None
    gpus: list[str] = Field(description="GPU names (empty: none found or monitoring off)")


class BatchRun(APIObject):
    """What produced a batch's results on one worker and model: enough to trace a result
    and repeat the run exactly."""

    model: str
    worker: str
    started_at: float = Field(
        description="Unix time the batch started on this worker (its engine load included)"
    )
    first_result_at: float | None
    load_seconds: float | None = Field(
        description="Engine load time, when the engine was loaded for this batch "
        "(null: it was loaded already)"
    )
    peak_memory_bytes: int | None = Field(description="Peak resident memory of the engine")
    weights: dict[str, Any] = Field(
        description="{package, version, file} for packaged weights, {path, sha256} for "
        "a local file or directory, {upstream, model} for the openai engine"
    )
    engine: str
    engine_version: str | None
    engine_args: dict[str, Any] = Field(
        description="As used (the worker's n_threads included; chat_template_sha256 when "
        "the model sets a chat template; secrets redacted)"
    )
    engine_load_seconds: float | None = Field(
        description="How long the engine that ran it took to load"
    )
    sampling_defaults: dict[str, Any] = Field(
        description="What the engine applies when a request omits a field"
    )
    server_version: str
    packages: dict[str, str] = Field(description="Versions of the packages that shape results")
    host: Host


class BenchmarkFigures(APIObject):
    """Measured once the benchmark's batch has ended. Engine time is the workers' time
    spent running its requests; wall time runs from its first run's start (engine
    loading included) to its last result."""

    requests: int = Field(description="Requests run (succeeded and failed)")
    failed: int
    prompt_tokens: int
    output_tokens: int
    engine_seconds: float | None
    wall_seconds: float | None
    requests_per_second: float | None = Field(description="Per second of engine time")
    prompt_tokens_per_second: float | None
    output_tokens_per_second: float | None
    wall_requests_per_second: float | None
    wall_prompt_tokens_per_second: float | None
    wall_output_tokens_per_second: float | None
    time_to_first_result_seconds: float | None = Field(
        description="From the batch's creation to its first result"
    )
    engine_load_seconds: float | None
    peak_memory_bytes: int | None


class Benchmark(Identified):
    object: Literal["benchmark"] = "benchmark"
    model: str
    batch_id: str
    status: BatchStatus = Field(description="The benchmark batch's status")
    created_at: int
    finished_at: int | None
    dataset: str = Field(description='"generated", or the input file\'s id')
    requests: int
    max_tokens: int | None
    include_in_history: bool
    figures: BenchmarkFigures | None = Field(description="null until the batch has ended")
    engine: str | None
    engine_version: str | None
    engine_args: dict[str, Any] | None
    host: Host | None
    packages: dict[str, str] | None
    weights: dict[str, Any] | None


class BenchmarkList(ListObject[Benchmark]):
    pass
