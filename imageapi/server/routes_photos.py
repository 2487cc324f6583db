"""GET /libraries and GET /photos (the listing, paginated by cursor)."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from imageapi.core.listing import DEFAULT_SORT, MAX_LIMIT, SORTS, PhotoQuery, list_photos
from imageapi.core.status import file_counts
from imageapi.server.keys import CONFIG, DB, LIBRARIES
from imageapi.server.params import client_path, query_bool, query_choice, query_int, query_str
from imageapi.server.routes_faces import faces_available


async def get_libraries(request: web.Request) -> web.Response:
    libs = await request.app[LIBRARIES].all()
    counts = await file_counts(request.app[DB])
    return web.json_response({"libraries": [{"name": lib.name, "files": counts.get(lib.id, 0)} for lib in libs]})


async def get_photos(request: web.Request) -> web.Response:
    lib = await request.app[LIBRARIES].get(query_str(request, "library"))
    tag = query_str(request, "tag")
    person = request.query.get("person")
    person_id = query_int(request, "person", 0, 1, 2**62) if person not in (None, "") else None
    q = PhotoQuery(
        path=client_path(request.query.get("path"), required=False),
        # A tag or person filter means "anywhere in the library" unless told otherwise.
        recursive=query_bool(request, "recursive", tag is not None or person_id is not None),
        sort=query_choice(request, "sort", tuple(SORTS), DEFAULT_SORT),
        tag=tag,
        person=person_id,
        limit=query_int(request, "limit", 200, 1, MAX_LIMIT),
        cursor=query_str(request, "cursor"),
        stack=query_bool(request, "stack", False),
    )
    if person_id is not None and not await faces_available(request.app):
        page_items: list[dict[str, object]] = []
        return web.json_response({"library": lib.name, **_echo(q), "folders": [], "items": page_items,
                                  "next_cursor": None})
    page = await list_photos(request.app[DB], request.app[CONFIG], lib, q)
    return web.json_response({
        "library": lib.name, **_echo(q), "folders": page.folders, "items": page.items,
        "next_cursor": page.next_cursor,
    })


def _echo(q: PhotoQuery) -> dict[str, object]:
    d = asdict(q)
    return {k: d[k] for k in ("path", "recursive", "sort", "tag", "person", "limit")}


def setup(app: web.Application) -> None:
    app.router.add_get("/libraries", get_libraries)
    app.router.add_get("/photos", get_photos)
