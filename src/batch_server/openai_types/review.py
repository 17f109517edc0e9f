"""The review page's data (an extension): a batch's requests with their answers, each
with its annotation, confidence and disagreement, and the batch's review counts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from batch_server.openai_types.annotations import Annotation
from batch_server.openai_types.common import APIObject

ReviewFilter = Literal["all", "unreviewed", "golden", "fixed", "wrong", "skip", "failed"]
ReviewOrder = Literal["input", "least_confident"]


class ReviewItem(APIObject):
    object: Literal["review.item"] = "review.item"
    index: int = Field(description="The request's line in the input file, from 0")
    custom_id: str
    model: str | None
    prompt: Any = Field(description="The request's messages (chat), prompt or input")
    status_code: int | None = Field(description="null while the request has not run")
    answer: Any = Field(description="The answer: parsed JSON when it is a JSON object or array")
    answer_text: str | None = Field(description="The answer's text as the model wrote it")
    answer_is_json: bool
    error: dict[str, Any] | None = Field(description="The error of a failed request")
    annotation: Annotation | None
    confidence: float | None = Field(
        description="Mean token log-probability of the answer; null without logprobs"
    )
    disagreement: bool | None = Field(
        description="Whether the comparison's other models answered differently; "
        "null when the batch is not part of a comparison"
    )
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
    rendered: str | None = Field(
        default=None,
        description="The template's plugin's HTML fragment for this result (escaped HTML)",
    )


class ReviewCounts(APIObject):
    total: int = Field(description="Requests in the batch")
    reviewed: int = Field(description="Requests with an annotation")
    labels: dict[str, int] = Field(description="Annotations per label")
    failed: int = Field(description="Requests that failed")
    matching: int = Field(description="Requests that pass the filter")


class ReviewPage(APIObject):
    object: Literal["batch.review"] = "batch.review"
    batch_id: str
    filter: ReviewFilter
    order: ReviewOrder
    offset: int
    limit: int
    counts: ReviewCounts
    data: list[ReviewItem]
    has_more: bool
