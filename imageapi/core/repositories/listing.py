"""SQL of the listings of files: a library's folders (`GET /photos`), the timeline and memories.
File rows come back as dicts of the files table's columns (and `dir_seen_at`, and `sort_key` where
a listing sorts), which imageapi.core.files describes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imageapi.core.db import Connection
from imageapi.core.repositories import as_dicts
from imageapi.core.repositories.files import DIR_SEEN_SQL, subtree_sql
from imageapi.core.repositories.tags import match_sql

FileDict = dict[str, Any]

# sort name -> SQL key expression
SORT_KEYS: dict[str, str] = {
    "taken_desc": "COALESCE(f.taken_at, '')",
    "taken_asc": "COALESCE(f.taken_at, '')",
    "name_asc": "f.rel_path",
    "name_desc": "f.rel_path",
    "mtime_desc": "f.mtime_ns",
    "mtime_asc": "f.mtime_ns",
}


@dataclass(frozen=True)
class PageQuery:
    library_id: int
    folder: str                       # '' = the root
    recursive: bool
    sort: str                         # a key of SORT_KEYS
    descending: bool
    limit: int                        # rows to read
    tag: tuple[str, str] | None = None  # (key, name) of a tag the content carries
    person: int | None = None         # a person whose face is in the content
    after: tuple[object, int] | None = None  # the (sort key, id) the page starts after


async def photos_page(db: Connection, q: PageQuery) -> list[FileDict]:
    """Files of a folder (or its subtree), filtered, in the sort's order, at most `limit`."""
    key_sql = SORT_KEYS[q.sort]
    where = ["f.library_id = ?"]
    params: list[object] = [q.library_id]
    if q.recursive:
        if q.folder:
            where.append("f.rel_path >= ? AND f.rel_path < ?")
            params += [q.folder + "/", q.folder + "0"]
    else:
        where.append("f.dir = ?")
        params.append(q.folder)
    if q.tag is not None:
        where.append(
            "f.content_hash IN (SELECT ct.content_hash FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
            f"WHERE {match_sql(db)})"
        )
        params += list(q.tag)
    if q.person is not None:
        where.append(
            "f.content_hash IN (SELECT fc.content_hash FROM faces fc WHERE fc.person_id = ?)"
        )
        params.append(q.person)
    if q.after is not None:
        # (key, id) after the cursor, said so that an index on (library, key, id) is read as a range
        # from the cursor on (SQLite does not for the row value `(key, id) < (?, ?)`).
        op = "<" if q.descending else ">"
        key, row_id = q.after
        where.append(f"{key_sql} {op}= ? AND ({key_sql} {op} ? OR f.id {op} ?)")
        params += [key, key, row_id]
    order = "DESC" if q.descending else "ASC"
    sql = (
        f"SELECT f.*, {DIR_SEEN_SQL}, {key_sql} AS sort_key FROM files f WHERE {' AND '.join(where)} "
        f"ORDER BY sort_key {order}, f.id {order} LIMIT ?"
    )
    params.append(q.limit)
    async with db.execute(sql, params) as cur:
        return as_dicts(await cur.fetchall())


async def dir_counts(db: Connection, library_id: int, folder: str) -> list[tuple[str, int]]:
    """(folder, files directly in it) for every folder strictly under `folder` holding files."""
    cond, params = subtree_sql("dir", folder)
    async with db.execute(
        f"SELECT dir, COUNT(*) FROM files WHERE library_id = ? AND {cond} GROUP BY dir", (library_id, *params)
    ) as cur:
        return [(r[0], int(r[1])) for r in await cur.fetchall()]


# -------------------------------------------------------------------------------------- timeline

def _libs_sql(library_ids: Sequence[int]) -> tuple[str, list[object]]:
    return f"f.library_id IN ({','.join('?' * len(library_ids))})", list(library_ids)


async def day_counts(db: Connection, library_ids: Sequence[int]) -> list[tuple[str | None, int]]:
    """(YYYY-MM-DD of taken_at, files) of these libraries, newest day first, undated (None) last."""
    cond, params = _libs_sql(library_ids)
    sql = (f"SELECT substr(f.taken_at, 1, 10) AS day, COUNT(*) FROM files f WHERE {cond} "
           "GROUP BY day ORDER BY day DESC NULLS LAST")
    async with db.execute(sql, params) as cur:
        return [(r[0], int(r[1])) for r in await cur.fetchall()]


@dataclass(frozen=True)
class TimelineFile:
    library_id: int
    rel_path: str
    kind: str
    taken_at: str | None
    taken_at_offset: int | None
    width: int | None
    height: int | None
    orientation: int | None
    rotation: int | None
    duration: float | None
    id: int = 0



async def timeline_files(db: Connection, library_ids: Sequence[int], taken: tuple[str, str] | None,
                         offset: int, limit: int) -> list[TimelineFile]:
    """Files of these libraries taken in [first, before) newest first, or (taken None) the undated
    ones by path; from `offset` on, at most `limit`."""
    cond, params = _libs_sql(library_ids)
    if taken is None:
        cond += " AND f.taken_at IS NULL"
        order = "f.rel_path, f.id"
    else:
        cond += " AND f.taken_at >= ? AND f.taken_at < ?"
        params += list(taken)
        order = "f.taken_at DESC, f.id DESC"
    sql = (f"SELECT f.library_id, f.rel_path, f.kind, f.taken_at, f.taken_at_offset, f.width, f.height, "
           f"f.orientation, f.rotation, f.duration, f.id FROM files f WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?")
    async with db.execute(sql, [*params, limit, offset]) as cur:
        return [TimelineFile(*r) for r in await cur.fetchall()]


# -------------------------------------------------------------------------------------- memories

async def files_on_days(db: Connection, library_id: int, last_year: str, *, month: str | None = None,
                        month_days: Sequence[str] = (), excluded: Sequence[str] = ()) -> list[FileDict]:
    """Dated files of the library but `other`s, taken in `last_year` (YYYY) or before, in the month
    `month` (MM) of any year, or else on one of `month_days` (MM-DD); none under an `excluded`
    folder. By taken_at, then id."""
    if month is not None:
        cond, cond_params = "substr(taken_at, 6, 2) = ?", [month]
    else:
        cond, cond_params = f"substr(taken_at, 6, 5) IN ({','.join('?' * len(month_days))})", list(month_days)
    excl = ""
    excl_params: list[object] = []
    for d in excluded:
        excl += " AND NOT (rel_path = ? OR (rel_path >= ? AND rel_path < ?))"
        excl_params += [d, d + "/", d + "0"]
    sql = (
        f"SELECT f.*, {DIR_SEEN_SQL} FROM files f WHERE library_id = ? AND taken_at IS NOT NULL "
        "AND kind != 'other' "
        f"AND substr(taken_at, 1, 4) <= ? AND {cond}{excl} ORDER BY taken_at, id"
    )
    async with db.execute(sql, [library_id, last_year, *cond_params, *excl_params]) as cur:
        return as_dicts(await cur.fetchall())
