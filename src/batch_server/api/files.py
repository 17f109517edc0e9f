"""Files API, as OpenAI's: upload, list, retrieve, download, delete."""

from __future__ import annotations

import shutil
import time

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from batch_server import ids
from batch_server.api.deps import Ctx, check_limit, paginate
from batch_server.api.uploads import form_file, form_text, read_form, safe_filename
from batch_server.app_context import AppContext
from batch_server.db.tables import BatchRow, FileRow
from batch_server.errors import APIError, Conflict, NotFound
from batch_server.jobs.lifecycle import LIVE
from batch_server.openai_types import FILE_PURPOSES, file_object, list_object

router = APIRouter(prefix="/v1/files", tags=["files"])


async def store_upload(ctx: AppContext, upload: UploadFile, purpose: str) -> FileRow:
    """Copy an uploaded (disk-spooled) file into the store and register it."""
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
    row = FileRow(
        id=file_id,
        purpose=purpose,
        filename=safe_filename(upload.filename),
        bytes=size,
        created_at=int(time.time()),
        expires_at=None,
        status="processed",
        deleted=False,
    )
    with ctx.db.write() as s:
        s.add(row)
    return row


def get_file(ctx: AppContext, file_id: str) -> FileRow:
    with ctx.db.read() as s:
        row = s.execute(
            select(FileRow).where(FileRow.id == file_id, FileRow.deleted.is_(False))
        ).scalar()
    if row is None:
        raise NotFound("file", file_id, param="file_id")
    return row


@router.post("")
async def upload_file(request: Request, ctx: Ctx) -> dict:
    form = await read_form(request, ctx.settings.max_upload_bytes)
    try:
        purpose = form_text(form, "purpose", required=True)
        assert purpose is not None
        row = await store_upload(ctx, form_file(form), purpose)
    finally:
        await form.close()
    return file_object(row)


@router.get("")
def list_files(
    ctx: Ctx,
    purpose: str | None = None,
    limit: int = Query(10_000),
    order: str = Query("desc"),
    after: str | None = None,
) -> dict:
    check_limit(limit, 10_000)
    if order not in ("asc", "desc"):
        raise APIError("'order' must be 'asc' or 'desc'", param="order", code="invalid_value")
    query = select(FileRow).where(FileRow.deleted.is_(False))
    if purpose:
        query = query.where(FileRow.purpose == purpose)
    with ctx.db.read() as s:
        rows, more = paginate(s, query, FileRow, after, limit, order == "desc", "file")
    return list_object([file_object(r) for r in rows], more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, ctx: Ctx) -> dict:
    return file_object(get_file(ctx, file_id))


@router.get("/{file_id}/content")
def file_content(file_id: str, ctx: Ctx) -> StreamingResponse:
    row = get_file(ctx, file_id)
    return StreamingResponse(
        ctx.store.iter_bytes(row.id),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": f'attachment; filename="{row.filename}"',
        },
    )


@router.delete("/{file_id}")
def delete_file(file_id: str, ctx: Ctx) -> dict:
    row = get_file(ctx, file_id)
    with ctx.db.write() as s:
        in_use = s.execute(
            select(BatchRow.id)
            .where(BatchRow.input_file_id == file_id, BatchRow.status.in_(LIVE))
            .limit(1)
        ).scalar()
        if in_use:
            raise Conflict(
                f"File '{file_id}' is the input of batch '{in_use}', which is still "
                "running; cancel it first",
                param="file_id",
                code="file_in_use",
            )
        s.execute(update(FileRow).where(FileRow.id == row.id).values(deleted=True))
    ctx.store.delete(row.id)
    return {"id": row.id, "object": "file", "deleted": True}
