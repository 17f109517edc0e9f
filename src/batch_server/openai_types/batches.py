"""The Batch object (OpenAI's, plus ``model`` and ``priority``) and the extension objects
about one batch: its dry-run validation, its log, its failed requests and its
request/response pairs; and the lines of output and error files."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlalchemy import Row

from batch_server.db.tables import BatchRow
from batch_server.openai_types.benchmarks import BatchRun
from batch_server.openai_types.bodies import Endpoint
from batch_server.openai_types.common import APIObject, Identified, ListObject
from batch_server.openai_types.costs import CostEstimate, estimate
from batch_server.statuses import BatchStatus


class RequestCounts(APIObject):
    total: int
    completed: int
    failed: int


class BatchError(APIObject):
    """A reason the batch failed: a validation error (with its input ``line`` and
    ``param``), or ``engine_error``, ``input_unreadable``, ``finalize_failed``."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(APIObject):
    object: Literal["list"] = "list"
    data: list[BatchError]


class InputTokensDetails(APIObject):
    cached_tokens: int


class OutputTokensDetails(APIObject):
    reasoning_tokens: int


class BatchUsage(APIObject):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class Batch(Identified):
    object: Literal["batch"] = "batch"
    endpoint: Endpoint
    model: str | None = Field(
        description="The registry model of the batch's requests once known (from the "
        "create call's `model` extension or the input file's lines)"
    )
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    usage: BatchUsage
    metadata: dict[str, str] | None
    priority: int = Field(description="An extension: higher runs first")
    cost: CostEstimate | None = Field(
        description="An extension: the batch's tokens at the price table's reference price"
    )
    provenance: list[BatchRun] | None = Field(
        default=None,
        description="An extension, in `GET /v1/batches/{id}` only (null elsewhere): what "
        "produced the results, one entry per model and worker that ran the batch",
    )

    @classmethod
    def from_row(cls, row: BatchRow | Row[Any]) -> Batch:
        """From the ORM row, or a Core row with its columns (``reports.batch``)."""
        return cls(
            id=row.id,
            endpoint=row.endpoint,
            model=row.model,
            errors=BatchErrors(data=row.errors) if row.errors else None,
            input_file_id=row.input_file_id,
            completion_window=row.completion_window,
            status=row.status,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            created_at=row.created_at,
            in_progress_at=row.in_progress_at,
            expires_at=row.expires_at,
            finalizing_at=row.finalizing_at,
            completed_at=row.completed_at,
            failed_at=row.failed_at,
            expired_at=row.expired_at,
            cancelling_at=row.cancelling_at,
            cancelled_at=row.cancelled_at,
            request_counts=RequestCounts(
                total=row.total, completed=row.completed, failed=row.failed
            ),
            usage=BatchUsage(
                input_tokens=row.input_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=row.cached_tokens),
                output_tokens=row.output_tokens,
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
                total_tokens=row.input_tokens + row.output_tokens,
            ),
            metadata=row.metadata_,
            priority=row.priority,
            cost=estimate(row.input_tokens, row.output_tokens),
        )


class BatchList(ListObject[Batch]):
    pass


def batch_object(row: BatchRow) -> dict[str, Any]:
    """The Batch object as JSON-ready data (webhook payloads, the dashboard)."""
    return Batch.from_row(row).model_dump(mode="json")


class BatchValidation(APIObject):
    """``POST /v1/batches/validate``: a file checked as a batch would be, nothing stored."""

    object: Literal["batch.validation"] = "batch.validation"
    valid: bool
    total: int
    models: list[str]
    errors: list[BatchError]


class BatchEvent(APIObject):
    at: float = Field(description="Unix time, with fractions of a second")
    kind: str = Field(description="status, unit, engine, engine_error, outcome, priority, …")
    message: str


class BatchLog(APIObject):
    """``GET /v1/batches/{id}/logs``: what happened to the batch, oldest first."""

    object: Literal["list"] = "list"
    batch_id: str
    data: list[BatchEvent]


# -- lines of output and error files --------------------------------------------------------


class BatchRequestResponse(APIObject):
    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchRequestError(APIObject):
    code: str
    message: str


class BatchRequestOutput(APIObject):
    """A line of an output or error file: a response (status 200 in the output file, an
    engine-rejected request's OpenAI error body in the error file) or, for a request
    that never ran, an ``error``."""

    id: str
    custom_id: str
    response: BatchRequestResponse | None
    error: BatchRequestError | None


def output_line(
    custom_id: str, status_code: int, body: dict[str, Any], line_id: str, request_id: str
) -> dict[str, Any]:
    """A line of the output file (status 200) or of the error file (an engine-rejected
    request, with the OpenAI error body)."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def unexecuted_line(custom_id: str, code: str, message: str, line_id: str) -> dict[str, Any]:
    """An error-file line for a request that never ran (cancelled or expired batch)."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


# -- a batch's failed requests and its request/response pairs -------------------------------


class FailedRequest(APIObject):
    custom_id: str | None
    status_code: int | None
    code: str | None
    message: str | None
    line: BatchRequestOutput = Field(description="The error-file line")


class FailedRequests(APIObject):
    """``GET /v1/batches/{id}/failed``: a page of the failed requests, and the batch's
    validation errors."""

    object: Literal["list"] = "list"
    batch_id: str
    data: list[FailedRequest]
    has_more: bool
    next_offset: int | None
    validation_errors: list[BatchError]


class RequestPair(APIObject):
    index: int = Field(description="The request's position among the input's requests")
    line: int = Field(description="Its line number in the input file")
    custom_id: str | None
    request: Any = Field(
        description="The line's body; the whole line when it has none; "
        '`{"raw": text}` for a line that is not a JSON object'
    )
    status_code: int | None
    response: dict[str, Any] | None = Field(description="The response body (status 200)")
    error: dict[str, Any] | None
    template: str | None = Field(
        default=None, description="A templated line's template (docs/plugins.md)"
    )
    fields: dict[str, Any] | None = Field(
        default=None, description="The fields a plugin parsed from the answer"
    )
    plugin_error: str | None = Field(
        default=None, description="Why the answer has no fields (the plugin is named)"
    )
    ratings: dict[str, Any] | None = Field(
        default=None, description="Automatic ratings: name → {value, plugin}"
    )


class RequestPairs(APIObject):
    """``GET /v1/batches/{id}/requests``: input requests next to their results."""

    object: Literal["list"] = "list"
    batch_id: str
    data: list[RequestPair]
    has_more: bool
    next_offset: int | None
