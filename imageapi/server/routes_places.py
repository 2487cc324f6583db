"""GET /places: countries, their regions and cities, with counts and a cover (core/place_tree.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imageapi.core.place_tree import place_tree
from imageapi.server.keys import DB, LIBRARIES
from imageapi.server.params import query_str


async def get_places(request: web.Request) -> web.Response:
    name = query_str(request, "library")
    libs = [await request.app[LIBRARIES].get(name)] if name is not None else None
    return web.json_response(await place_tree(request.app[DB], libs))


def setup(app: web.Application) -> None:
    app.router.add_get("/places", get_places)


def openapi_paths(bearer: Any) -> dict[str, Any]:
    """The OpenAPI description of GET /places (server/openapi.py)."""
    s, i, n = {"type": "string"}, {"type": "integer"}, {"type": "number"}

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "null"}]}

    def obj(props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(props)}

    cover = nullable(obj({
        "id": i, "library": s, "path": s, "name": s,
        "kind": {"type": "string", "enum": ["image", "heic", "raw", "video", "other"]},
        "taken_at": nullable(s), "width": nullable(i), "height": nullable(i),
        "orientation": nullable(i), "rotation": nullable(i), "duration": nullable(n)}))
    city = obj({"city": nullable(s), "count": i, "cover": cover})
    region = obj({"region": nullable(s), "count": i, "cover": cover, "cities": {"type": "array", "items": city}})
    country = obj({"cc": s, "country": nullable(s), "count": i, "cover": cover,
                   "regions": {"type": "array", "items": region}})
    error = {"$ref": "#/components/schemas/Error"}
    return {"/places": {"get": {
        "summary": "where the files were taken (offline, from their GPS): countries, their regions and cities, "
                   "most files first, each with its count and a cover file",
        "security": bearer,
        "parameters": [{"name": "library", "in": "query", "required": False, "schema": s,
                        "description": "one library (default: every library)"}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": obj({
                "total": i, "countries": {"type": "array", "items": country}})}}},
            **{str(code): {"description": what, "content": {"application/json": {"schema": error}}}
               for code, what in ((400, "bad request"), (401, "missing or invalid token"), (404, "not found"))},
        }}}}
