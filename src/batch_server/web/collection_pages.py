"""Dashboard pages of collections: the list, and one collection with its versions, a
version's items and an export button per format (the page's script calls the JSON API
and offers the File's download)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from batch_server.api.deps import Ctx
from batch_server.curation import collections, exports
from batch_server.db.pages import everything, paginate
from batch_server.db.tables import CollectionItemRow, CollectionRow
from batch_server.openai_types.collections import Collection, CollectionItem
from batch_server.web.pages import page_admin, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_admin)])
PAGE_SIZE = 50


@router.get("/ui/collections")
def collections_page(request: Request, ctx: Ctx, after: str | None = None) -> HTMLResponse:
    with ctx.db.read() as s:
        rows, more = paginate(
            s, select(CollectionRow), CollectionRow, after or None, PAGE_SIZE, True, "collection"
        )
    return render(
        request,
        "collections.html",
        page="collections",
        rows=[Collection.from_row(r) for r in rows],
        more=more,
    )


@router.get("/ui/collections/{collection_id}")
def collection_page(
    request: Request, collection_id: str, ctx: Ctx, version: int | None = None
) -> HTMLResponse:
    row = collections.find(ctx.db, collection_id, everything, None)
    versions = collections.versions(ctx.db, row.id)
    shown = version if version is not None else (row.version or None)
    items: list[CollectionItemRow] = []
    more = False
    if shown is not None:
        number = collections.version(ctx.db, row, shown)
        items, more = collections.items(ctx.db, row.id, number, None, PAGE_SIZE)
    return render(
        request,
        "collection.html",
        page="collections",
        collection=Collection.from_row(row, versions),
        shown=shown,
        items=[CollectionItem.from_row(i) for i in items],
        more_items=more,
        formats=exports.FORMATS,
    )
