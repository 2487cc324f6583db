"""SQL of places (migration 19): the rows due for a place, their writes, and the place tree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imageapi.core.db import Connection
from imageapi.core.repositories.listing import TimelineFile

# A row is due when it has GPS and no place computed: migration 19's partial index, word for word.
DUE_SQL = "f.gps_lat IS NOT NULL AND f.place_key IS NULL"

_ROW = "f.id, f.kind, f.gps_lat, f.gps_lon, f.taken_at, f.taken_at_offset, f.taken_at_source, f.taken_at_offset_source"


async def due(db: Connection, limit: int, after_id: int = 0,
              library_ids: Sequence[int] | None = None) -> list[tuple[Any, ...]]:
    """Due rows by id from `after_id` on: (id, kind, lat, lon, taken_at, offset, taken_at_source,
    offset_source)."""
    libs = ""
    params: list[object] = [after_id]
    if library_ids:
        # `+`: off the library's index, so the due index (in id order) is walked, not every file
        # of the library then sorted.
        libs = f" AND +f.library_id IN ({', '.join('?' * len(library_ids))})"
        params += list(library_ids)
    async with db.execute(f"SELECT {_ROW} FROM files f WHERE {DUE_SQL} AND f.id > ?{libs} ORDER BY f.id LIMIT ?",
                          (*params, limit)) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def rows(db: Connection, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """The claimed rows `ids` (columns as `due`), still due, by id."""
    if not ids:
        return []
    async with db.execute(f"SELECT {_ROW} FROM files f WHERE f.id IN ({', '.join('?' * len(ids))}) "
                          f"AND {DUE_SQL} ORDER BY f.id", list(ids)) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def count_due(db: Connection) -> int:
    async with db.execute(f"SELECT COUNT(*) FROM files f WHERE {DUE_SQL}") as cur:
        row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


async def write_places(db: Connection, values: Sequence[Sequence[object]]) -> None:
    """(city, region, country, cc, key, taken_at, offset, offset source, id) per row, written only
    where the row is still due (a scan that rewrote it meanwhile computed its own). In the caller's
    transaction."""
    await db.executemany(
        "UPDATE files SET place_city = ?, place_region = ?, place_country = ?, place_cc = ?, place_key = ?, "
        "taken_at = ?, taken_at_offset = ?, taken_at_offset_source = ? "
        "WHERE id = ? AND gps_lat IS NOT NULL AND place_key IS NULL", values)


async def forget_other_versions(db: Connection, version: str) -> int:
    """Rows whose place was computed with another dataset or rules: due again. How many."""
    async with db.execute(
        "UPDATE files SET place_key = NULL WHERE gps_lat IS NOT NULL AND place_key IS NOT NULL "
        "AND place_key NOT LIKE ? RETURNING id", ("%@" + version,),
    ) as cur:
        return len(await cur.fetchall())


async def city_counts(db: Connection, library_ids: Sequence[int] | None) -> list[tuple[Any, ...]]:
    """(cc, region, city, files, cover id) per city, over the files_by_place index; the cover is
    the newest indexed file (highest id)."""
    libs = ""
    params: list[object] = []
    if library_ids:
        libs = f" AND library_id IN ({', '.join('?' * len(library_ids))})"
        params = list(library_ids)
    async with db.execute(
        "SELECT place_cc, place_region, place_city, COUNT(*), MAX(id) FROM files "
        f"WHERE place_cc IS NOT NULL{libs} GROUP BY place_cc, place_region, place_city", params,
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def covers(db: Connection, ids: Sequence[int]) -> dict[int, tuple[int, TimelineFile]]:
    """id -> (id, the file as the timeline lists it) for `ids`."""
    out: dict[int, tuple[int, TimelineFile]] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i:i + 500])
        async with db.execute(
            "SELECT f.id, f.library_id, f.rel_path, f.kind, f.taken_at, f.taken_at_offset, f.width, f.height, "
            f"f.orientation, f.rotation, f.duration FROM files f WHERE f.id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ) as cur:
            for r in await cur.fetchall():
                out[int(r[0])] = (int(r[0]), TimelineFile(*r[1:]))
    return out
