"""The places of a library: countries, their regions, their cities, with counts and a cover.

Read from the files_by_place index (one GROUP BY over it, then one row per city for its cover):
what `GET /places` and `imageapi places` show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imageapi.core.db import Connection
from imageapi.core.libraries import Library, list_libraries
from imageapi.core.places import country_name
from imageapi.core.repositories import places as repo
from imageapi.core.timeline import item


def _ordered(nodes: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Most files first, then by name (unnamed last)."""
    return sorted(nodes, key=lambda n: (-n["count"], n[name] is None, n[name] or ""))


async def place_tree(db: Connection, libs: Sequence[Library] | None = None) -> dict[str, Any]:
    """{"total": files with a place, "countries": [{"cc", "country", "count", "cover", "regions":
    [{"region", "count", "cover", "cities": [{"city", "count", "cover"}]}]}]}; `libs` None: every
    library. A node's cover is the newest indexed file of its largest city."""
    rows = await repo.city_counts(db, [lib.id for lib in libs] if libs is not None else None)
    names = {lib.id: lib.name for lib in (libs if libs is not None else await list_libraries(db))}
    covers = await repo.covers(db, [int(r[4]) for r in rows])
    countries: dict[str, dict[str, Any]] = {}
    for cc, region, city, count, cover_id in rows:
        country = countries.setdefault(cc, {"cc": cc, "country": country_name(cc), "count": 0, "regions": {}})
        reg = country["regions"].setdefault(region, {"region": region, "count": 0, "cities": []})
        found = covers.get(int(cover_id))
        cover = None
        if found is not None and found[1].library_id in names:
            cover = {"id": found[0], **item(names[found[1].library_id], found[1])}
        reg["cities"].append({"city": city, "count": int(count), "cover": cover})
        reg["count"] += int(count)
        country["count"] += int(count)
    out: list[dict[str, Any]] = []
    for country in countries.values():
        regions = []
        for reg in country["regions"].values():
            reg["cities"] = _ordered(reg["cities"], "city")
            reg["cover"] = reg["cities"][0]["cover"]
            regions.append(reg)
        country["regions"] = _ordered(regions, "region")
        country["cover"] = country["regions"][0]["cover"]
        out.append(country)
    return {"total": sum(c["count"] for c in out), "countries": _ordered(out, "country")}
