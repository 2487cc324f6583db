"""Tags: GET /tags, GET/POST/DELETE /image/tags. Tags belong to content: a file not hashed yet is
hashed (in the worker pool) before it is tagged."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imageapi.core import tags as tagstore
from imageapi.server.keys import DB, LIBRARIES, RENDERER
from imageapi.server.middlewares import ApiError, field, read_json
from imageapi.server.params import client_path, query_str
from imageapi.server.routes_media import indexed

MAX_PATHS = 1000


async def get_tags(request: web.Request) -> web.Response:
    return web.json_response({"tags": await tagstore.list_tags(request.app[DB])})


async def get_image_tags(request: web.Request) -> web.Response:
    lib = await request.app[LIBRARIES].get(query_str(request, "library"))
    rel = client_path(request.query.get("path"))
    db = request.app[DB]
    row, _ = await indexed(request, lib, rel)
    found = await tagstore.tags_for_hashes(db, [row["content_hash"]]) if row["content_hash"] else {}
    return web.json_response({"library": lib.name, "path": rel, "tags": found.get(row["content_hash"], [])})


def _many(body: dict[str, Any], one: str, many: str) -> list[str]:
    single = field(body, one, str, required=False)
    several = field(body, many, list, required=False)
    if single is None and several is None:
        raise ApiError(400, "missing_field", f"field {one!r} (or {many!r}, a list) is required")
    values = ([single] if single is not None else []) + list(several or [])
    if not values:
        raise ApiError(400, "bad_field", f"field {many!r} must not be empty")
    if len(values) > MAX_PATHS:
        raise ApiError(400, "bad_field", f"at most {MAX_PATHS} values in {many!r}")
    if not all(isinstance(v, str) for v in values):
        raise ApiError(400, "bad_field", f"field {many!r} must be a list of strings")
    return values


async def _change(request: web.Request, add: bool) -> web.Response:
    body = await read_json(request)
    lib = await request.app[LIBRARIES].get(field(body, "library", str, required=False))
    paths = [client_path(p) for p in _many(body, "path", "paths")]
    names = [tagstore.clean_tag(t) for t in _many(body, "tag", "tags")]
    done = await tagstore.change_tags(request.app[DB], request.app[RENDERER].pool, lib, paths, names, add=add)
    return web.json_response({
        "library": lib.name, "changed": done.changed,
        "files": [{"path": p, "tags": tags} for p, tags in done.tags.items()],
    })


async def post_image_tags(request: web.Request) -> web.Response:
    return await _change(request, add=True)


async def delete_image_tags(request: web.Request) -> web.Response:
    return await _change(request, add=False)


def setup(app: web.Application) -> None:
    app.router.add_get("/tags", get_tags)
    app.router.add_get("/image/tags", get_image_tags)
    app.router.add_post("/image/tags", post_image_tags)
    app.router.add_delete("/image/tags", delete_image_tags)
