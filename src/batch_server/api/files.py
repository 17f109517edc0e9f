"""Files API, as OpenAI's: upload, list, retrieve, download, delete."""

from __future__ import annotations

import shutil
import time
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from batch_server import ids, limits
from batch_server.api.auth import Auth, Principal
from batch_server.api.deps import Ctx, check_limit
from batch_server.api.openapi import FILE_FIELD, binary_response, errors, multipart_body
from batch_server.api.uploads import (
    form_expires_after,
    form_file,
    form_text,
    read_form,
    safe_filename,
)
from batch_server.app_context import AppContext
from batch_server.db.pages import paginate
from batch_server.db.tables import FileRow
from batch_server.errors import APIError, NotFound
from batch_server.jobs.retention import (
    EXPIRES_AFTER_MAX_SECONDS,
    EXPIRES_AFTER_MIN_SECONDS,
    expires_at,
    mark_deleted,
)
from batch_server.openai_types import FILE_PURPOSES, File, FileDeleted, FileList

router = APIRouter(prefix="/v1/files", tags=["files"], responses=errors(400, 401))


async def store_upload(
    ctx: AppContext,
    upload: UploadFile,
    purpose: str,
    who: Principal,
    expires_after: int | None = None,
) -> FileRow:
    """Copy an uploaded (disk-spooled) file into the store and register it (to expire
    ``expires_after`` seconds after its creation, if given)."""
    if purpose not in FILE_PURPOSES:
        raise APIError(
            f"Invalid purpose '{purpose}'; expected one of {', '.join(FILE_PURPOSES)}",
            param="purpose",
            code="invalid_value",
        )
    file_id = ids.file_id()

    def copy() -> int:
        upload.file.seek(0)
        with ctx.store.writer(file_id) as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)
            return out.tell()

    size = await run_in_threadpool(copy)
    now = int(time.time())
    row = FileRow(
        id=file_id,
        purpose=purpose,
        filename=safe_filename(upload.filename),
        bytes=size,
        created_at=now,
        expires_at=expires_at(now, expires_after),
        status="processed",
        deleted=False,
        owner=who.owner,
    )
    with ctx.db.write() as s:
        s.add(row)
    return row


def get_file(ctx: AppContext, file_id: str, who: Principal) -> FileRow:
    """A live file of the caller's; another tenant's file is "not found"."""
    with ctx.db.read() as s:
        row = s.execute(
            select(FileRow).where(FileRow.id == file_id, FileRow.deleted.is_(False))
        ).scalar()
    if row is None or not who.owns(row.owner):
        raise NotFound("file", file_id, param="file_id")
    return row


def content_disposition(filename: str) -> str:
    """``attachment`` with the name as RFC 6266 wants it: an ASCII fallback and the
    UTF-8 name percent-encoded (RFC 5987), since header values are Latin-1 bytes."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    fallback = fallback.replace("\\", "_").replace('"', "_")
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def creation_limits(ctx: AppContext, who: Principal) -> limits.Limits:
    """The caller's limits, once its creation rate allows one more creation."""
    with ctx.db.read() as s:
        mine = limits.for_owner(s, ctx.settings, who.owner)
        limits.check_creation_rate(s, who.owner, mine.create_rate_per_minute)
    return mine


UPLOAD_BODY = multipart_body(
    {
        "file": FILE_FIELD,
        "purpose": {"type": "string", "enum": list(FILE_PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {
            "type": "integer",
            "minimum": EXPIRES_AFTER_MIN_SECONDS,
            "maximum": EXPIRES_AFTER_MAX_SECONDS,
        },
    },
    required=["file", "purpose"],
)


@router.post("", openapi_extra=UPLOAD_BODY, responses=errors(403, 413, 415, 429))
async def upload_file(request: Request, ctx: Ctx, who: Auth) -> File:
    mine = creation_limits(ctx, who)
    form = await read_form(request, mine.max_upload_bytes)
    try:
        purpose = form_text(form, "purpose", required=True)
        assert purpose is not None
        expires_after = form_expires_after(form, "expires_after")
        row = await store_upload(ctx, form_file(form), purpose, who, expires_after)
    finally:
        await form.close()
    return File.from_row(row)


@router.get("", responses=errors(404, 422))
def list_files(
    ctx: Ctx,
    who: Auth,
    purpose: str | None = None,
    limit: int = Query(10_000),
    order: str = Query("desc"),
    after: str | None = None,
) -> FileList:
    check_limit(limit, 10_000)
    if order not in ("asc", "desc"):
        raise APIError("'order' must be 'asc' or 'desc'", param="order", code="invalid_value")
    query = who.scope(select(FileRow).where(FileRow.deleted.is_(False)), FileRow)
    if purpose:
        query = query.where(FileRow.purpose == purpose)
    with ctx.db.read() as s:
        rows, more = paginate(s, query, FileRow, after, limit, order == "desc", "file")
    return FileList.of([File.from_row(r) for r in rows], more)


@router.get("/{file_id}", responses=errors(404))
def retrieve_file(file_id: str, ctx: Ctx, who: Auth) -> File:
    return File.from_row(get_file(ctx, file_id, who))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses=errors(404) | binary_response("application/octet-stream", "The file's bytes"),
)
def file_content(file_id: str, ctx: Ctx, who: Auth) -> StreamingResponse:
    row = get_file(ctx, file_id, who)
    return StreamingResponse(
        ctx.store.iter_bytes(row.id),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": content_disposition(row.filename),
        },
    )


@router.delete("/{file_id}", responses=errors(403, 404, 409))
def delete_file(file_id: str, ctx: Ctx, who: Auth) -> FileDeleted:
    row = get_file(ctx, file_id, who)
    with ctx.db.write() as s:
        mark_deleted(s, row.id)  # the rule housekeeping's expiry follows too
    ctx.store.delete(row.id)
    return FileDeleted(id=row.id, deleted=True)
