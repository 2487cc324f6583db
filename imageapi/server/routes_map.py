"""GET /map: clusters of photos with GPS in a bounding box at a zoom (core/mapindex.py), and the
tile layer the web client draws them on (MAP_TILE_URL)."""

from __future__ import annotations

from aiohttp import web

from imageapi.core.mapindex import MapIndex, answer, parse_bbox, parse_zoom
from imageapi.server.keys import CONFIG, DB, LIBRARIES
from imageapi.server.params import query_str


class MapState:
    """The process's index, made on the first request (the database opens after setup)."""

    def __init__(self) -> None:
        self.index: MapIndex | None = None


MAP_STATE = web.AppKey("map_state", MapState)


async def get_map(request: web.Request) -> web.Response:
    bbox = parse_bbox(request.query.get("bbox"))
    zoom = parse_zoom(request.query.get("zoom"))
    name = query_str(request, "library")
    library_ids = [(await request.app[LIBRARIES].get(name)).id] if name is not None else None
    state = request.app[MAP_STATE]
    if state.index is None:
        state.index = MapIndex(request.app[DB])
    libs = await state.index.points(library_ids)
    found = await answer(request.app[DB], libs, bbox, zoom)
    config = request.app[CONFIG]
    return web.json_response({
        "bbox": [bbox.south, bbox.west, bbox.north, bbox.east], "zoom": zoom, "library": name,
        "level": found.level, "total": found.total, "clusters": found.clusters, "photos": found.photos,
        "tiles": {"url": config.map_tile_url, "attribution": config.map_tile_attribution},
    })


def setup(app: web.Application) -> None:
    app[MAP_STATE] = MapState()
    app.router.add_get("/map", get_map)
