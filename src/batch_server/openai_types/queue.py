"""The queue with ETAs, the history of batches, and the measured throughput (extensions)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from batch_server.openai_types.batches import Batch, RequestCounts
from batch_server.openai_types.common import APIObject, Identified, ListObject
from batch_server.openai_types.health import Worker
from batch_server.openai_types.models import MeasuredRate
from batch_server.statuses import BatchStatus


class Eta(APIObject):
    seconds: float | None = Field(description="null: unknown (no measured rate yet)")
    at: int | None = Field(description="Unix time")
    basis: Literal[
        "batch",
        "model",
        "batch+model",
        "benchmark",
        "batch+benchmark",
        "model_test",
        "batch+model_test",
        "done",
        "unknown",
    ] = Field(
        description="What the rate is based on: the batch's own work, its model's recent "
        "work, the model's latest benchmark (no traffic yet) or its latest test load"
    )
    requests_per_second: float | None
    text: str = Field(description='"1m 05s", or "unknown"')


class QueueEntry(Identified):
    object: Literal["queue.entry"] = "queue.entry"
    status: BatchStatus
    state: Literal["running", "waiting", "validating", "finalizing", "cancelling"]
    model: str | None
    kind: str = Field(description='"batch", or "benchmark" / "comparison" for those runs')
    priority: int
    position: int = Field(description="1: next (or running)")
    jobs_ahead: int
    requests_ahead: int
    created_at: int
    in_progress_at: int | None
    metadata: dict[str, str] | None
    request_counts: RequestCounts
    progress: float = Field(description="Finished requests / total, 0 to 1")
    throughput: MeasuredRate | None = Field(description="Over the last minute; null when idle")
    eta: Eta
    workers: list[str] = Field(description="Ids of the workers running it")


class Queue(APIObject):
    """Live batches in run order; a key that is not an admin's sees only its own (their
    positions count every batch)."""

    object: Literal["queue"] = "queue"
    generated_at: int
    running: int
    waiting: int
    data: list[QueueEntry]
    workers: list[Worker]


class HistoryEntry(Batch):
    """A Batch object with its timings and measured rates."""

    ended_at: int | None
    duration_seconds: int | None = Field(description="From creation to end")
    processing_seconds: float | None = Field(description="Engine time")
    requests_per_second: float | None
    output_tokens_per_second: float | None
    total_tokens_per_second: float | None
    failure_reason: str | None


class HistoryList(ListObject[HistoryEntry]):
    pass


class ThroughputBucket(APIObject):
    start: int
    requests_per_second: float
    output_tokens_per_second: float
    total_tokens_per_second: float


class Throughput(APIObject):
    """All workers' throughput per bucket (oldest first) and each model's learned rate."""

    object: Literal["throughput"] = "throughput"
    window: int
    bucket: int
    data: list[ThroughputBucket]
    models: dict[str, MeasuredRate]
