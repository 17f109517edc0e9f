"""Annotations (an extension): a reviewer's verdict on one request of a batch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from batch_server.openai_types.common import APIObject, Identified, ListObject

AnnotationLabel = Literal["golden", "fixed", "wrong", "skip"]


class AnnotationBody(APIObject):
    """``PUT …/annotation``: the whole annotation (a field left out is cleared)."""

    label: AnnotationLabel | None = Field(
        default=None,
        description="golden: right as is; fixed: right once corrected (fixed_answer); wrong; skip",
    )
    fixed_answer: str | None = Field(
        default=None,
        max_length=1_000_000,
        description="The corrected answer (the assistant's content); required with 'fixed'",
    )
    note: str | None = Field(default=None, max_length=10_000)
    rating: int | None = Field(default=None, ge=1, le=5)


class AnnotationChange(APIObject):
    at: float
    rater: str | None
    action: Literal["put", "delete"]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class Annotation(Identified):
    object: Literal["annotation"] = "annotation"
    batch_id: str
    custom_id: str
    request_index: int
    model: str | None
    label: AnnotationLabel | None
    fixed_answer: str | None
    note: str | None
    rating: int | None
    rater: str | None = Field(description="The name of the API key that made the change")
    source: str = Field(description="api, dashboard or label_studio")
    created_at: int
    updated_at: int
    history: list[AnnotationChange] | None = Field(
        description="Every change, oldest first (only when one annotation is retrieved)"
    )


class AnnotationList(ListObject[Annotation]):
    pass


class AnnotationDeleted(APIObject):
    object: Literal["annotation.deleted"] = "annotation.deleted"
    batch_id: str
    custom_id: str
    deleted: bool
