"""``/health`` and ``/ready``, and the workers as they report themselves."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from batch_server.openai_types.common import APIObject, DataList
from batch_server.statuses import WorkerState


class Worker(APIObject):
    id: str
    hostname: str
    pid: int
    state: WorkerState
    loaded_model: str | None
    current_batch_id: str | None
    started_at: int
    heartbeat_age_seconds: float
    alive: bool = Field(description="Whether its last heartbeat is under 15 s old")


class WorkerList(DataList[Worker]):
    pass


class GpuThresholds(APIObject):
    max_memory_percent: float
    max_temperature_c: float


class GpuReading(APIObject):
    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: float
    temperature_c: float
    memory_percent: float


class GpuMonitored(APIObject):
    """NVIDIA GPUs read through NVML."""

    available: Literal[True]
    monitoring: Literal["on"]
    thresholds: GpuThresholds
    hold_reason: str | None = Field(description="Why new work waits (a GPU over a threshold)")
    gpus: list[GpuReading]


class GpuUnmonitored(APIObject):
    """No GPU monitoring, and why (``reason`` is left out when unknown)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    available: Literal[False]
    monitoring: Literal["off"]
    reason: str | None = None


GpuStatus = Annotated[GpuMonitored | GpuUnmonitored, Field(discriminator="monitoring")]


class HostStatus(APIObject):
    memory_percent: float
    max_memory_percent: float
    hold_reason: str | None


class Health(APIObject):
    """Liveness: the version, the workers with a fresh heartbeat, the GPUs and the host."""

    status: Literal["ok"]
    version: str
    workers: list[Worker]
    gpu: GpuStatus
    host: HostStatus


class ReadyChecks(APIObject):
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    database: str = Field(description='"ok", or the error')
    workers: int = Field(description="Workers with a heartbeat in the last 15 s")
    reason: str | None = Field(default=None, description="Why not ready (no worker)")


class Ready(APIObject):
    """Readiness: 200 when the database answers and a worker is alive, else 503."""

    status: Literal["ready", "not_ready"]
    checks: ReadyChecks
