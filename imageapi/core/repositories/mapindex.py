"""SQL of the map (imageapi.core.mapindex): the files with GPS, read once per library into memory,
the generation that says when to read them again, and the rows the answer names."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from imageapi.core.db import Connection, dialect


async def generations(db: Connection) -> dict[int, int]:
    """library id -> its map generation (migration 22)."""
    async with db.execute("SELECT id, map_generation FROM libraries") as cur:
        return {int(r[0]): int(r[1]) for r in await cur.fetchall()}


async def bump(db: Connection, library_ids: Iterable[int]) -> None:
    """Files with GPS of these libraries were written or deleted: the map reads them again. In
    the writer's transaction, so the number moves when the rows are visible, not before."""
    ids = sorted(set(library_ids))
    if ids:
        await db.executemany("UPDATE libraries SET map_generation = map_generation + 1 WHERE id = ?",
                             [(i,) for i in ids])


async def gps_rows(db: Connection, library_id: int, after_id: int, limit: int) -> list[tuple[Any, ...]]:
    """(id, lat, lon) of a library's files with GPS, by id, after `after_id` (a page, so that a
    million rows are read in steps other queries can come between). `+library_id`: SQLite walks
    the rows in id order instead of sorting a library's rows for every page."""
    async with db.execute(
        "SELECT id, gps_lat, gps_lon FROM files WHERE +library_id = ? AND id > ? "
        "AND gps_lat IS NOT NULL AND gps_lon IS NOT NULL ORDER BY id LIMIT ?", (library_id, after_id, limit),
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def file_refs(db: Connection, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """id -> (library name, rel_path, kind, taken_at, gps_lat, gps_lon) of the rows that still exist."""
    select = ("SELECT f.id, l.name, f.rel_path, f.kind, f.taken_at, f.gps_lat, f.gps_lon FROM files f "
              "JOIN libraries l ON l.id = f.library_id WHERE ")
    out: dict[int, tuple[Any, ...]] = {}
    postgres = dialect(db) == "postgresql"
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start:start + 500]]
        # PostgreSQL: one array parameter, one statement whatever the count (an IN list of each
        # length would be parsed and planned anew).
        sql, params = ((select + "f.id = ANY(?::bigint[])", (chunk,)) if postgres
                       else (select + f"f.id IN ({', '.join('?' * len(chunk))})", tuple(chunk)))
        async with db.execute(sql, params) as cur:
            for r in await cur.fetchall():
                out[int(r[0])] = tuple(r[1:])
    return out
