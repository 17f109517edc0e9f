"""The File object (OpenAI's) and its deletion object."""

from __future__ import annotations

from typing import Any, Literal

from batch_server.db.tables import FileRow
from batch_server.openai_types.bodies import FilePurpose
from batch_server.openai_types.common import APIObject, Identified, ListObject


class File(Identified):
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None

    @classmethod
    def from_row(cls, row: FileRow) -> File:
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            expires_at=row.expires_at,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,
            status_details=None,
        )


class FileDeleted(APIObject):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


def file_object(row: FileRow) -> dict[str, Any]:
    return File.from_row(row).model_dump(mode="json")


class FileList(ListObject[File]):
    pass
