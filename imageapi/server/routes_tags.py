"""Tags: GET /tags, GET/POST/DELETE /image/tags. Tags belong to content: a file not hashed yet is
hashed (in the worker pool) before it is tagged."""

from __future__ import annotations

from typing import Any

import aiosqlite
from aiohttp import web

from imageapi.core import tags as tagstore
from imageapi.core.db import write_many
from imageapi.core.errors import MediaError
from imageapi.core.files import get_file_row
from imageapi.core.libraries import Library, resolve_in_library
from imageapi.core.worker import hash_batch
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


async def _hashes(request: web.Request, db: aiosqlite.Connection, lib: Library,
                  paths: list[str]) -> dict[str, str]:
    """path -> content hash, hashing rows that have none yet."""
    out: dict[str, str] = {}
    missing: list[tuple[int, str]] = []
    rel_of: dict[int, str] = {}
    for rel in paths:
        row = await get_file_row(db, lib, rel)
        if row["content_hash"]:
            out[rel] = row["content_hash"]
        else:
            missing.append((row["id"], str(resolve_in_library(lib, rel))))
            rel_of[row["id"]] = rel
    if missing:
        results = await request.app[RENDERER].pool.run(hash_batch, missing)
        for row_id, digest, error in results:
            if digest is None:
                raise MediaError(f"cannot hash {rel_of[row_id]!r}: {error}")
            out[rel_of[row_id]] = digest
        await write_many(db, "UPDATE files SET content_hash = ? WHERE id = ? AND content_hash IS NULL",
                         [(digest, row_id) for row_id, digest, _ in results])
    return out


async def _change(request: web.Request, add: bool) -> web.Response:
    body = await read_json(request)
    lib = await request.app[LIBRARIES].get(field(body, "library", str, required=False))
    paths = list(dict.fromkeys(client_path(p) for p in _many(body, "path", "paths")))
    names = [tagstore.clean_tag(t) for t in _many(body, "tag", "tags")]
    db = request.app[DB]
    hashes = await _hashes(request, db, lib, paths)
    if add:
        changed = await tagstore.add_tags(db, hashes.values(), names)
    else:
        changed = await tagstore.remove_tags(db, hashes.values(), names)
    now = await tagstore.tags_for_hashes(db, hashes.values())
    return web.json_response({
        "library": lib.name, "changed": changed,
        "files": [{"path": p, "tags": now[hashes[p]]} for p in paths],
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
