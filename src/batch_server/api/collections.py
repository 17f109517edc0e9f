"""Collections API (an extension): named, versioned sets of annotated examples across
batches, their frozen items, and exports of a version as Files. Tenancy as for batches:
another key's collection is "not found", and a version can only add the caller's own
batches. Building a version and writing an export stream through batches and items in
a worker thread."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from batch_server.api.auth import Auth, Principal
from batch_server.api.batch_creation import load
from batch_server.api.deps import Ctx, check_limit, invalid_parameter, json_payload
from batch_server.api.openapi import errors, json_body
from batch_server.app_context import AppContext
from batch_server.curation import collections, exports
from batch_server.db.pages import paginate
from batch_server.db.tables import CollectionRow
from batch_server.errors import NotFound
from batch_server.openai_types.collections import (
    ITEM_PREFIX,
    Collection,
    CollectionBody,
    CollectionDeleted,
    CollectionExport,
    CollectionItem,
    CollectionItemList,
    CollectionList,
    CollectionVersion,
    ExportBody,
    VersionBody,
)

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=errors(400, 401, 404))

B = TypeVar("B", bound=BaseModel)


async def _body(request: Request, model: type[B]) -> B:
    try:
        return model.model_validate(await json_payload(request))
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0]) from exc


def find(ctx: AppContext, ident: str, who: Principal) -> CollectionRow:
    return collections.find(ctx.db, ident, who.scoper(CollectionRow), who.owner)


@router.post("", openapi_extra=json_body(CollectionBody), responses=errors(409))
async def create_collection(request: Request, ctx: Ctx, who: Auth) -> Collection:
    body = await _body(request, CollectionBody)
    row = collections.create(ctx.db, body.name, body.description, who.owner)
    return Collection.from_row(row, [])


@router.get("", responses=errors(422))
def list_collections(
    ctx: Ctx, who: Auth, after: str | None = None, limit: int = Query(20)
) -> CollectionList:
    """The caller's collections, newest first (cursor paging)."""
    check_limit(limit, 100)
    query = who.scope(select(CollectionRow), CollectionRow)
    with ctx.db.read() as s:
        rows, more = paginate(s, query, CollectionRow, after, limit, True, "collection")
    return CollectionList.of([Collection.from_row(r) for r in rows], more)


@router.get("/{collection_id}")
def retrieve_collection(collection_id: str, ctx: Ctx, who: Auth) -> Collection:
    """One collection (by id or name) with its versions."""
    row = find(ctx, collection_id, who)
    return Collection.from_row(row, collections.versions(ctx.db, row.id))


@router.delete("/{collection_id}")
def delete_collection(collection_id: str, ctx: Ctx, who: Auth) -> CollectionDeleted:
    """Delete a collection and every version's items (exported Files stay)."""
    row = find(ctx, collection_id, who)
    collections.remove(ctx.db, row.id)
    return CollectionDeleted(id=row.id, deleted=True)


@router.post("/{collection_id}/versions", openapi_extra=json_body(VersionBody))
async def create_version(
    collection_id: str, request: Request, ctx: Ctx, who: Auth
) -> CollectionVersion:
    """Build the next version: ``base`` minus ``remove`` plus fresh, frozen copies of the
    requests of ``add`` (the caller's batches) that carry one of its labels."""
    body = await _body(request, VersionBody)
    row = find(ctx, collection_id, who)
    rule = collections.Rule(
        add=[
            collections.Add(
                load(ctx, a.batch_id, who),
                collections.check_labels(a.labels),
                None if a.custom_ids is None else tuple(a.custom_ids),
            )
            for a in body.add
        ],
        remove=[
            collections.Remove(
                r.batch_id, None if r.custom_ids is None else frozenset(r.custom_ids)
            )
            for r in body.remove
        ],
        base=body.base,
    )
    built = await run_in_threadpool(collections.build, ctx.db, ctx.store, row, rule)
    return CollectionVersion.of(row.id, built)


@router.get("/{collection_id}/items", responses=errors(422))
def list_items(
    collection_id: str,
    ctx: Ctx,
    who: Auth,
    version: int | None = None,
    after: str | None = None,
    limit: int = Query(20),
) -> CollectionItemList:
    """A version's items (default: the latest) in their frozen order."""
    check_limit(limit, 100)
    row = find(ctx, collection_id, who)
    number = collections.version(ctx.db, row, version)
    rows, more = collections.items(ctx.db, row.id, number, _cursor(after), limit)
    return CollectionItemList.of([CollectionItem.from_row(r) for r in rows], more)


def _cursor(after: str | None) -> int | None:
    if after is None:
        return None
    digits = after.removeprefix(ITEM_PREFIX)
    if not after.startswith(ITEM_PREFIX) or not digits.isdigit() or len(digits) > 18:
        raise NotFound("collection item", after, param="after")
    return int(digits)


@router.post("/{collection_id}/exports", openapi_extra=json_body(ExportBody))
async def create_export(
    collection_id: str, request: Request, ctx: Ctx, who: Auth
) -> CollectionExport:
    """Export a version (default: the latest) as a File: fine-tuning JSONL (purpose
    ``fine-tune``), few-shot JSON or prompt, CSV or Parquet (purpose ``user_data``)."""
    body = await _body(request, ExportBody)
    row = find(ctx, collection_id, who)
    number = collections.version(ctx.db, row, body.version)
    o = body.options
    options = exports.Options(
        labels=None if o.labels is None else tuple(o.labels),
        token_budget=o.token_budget,
        diverse=o.diverse,
        similarity=o.similarity,
        max_examples=o.max_examples,
        include_system=o.include_system,
    )
    done = await run_in_threadpool(
        exports.export, ctx.db, ctx.store, row, number, body.format, options, ctx.plugins
    )
    return export_object(row.id, done)


def export_object(collection_id: str, done: exports.Export) -> CollectionExport:
    few_shot = done.format.startswith("few-shot")
    values: dict[str, Any] = {
        "collection_id": collection_id,
        "file_id": done.file.id,
        "filename": done.file.filename,
        "purpose": done.file.purpose,
        "bytes": done.file.bytes,
        "format": done.format,
        "version": done.version,
        "count": done.count,
        "skipped": done.skipped,
        "tokens": done.tokens if few_shot else None,
        "token_estimate": exports.TOKEN_ESTIMATE if few_shot else None,
        "created_at": done.file.created_at,
    }
    return CollectionExport(**values)
