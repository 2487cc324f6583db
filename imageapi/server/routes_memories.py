"""GET /memories: this day, week or month in earlier years."""

from __future__ import annotations

from aiohttp import web

from imageapi.core.memories import SPANS, memories, parse_date, today_in
from imageapi.server.keys import CONFIG, DB, LIBRARIES
from imageapi.server.params import query_choice, query_int, query_str


async def get_memories(request: web.Request) -> web.Response:
    span = query_choice(request, "span", SPANS, "day")
    tz = query_str(request, "tz")
    raw_date = request.query.get("date")
    anchor = parse_date(raw_date) if raw_date is not None else today_in(tz)
    if tz and raw_date is not None:
        today_in(tz)  # still refuse an unknown zone
    limit = query_int(request, "limit", 500, 1, 5000)
    name = query_str(request, "library")
    libraries = [await request.app[LIBRARIES].get(name)] if name else await request.app[LIBRARIES].all()
    years = await memories(request.app[DB], request.app[CONFIG], libraries, span, anchor, limit)
    return web.json_response({
        "span": span, "date": anchor.isoformat(),
        "years": [{"year": y.year, "count": len(y.items), "items": y.items} for y in years],
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/memories", get_memories)
