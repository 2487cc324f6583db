"""PATCH /persons/{id} (name or rename), POST /persons/{id}/merge, GET /persons/{id}/face (a face
crop), GET /persons/{id}/faces (a page of a person's faces), GET /faces/{id}/crop: what the web
client's people page needs beyond routes_faces. Unnamed persons (clusters) work as named ones do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from imageapi.core.config import Config
from imageapi.core.db import Connection
from imageapi.core.faces.crops import FaceSource, crop_face, face_source, face_source_of
from imageapi.core.faces.people import faces_of_person, merge_persons, name_person
from imageapi.server.keys import CONFIG, DB
from imageapi.server.middlewares import ApiError, field, read_json
from imageapi.server.params import query_int, query_str
from imageapi.server.routes_faces import _id, faces_available

FACE_CACHE = "private, max-age=60"  # a person's best face changes as faces are bound
CROP_CACHE = "private, max-age=3600"  # one face's crop changes only when its thumbnail is made again
MAX_FACES_PAGE = 500


async def patch_person(request: web.Request) -> web.Response:
    """Name an unnamed person or rename one; a name another person has is 409 (merge instead)."""
    person_id = _id(request, "person")
    name = field(await read_json(request), "name", str)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "person": None})
    person = await name_person(request.app[DB], person_id, name)
    return web.json_response({"enabled": True, "person": {"id": person.id, "name": person.name, "named": True}})


async def post_merge(request: web.Request) -> web.Response:
    """Merge this person into `into` (another person's id): faces move, this person goes."""
    person_id = _id(request, "person")
    into = field(await read_json(request), "into", int)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "person": None, "moved": 0, "unbound": 0})
    if into < 1:
        raise ApiError(404, "not_found", f"no person with id {into}")
    result = await merge_persons(request.app[DB], person_id, into)
    return web.json_response({"enabled": True, "person": {"id": result.target_id, "name": result.target_name,
                                                          "named": result.target_name is not None},
                              "moved": result.moved, "unbound": result.unbound})


async def get_face(request: web.Request) -> web.Response:
    """The person's representative face as a small square JPEG."""
    return await _crop(request, face_source, _id(request, "person"), FACE_CACHE)


async def get_face_crop(request: web.Request) -> web.Response:
    """One face (bound or not) as a small square JPEG."""
    return await _crop(request, face_source_of, _id(request, "face"), CROP_CACHE)


async def _crop(request: web.Request, find: Callable[[Connection, Config, int], Awaitable[FaceSource]], key: int,
                cache: str) -> web.Response:
    if not await faces_available(request.app):
        raise web.HTTPNotFound(text="faces are off on this server")
    source = await find(request.app[DB], request.app[CONFIG], key)
    body = await asyncio.to_thread(crop_face, source)  # decode and resize: off the event loop
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": cache})


def _cursor(raw: str | None) -> int:
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "bad_parameter", "query parameter 'cursor' is not one this server gave")
    return int(raw)


async def get_person_faces(request: web.Request) -> web.Response:
    """A page of the person's faces by id: `{"faces": [...], "next_cursor"}` (null on the last page)."""
    person_id = _id(request, "person")
    limit = query_int(request, "limit", 100, 1, MAX_FACES_PAGE)
    after = _cursor(query_str(request, "cursor"))
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "faces": [], "next_cursor": None})
    page = await faces_of_person(request.app[DB], person_id, after, limit)
    return web.json_response({"enabled": True, "faces": [
        {"id": f.id, "library": f.library, "path": f.path,
         "box": {"x": f.box[0], "y": f.box[1], "w": f.box[2], "h": f.box[3]},
         "score": f.score, "bound_by": f.bound_by} for f in page.faces
    ], "next_cursor": page.next_cursor})


def setup(app: web.Application) -> None:
    app.router.add_patch("/persons/{id}", patch_person)
    app.router.add_post("/persons/{id}/merge", post_merge)
    app.router.add_get("/persons/{id}/face", get_face)
    app.router.add_get("/persons/{id}/faces", get_person_faces)
    app.router.add_get("/faces/{id}/crop", get_face_crop)
