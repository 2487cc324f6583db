"""The timeline: every file of one or all libraries, newest first, by month and day.

`buckets` gives the count per day grouped by month (what a client needs to lay out the whole
timeline and its date scrubber before loading any file), `month_items` the files of one month in
the timeline's order. Files without a date come last, as the month `undated`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from imageapi.core import duplicates
from imageapi.core.db import Connection
from imageapi.core.errors import UsageError
from imageapi.core.files import taken_at_iso
from imageapi.core.libraries import Library
from imageapi.core.repositories import listing as repo

UNDATED = "undated"
MONTH_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
MAX_ITEMS = 5000


async def buckets(db: Connection, libs: Sequence[Library], collapse: bool = False) -> list[dict[str, Any]]:
    """[{"month": "2021-06", "count": n, "days": [{"day": "2021-06-01", "count": k}, ...]}, ...],
    newest month and day first; `undated` (no days) last when there are such files. With
    `collapse`, the copies under the top of a duplicates stack are not counted (month_items leaves
    them out)."""
    if not libs:
        return []
    left_out = (await duplicates.collapsed(db, [lib.id for lib in libs])).by_day if collapse else {}
    months: list[dict[str, Any]] = []
    for day, all_files in await repo.day_counts(db, [lib.id for lib in libs]):
        count = all_files - left_out.get(day, 0)
        if count <= 0:
            continue
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


async def month_items(db: Connection, libs: Sequence[Library], month: str, offset: int = 0,
                      limit: int = MAX_ITEMS, stack: bool = False, collapse: bool = False) -> list[dict[str, Any]]:
    """The files of one month (or `undated`), newest first, from `offset` on: what a grid needs
    (library, path, name, kind, date, size in pixels, duration); with `stack`, each item's
    duplicates stack (core/duplicates.stacks) or None. With `collapse` (which implies `stack`) a
    stack shows only its top: the other copies are left out, and `offset` counts what is shown."""
    check_month(month)
    if not 1 <= limit <= MAX_ITEMS:
        raise UsageError(f"limit must be between 1 and {MAX_ITEMS}")
    if not libs:
        return []
    names = {lib.id: lib.name for lib in libs}
    taken = None
    if month != UNDATED:
        year, mon = int(month[:4]), int(month[5:])
        after = f"{year + 1:04d}-01" if mon == 12 else f"{year:04d}-{mon + 1:02d}"
        taken = (month, after)
    lib_ids = [lib.id for lib in libs]
    if collapse:
        stack = True
        left_out = await duplicates.collapsed(db, lib_ids)
        # The month's rows up to the page's end with the ones left out before it: read from the
        # month's start (a month is a few thousand files at most), then skipped.
        extra = left_out.in_month(month if month != UNDATED else None)
        rows = await repo.timeline_files(db, lib_ids, taken, 0, offset + limit + extra)
        rows = [r for r in rows if r.id not in left_out.hidden][offset:offset + limit]
    else:
        rows = await repo.timeline_files(db, lib_ids, taken, offset, limit)
    stacks = await duplicates.stacks(db, lib_ids, [r.id for r in rows]) if stack else None
    items = [item(names[r.library_id], r) for r in rows]
    if stacks is not None:
        for one, r in zip(items, rows, strict=True):
            one["stack"] = stacks.get(r.id)
    return items


def item(library: str, r: repo.TimelineFile) -> dict[str, Any]:
    """A file as a grid shows it (the timeline's items, the places' covers)."""
    return {
        "library": library, "path": r.rel_path, "name": r.rel_path.rpartition("/")[2], "kind": r.kind,
        "taken_at": taken_at_iso(r.taken_at, r.taken_at_offset) if r.taken_at else None,
        "width": r.width, "height": r.height, "orientation": r.orientation, "rotation": r.rotation,
        "duration": r.duration,
    }
