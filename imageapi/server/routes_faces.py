"""Faces and persons: GET /faces, GET/POST /persons, PATCH/DELETE /faces/{id}, POST /faces,
GET /persons/{id}/photos.

Faces are enabled when APOLLO_FACE_API_BASE_URL (or APOLLO_API_BASE_URL) is set. When they are
not, every endpoint here answers 200 with an empty result and `"enabled": false`, never an error,
so clients need no special case.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imageapi.core.faces import people
from imageapi.core.faces.people import FaceRow
from imageapi.core.listing import DEFAULT_SORT, MAX_LIMIT, SORTS, PhotoQuery, list_photos
from imageapi.server.keys import CONFIG, DB, LIBRARIES
from imageapi.server.middlewares import ApiError, field, read_json
from imageapi.server.params import client_path, query_bool, query_choice, query_int, query_str
from imageapi.server.routes_media import indexed


async def faces_available(app: web.Application) -> bool:
    return app[CONFIG].faces.enabled


def _id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise ApiError(404, "not_found", f"no {what} with id {raw!r}")
    return int(raw)


def _face_id(request: web.Request) -> int:
    return _id(request, "face")


def _face(f: FaceRow) -> dict[str, Any]:
    return {
        "id": f.id,
        "box": {"x": f.x, "y": f.y, "w": f.w, "h": f.h},
        "score": f.score,
        "model": f.model,
        "person": {"id": f.person_id, "name": f.person_name} if f.person_id is not None else None,
        "bound_by": f.bound_by,
    }


async def get_faces(request: web.Request) -> web.Response:
    lib = await request.app[LIBRARIES].get(query_str(request, "library"))
    rel = client_path(request.query.get("path"))
    row, _ = await indexed(request, lib, rel)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "library": lib.name, "path": rel, "scanned": False, "faces": []})
    found = await people.content_faces(request.app[DB], row["content_hash"])
    return web.json_response({"enabled": True, "library": lib.name, "path": rel, "scanned": found.scanned,
                              "faces": [_face(f) for f in found.faces]})


async def get_persons(request: web.Request) -> web.Response:
    """Named persons by name, then unnamed clusters largest first; `?named=true|false` keeps one kind."""
    named = query_bool(request, "named", True) if request.query.get("named") else None
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "persons": []})
    found = await people.list_people(request.app[DB], named)
    return web.json_response({"enabled": True, "persons": [
        {"id": p.id, "name": p.name, "named": p.named, "faces": p.faces, "photos": p.photos,
         "cover_face_id": p.cover_face_id} for p in found
    ]})


async def post_persons(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = field(body, "name", str)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "person": None})
    person = await people.create_person(request.app[DB], name)
    return web.json_response({"enabled": True, "person": {"id": person.id, "name": person.name}}, status=201)


async def patch_face(request: web.Request) -> web.Response:
    """Bind by name (`person`) or by id (`person_id`, unnamed persons too); null unbinds and is
    remembered as "not this person"."""
    face_id = _face_id(request)
    body = await read_json(request)
    if "person_id" in body:
        if "person" in body:
            raise ApiError(400, "bad_field", "give 'person' (a name) or 'person_id', not both")
        person_id = field(body, "person_id", int, required=False, nullable=True)
        if person_id is not None and not 1 <= person_id < 2**63:
            raise ApiError(404, "not_found", f"no person with id {person_id}")
    elif "person" in body:
        name = field(body, "person", str, required=False, nullable=True)
    else:
        raise ApiError(400, "missing_field", "field 'person' (a person's name, or null to unbind) or 'person_id' "
                       "is required")
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "face": None})
    db = request.app[DB]
    if "person_id" in body:
        await people.bind_face_to(db, face_id, person_id)
    else:
        await people.bind_face(db, face_id, name)
    return web.json_response({"enabled": True, "face": _face(await people.face_view(db, face_id))})


def _box(body: dict[str, Any]) -> tuple[float, float, float, float]:
    box = field(body, "box", dict)
    values = []
    for k in ("x", "y", "w", "h"):
        v = box.get(k)
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise ApiError(400, "bad_field", f"field 'box.{k}' must be a number from 0 to 1")
        values.append(float(v))
    x, y, w, h = values
    if w <= 0 or h <= 0 or x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
        raise ApiError(400, "bad_field", "field 'box' must have a positive size and lie inside the picture")
    return x, y, w, h


async def post_face(request: web.Request) -> web.Response:
    """A face box drawn by a human (no embedding), optionally bound to a person at once."""
    body = await read_json(request)
    lib = await request.app[LIBRARIES].get(field(body, "library", str, required=False))
    rel = client_path(field(body, "path", str))
    x, y, w, h = _box(body)
    person_name = field(body, "person", str, required=False)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "face": None})
    row, _ = await indexed(request, lib, rel)
    face = await people.draw_face(request.app[DB], row["content_hash"], (x, y, w, h), person_name, what=rel)
    return web.json_response({"enabled": True, "face": _face(face)}, status=201)


async def delete_face(request: web.Request) -> web.Response:
    face_id = _face_id(request)
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "deleted": None})
    await people.delete_face(request.app[DB], face_id)
    return web.json_response({"enabled": True, "deleted": face_id})


async def get_person_photos(request: web.Request) -> web.Response:
    person_id = _id(request, "person")
    lib = await request.app[LIBRARIES].get(query_str(request, "library"))
    q = PhotoQuery(
        recursive=True, person=person_id,
        sort=query_choice(request, "sort", tuple(SORTS), DEFAULT_SORT),
        limit=query_int(request, "limit", 200, 1, MAX_LIMIT),
        cursor=query_str(request, "cursor"),
    )
    if not await faces_available(request.app):
        return web.json_response({"enabled": False, "person": None, "library": lib.name, "items": [],
                                  "next_cursor": None})
    db = request.app[DB]
    person = await people.person_by_id(db, person_id)
    page = await list_photos(db, request.app[CONFIG], lib, q)
    return web.json_response({"enabled": True, "person": {"id": person.id, "name": person.name}, "library": lib.name,
                              "items": page.items, "next_cursor": page.next_cursor})


def setup(app: web.Application) -> None:
    app.router.add_get("/faces", get_faces)
    app.router.add_post("/faces", post_face)
    app.router.add_patch("/faces/{id}", patch_face)
    app.router.add_delete("/faces/{id}", delete_face)
    app.router.add_get("/persons", get_persons)
    app.router.add_post("/persons", post_persons)
    app.router.add_get("/persons/{id}/photos", get_person_photos)
