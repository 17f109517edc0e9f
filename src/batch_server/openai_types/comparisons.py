"""Comparisons (an extension): one input run on 2..N models, a linked batch per model; its
rows side by side, the agreement between the models and the picks of the better answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_server.openai_types.batches import RequestCounts
from batch_server.openai_types.common import APIObject, Identified, ListObject
from batch_server.openai_types.costs import CostEstimate


class CreateComparisonBody(BaseModel):
    """``POST /v1/comparisons``: an input file, or an existing batch's input, on 2..N models."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str | None = None
    batch_id: str | None = None
    models: list[str]
    endpoint: str | None = None
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


class PickBody(BaseModel):
    """``PUT /v1/comparisons/{id}/picks/{custom_id}``: the better answer's model; null: a tie
    (or neither is better)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None


class RunTokens(APIObject):
    input_tokens: int
    output_tokens: int


class RunThroughput(APIObject):
    """Measured on the engine's time (throughput samples), not the wall clock."""

    requests_per_second: float | None
    output_tokens_per_second: float | None
    engine_seconds: float | None


class RunCost(APIObject):
    reference: CostEstimate | None = Field(description="At the price table's reference price")
    own: CostEstimate | None = Field(description="At the model's own price, when the table has one")


class ComparisonRun(APIObject):
    """One model's linked batch."""

    model: str
    batch_id: str
    status: str
    request_counts: RequestCounts
    tokens: RunTokens
    throughput: RunThroughput
    cost: RunCost


class PairAgreement(APIObject):
    models: list[str]
    exact_match: float | None


class JsonAgreement(APIObject):
    requests: int = Field(description="Requests where every model answered a JSON object")
    fields: dict[str, float] = Field(
        description="Per top-level key: the share of those requests (where any model has the "
        "key) in which every model gave the same value"
    )


class Agreement(APIObject):
    """Over the requests every model answered (no error); answers compared without leading
    and trailing white space."""

    requests: int
    exact_match: float | None = Field(description="Share where all models answered the same")
    pairwise: list[PairAgreement]
    json_fields: JsonAgreement | None


class PickCounts(APIObject):
    total: int
    ties: int
    by_model: dict[str, int]


class PriceTableInfo(APIObject):
    reference: str
    date: str
    source: str


class Comparison(Identified):
    object: Literal["comparison"] = "comparison"
    created_at: int
    status: str = Field(
        description="in_progress while any batch runs; completed when all completed; else "
        "the first other final status of a batch"
    )
    input_file_id: str
    endpoint: str
    models: list[str]
    metadata: dict[str, Any] | None
    runs: list[ComparisonRun]
    agreement: Agreement | None = Field(
        description="Computed by GET /v1/comparisons/{id}; null in lists"
    )
    picks: PickCounts
    prices: PriceTableInfo


class ComparisonList(ListObject[Comparison]):
    pass


class Pick(APIObject):
    object: Literal["comparison.pick"] = "comparison.pick"
    comparison_id: str
    custom_id: str
    model: str | None = Field(description="The better answer's model; null: a tie")
    rater: str | None = Field(description="The API key's name; null when keys are off")
    at: float


class PickDeleted(APIObject):
    object: Literal["comparison.pick.deleted"] = "comparison.pick.deleted"
    comparison_id: str
    custom_id: str
    deleted: bool


class RowAnswer(APIObject):
    model: str
    text: str | None = Field(description="The answer's text; null when it failed or is not in")
    error: str | None
    done: bool = Field(description="Whether this model's result is in")


class ComparisonRowItem(APIObject):
    index: int = Field(description="The request's position in the input")
    custom_id: str | None
    prompt: str = Field(description="Short text of the request's last user message")
    answers: list[RowAnswer]
    agree: bool | None = Field(description="null until every model's result is in")
    pick: Pick | None


class ComparisonRows(APIObject):
    object: Literal["list"] = "list"
    comparison_id: str
    models: list[str]
    data: list[ComparisonRowItem]
    has_more: bool
    next_after: int | None = Field(description="`after` of the next page")


class ComparisonExportBody(BaseModel):
    """``POST /v1/comparisons/{id}/exports``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["openai-preference-jsonl"] = "openai-preference-jsonl"


class ComparisonExport(APIObject):
    object: Literal["comparison.export"] = "comparison.export"
    comparison_id: str
    file_id: str
    filename: str
    purpose: str
    bytes: int
    format: Literal["openai-preference-jsonl"]
    count: int = Field(description="Lines written: one per pick and model it was picked over")
    skipped: int = Field(description="Picks left out: the picked or every other answer missing")
    ties: int = Field(description="Picks of no model (ties): nothing to learn, left out")
    created_at: int
