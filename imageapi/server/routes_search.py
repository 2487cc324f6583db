"""GET /search: free text and filters over the whole index (imageapi.core.search)."""

from __future__ import annotations

from aiohttp import web

from imageapi.core.search import DEFAULT_LIMIT, MAX_LIMIT, SORTS, SearchQuery, search
from imageapi.server.keys import CONFIG, DB
from imageapi.server.params import query_bool, query_choice, query_int, query_str


def _many(request: web.Request, name: str, *, commas: bool) -> list[str]:
    """A repeated parameter (kind and library also take commas: kind=photo,raw)."""
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out += [v for v in (raw.split(",") if commas else [raw]) if v.strip()]
    return out


async def get_search(request: web.Request) -> web.Response:
    gps = request.query.get("gps")
    q = SearchQuery(
        text=request.query.get("q", ""),
        date_from=query_str(request, "from"),
        date_to=query_str(request, "to"),
        kinds=_many(request, "kind", commas=True),
        libraries=_many(request, "library", commas=True),
        persons=_many(request, "person", commas=False),
        tags=_many(request, "tag", commas=False),
        camera=query_str(request, "camera"),
        has_gps=query_bool(request, "gps", False) if gps not in (None, "") else None,
        bbox=query_str(request, "bbox"),
        sort=query_choice(request, "sort", SORTS, "newest"),
        limit=query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        cursor=query_str(request, "cursor"),
    )
    page = await search(request.app[DB], request.app[CONFIG], q)
    return web.json_response({"q": q.text, "sort": q.sort, "limit": q.limit, "items": page.items,
                              "next_cursor": page.next_cursor})


def setup(app: web.Application) -> None:
    app.router.add_get("/search", get_search)
