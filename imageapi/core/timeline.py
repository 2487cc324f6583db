"""The timeline: every file of one or all libraries, newest first, by month and day.

`buckets` gives the count per day grouped by month (what a client needs to lay out the whole
timeline and its date scrubber before loading any file), `month_items` the files of one month in
the timeline's order. Files without a date come last, as the month `undated`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from imageapi.core.db import Connection
from imageapi.core.errors import UsageError
from imageapi.core.files import taken_at_iso
from imageapi.core.libraries import Library

UNDATED = "undated"
MONTH_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
MAX_ITEMS = 5000


def _libs_sql(libs: Sequence[Library]) -> tuple[str, list[object]]:
    return f"f.library_id IN ({','.join('?' * len(libs))})", [lib.id for lib in libs]


async def buckets(db: Connection, libs: Sequence[Library]) -> list[dict[str, Any]]:
    """[{"month": "2021-06", "count": n, "days": [{"day": "2021-06-01", "count": k}, ...]}, ...],
    newest month and day first; `undated` (no days) last when there are such files."""
    if not libs:
        return []
    cond, params = _libs_sql(libs)
    sql = (f"SELECT substr(f.taken_at, 1, 10) AS day, COUNT(*) FROM files f WHERE {cond} "
           "GROUP BY day ORDER BY day IS NULL, day DESC")
    months: list[dict[str, Any]] = []
    async with db.execute(sql, params) as cur:
        for day, count in await cur.fetchall():
            month = day[:7] if day else UNDATED
            if not months or months[-1]["month"] != month:
                months.append({"month": month, "count": 0, "days": []})
            months[-1]["count"] += count
            if day:
                months[-1]["days"].append({"day": day, "count": count})
    return months


def check_month(month: str) -> str:
    if month != UNDATED and not MONTH_RE.match(month):
        raise UsageError(f"month must be YYYY-MM or {UNDATED!r}, got {month!r}")
    return month


async def month_items(db: Connection, libs: Sequence[Library], month: str,
                      offset: int = 0, limit: int = MAX_ITEMS) -> list[dict[str, Any]]:
    """The files of one month (or `undated`), newest first, from `offset` on: what a grid needs
    (library, path, name, kind, date, size in pixels, duration)."""
    check_month(month)
    if not 1 <= limit <= MAX_ITEMS:
        raise UsageError(f"limit must be between 1 and {MAX_ITEMS}")
    if not libs:
        return []
    names = {lib.id: lib.name for lib in libs}
    cond, params = _libs_sql(libs)
    if month == UNDATED:
        cond += " AND f.taken_at IS NULL"
        order = "f.rel_path, f.id"
    else:
        year, mon = int(month[:4]), int(month[5:])
        after = f"{year + 1:04d}-01" if mon == 12 else f"{year:04d}-{mon + 1:02d}"
        cond += " AND f.taken_at >= ? AND f.taken_at < ?"
        params += [month, after]
        order = "f.taken_at DESC, f.id DESC"
    sql = (f"SELECT f.library_id, f.rel_path, f.kind, f.taken_at, f.taken_at_offset, f.width, f.height, "
           f"f.orientation, f.rotation, f.duration FROM files f WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?")
    async with db.execute(sql, [*params, limit, offset]) as cur:
        rows = await cur.fetchall()
    return [{
        "library": names[r[0]], "path": r[1], "name": r[1].rpartition("/")[2], "kind": r[2],
        "taken_at": taken_at_iso(r[3], r[4]) if r[3] else None,
        "width": r[5], "height": r[6], "orientation": r[7], "rotation": r[8], "duration": r[9],
    } for r in rows]
