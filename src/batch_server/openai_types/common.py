"""What every API object shares: the base class, list objects, deletion objects and the
error shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict


class APIObject(BaseModel):
    """An object the API returns. Every field is always sent (``null`` included, as OpenAI
    does), so the document's schemas list every field as required; a key the model does
    not know is an error (the models are the API's contract, not a filter)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class Identified(APIObject):
    """An object with an ``id``, listable in a :class:`ListObject`."""

    id: str


T = TypeVar("T", bound=BaseModel)
I = TypeVar("I", bound=Identified)  # noqa: E741


class DataList(APIObject, Generic[T]):
    """``{"object": "list", "data": [...]}``: a complete list (models, keys, workers).
    Subclassed once per item type, so each has a name of its own in the document."""

    object: Literal["list"] = "list"
    data: list[T]


class ListObject(APIObject, Generic[I]):
    """A page of a cursor-paginated list (files, batches, history), as OpenAI's: the next
    page starts ``after`` ``last_id`` while ``has_more``. Subclassed once per item type."""

    object: Literal["list"] = "list"
    data: list[I]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: Sequence[I], has_more: bool) -> Self:
        return cls(
            data=list(data),
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """:class:`ListObject`'s shape for objects that are dicts already."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


class ErrorDetail(APIObject):
    message: str
    type: str  # invalid_request_error, rate_limit_error, server_error
    param: str | None
    code: str | None


class ErrorResponse(APIObject):
    """Every error, as OpenAI answers them: ``{"error": {message, type, param, code}}``."""

    error: ErrorDetail
