"""GET /duplicates: groups of duplicates or near-duplicates (core/duplicates.py), by cursor."""

from __future__ import annotations

from aiohttp import web

from imageapi.core.duplicates import MAX_LIMIT, decode_cursor, find_groups
from imageapi.server.keys import DB, LIBRARIES
from imageapi.server.middlewares import ApiError
from imageapi.server.params import query_bool, query_int, query_str


async def get_duplicates(request: web.Request) -> web.Response:
    near = query_bool(request, "near", False)
    similar = query_bool(request, "similar", False)
    if near and similar:
        raise ApiError(400, "bad_parameter", "near and similar: ask for one kind of group at a time")
    kind = "similar" if similar else "near" if near else "exact"
    limit = query_int(request, "limit", 50, 1, MAX_LIMIT)
    name = query_str(request, "library")
    lib = await request.app[LIBRARIES].get(name) if name is not None else None
    cursor = query_str(request, "cursor")
    after = decode_cursor(cursor, kind) if cursor is not None else None
    page = await find_groups(request.app[DB], kind=kind, library_id=lib.id if lib else None, after=after,
                             limit=limit)
    return web.json_response({"kind": kind, "library": lib.name if lib else None,
                              "groups": [g.record() for g in page.groups], "next_cursor": page.next_cursor})


def setup(app: web.Application) -> None:
    app.router.add_get("/duplicates", get_duplicates)
