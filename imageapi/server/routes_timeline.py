"""GET /timeline/buckets and GET /timeline/items: the web client's timeline (core/timeline.py)."""

from __future__ import annotations

from aiohttp import web

from imageapi.core.libraries import Library
from imageapi.core.timeline import MAX_ITEMS, buckets, check_month, month_items
from imageapi.server.keys import DB, LIBRARIES
from imageapi.server.params import query_bool, query_int, query_str


async def _libraries(request: web.Request) -> list[Library]:
    """The library named by ?library=, or every library when it is absent."""
    name = query_str(request, "library")
    libs = request.app[LIBRARIES]
    return [await libs.get(name)] if name is not None else await libs.all()


async def get_buckets(request: web.Request) -> web.Response:
    libs = await _libraries(request)
    collapse = query_bool(request, "collapse", False)
    return web.json_response({"libraries": [lib.name for lib in libs],
                              "months": await buckets(request.app[DB], libs, collapse)})


async def get_items(request: web.Request) -> web.Response:
    month = check_month(request.query.get("month", ""))
    offset = query_int(request, "offset", 0, 0, 2**31)
    limit = query_int(request, "limit", MAX_ITEMS, 1, MAX_ITEMS)
    libs = await _libraries(request)
    stack = query_bool(request, "stack", False)
    collapse = query_bool(request, "collapse", False)
    items = await month_items(request.app[DB], libs, month, offset, limit, stack, collapse)
    return web.json_response({"month": month, "offset": offset, "items": items})


def setup(app: web.Application) -> None:
    app.router.add_get("/timeline/buckets", get_buckets)
    app.router.add_get("/timeline/items", get_items)
