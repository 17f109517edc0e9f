"""The Model object (OpenAI's, plus the registry's engine, aliases, measured rate, test
status and origin)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from batch_server.config import EngineName
from batch_server.openai_types.common import APIObject, DataList, Identified


class MeasuredRate(APIObject):
    """Work measured on this server: rates per second of engine time (``null`` before any
    request finished), over ``measured_requests`` requests in ``measured_seconds``."""

    requests_per_second: float | None
    output_tokens_per_second: float | None
    total_tokens_per_second: float | None
    measured_requests: int
    measured_seconds: float


class Model(Identified):
    object: Literal["model"] = "model"
    created: int = Field(description="When this server started (Unix seconds)")
    owned_by: str
    engine: EngineName
    aliases: list[str]
    throughput: MeasuredRate | None = Field(
        description="The model's rate over its work of the last 7 days; null before it ran"
    )
    status: Literal["untested", "testing", "ready", "failed"] = Field(
        description="Its latest test load's verdict; a 'failed' model takes no batch"
    )
    status_reason: str | None = Field(description="Why its test load failed")
    origin: Literal["config", "api", "fine_tune"] = Field(
        description="'config': defined in the config file; 'api': added over the admin API; "
        "'fine_tune': made by a fine-tuning job"
    )


class ModelList(DataList[Model]):
    pass
