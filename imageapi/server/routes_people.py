"""PATCH /persons/{id} (rename), POST /persons/{id}/merge, GET /persons/{id}/face (a face crop):
what the web client's people page needs beyond routes_faces."""

from __future__ import annotations

import asyncio

from aiohttp import web

from imageapi.core.faces.crops import crop_face, face_source, person_by_id
from imageapi.core.faces.people import merge_people, rename_person
from imageapi.server.keys import CONFIG, DB
from imageapi.server.middlewares import field, read_json
from imageapi.server.routes_faces import _id, faces_available

FACE_CACHE = "private, max-age=60"  # a person's best face changes as faces are bound


async def patch_person(request: web.Request) -> web.Response:
    person_id = _id(request, "person")
    name = field(await read_json(request), "name", str)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "person": None})
    db = request.app[DB]
    person = await rename_person(db, (await person_by_id(db, person_id)).name, name)
    return web.json_response({"enabled": True, "person": {"id": person.id, "name": person.name}})


async def post_merge(request: web.Request) -> web.Response:
    """Merge this person into `into` (another person's id): faces move, this person goes."""
    person_id = _id(request, "person")
    into = field(await read_json(request), "into", int)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "person": None, "moved": 0, "unbound": 0})
    db = request.app[DB]
    source, target = await person_by_id(db, person_id), await person_by_id(db, into)
    result = await merge_people(db, source.name, target.name)
    return web.json_response({"enabled": True, "person": {"id": target.id, "name": target.name},
                              "moved": result.moved, "unbound": result.unbound})


async def get_face(request: web.Request) -> web.Response:
    person_id = _id(request, "person")
    if not await faces_available(request.app):
        raise web.HTTPNotFound(text="faces are off on this server")
    source = await face_source(request.app[DB], request.app[CONFIG], person_id)
    body = await asyncio.to_thread(crop_face, source)
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": FACE_CACHE})


def setup(app: web.Application) -> None:
    app.router.add_patch("/persons/{id}", patch_person)
    app.router.add_post("/persons/{id}/merge", post_merge)
    app.router.add_get("/persons/{id}/face", get_face)
