"""SQL of the video preview and HLS state kept on file rows, for imageapi.core.previews and
imageapi.core.hls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imageapi.core.db import Connection, dialect
from imageapi.core.repositories import as_dicts
from imageapi.core.repositories.files import subtree_sql

# A video's previews are due when the version they were made (or failed) for is not the row's
# current one. The same expressions as the partial index files_preview_due (migration 4, and its
# PostgreSQL twin), so that the database answers from that index.
_KEY_SQL = {
    "sqlite": "size || ':' || mtime_ns || ':' || rel_path",
    "postgresql": "(size::text || ':' || mtime_ns::text || ':' || rel_path)",
}
DUE_SQL = {
    "sqlite": f"kind = 'video' AND preview_source IS NOT {_KEY_SQL['sqlite']}",
    "postgresql": f"kind = 'video' AND preview_source IS DISTINCT FROM {_KEY_SQL['postgresql']}",
}


def _key_sql(db: Connection) -> str:
    return _KEY_SQL[dialect(db)]


def _libs_sql(library_ids: Sequence[int] | None, column: str = "f.library_id") -> tuple[str, list[object]]:
    if not library_ids:
        return "", []
    return f" AND {column} IN ({', '.join('?' * len(library_ids))})", list(library_ids)


@dataclass(frozen=True)
class DueVideo:
    id: int
    rel_path: str
    size: int
    mtime_ns: int
    duration: float | None
    library_id: int
    library: str
    root: str


async def due_videos(db: Connection, library_ids: Sequence[int] | None, after_id: int, limit: int) -> list[DueVideo]:
    """Videos whose previews are missing or stale, by id, after `after_id` (of these libraries
    when given)."""
    libs, params = _libs_sql(library_ids, "+f.library_id")  # '+': walk the due index, not all videos
    sql = (f"SELECT f.id, f.rel_path, f.size, f.mtime_ns, f.duration, l.id AS lib_id, l.name, l.root "
           f"FROM files f JOIN libraries l ON l.id = f.library_id "
           f"WHERE {DUE_SQL[dialect(db)]} AND f.id > ?{libs} ORDER BY f.id LIMIT ?")  # its columns are files'
    async with db.execute(sql, (after_id, *params, limit)) as cur:
        return [DueVideo(*r) for r in await cur.fetchall()]


async def preview_counts(db: Connection, library_ids: Sequence[int] | None) -> tuple[int, int, int]:
    """(videos, previews done for the current version, failed for it)."""
    libs, params = _libs_sql(library_ids)
    key = _key_sql(db)
    sql = (f"SELECT COUNT(*), "
           f"SUM(CASE WHEN f.preview_state = 'done' AND f.preview_source = {key} THEN 1 ELSE 0 END), "
           f"SUM(CASE WHEN f.preview_state = 'failed' AND f.preview_source = {key} THEN 1 ELSE 0 END) "
           f"FROM files f WHERE f.kind = 'video'{libs}")
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    videos, done, failed = (int(v or 0) for v in (row or (0, 0, 0)))
    return videos, done, failed


async def set_preview_done(db: Connection, file_id: int, key: str) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE files SET preview_state = 'done', preview_source = ?, preview_error = NULL "
                     "WHERE id = ?", (key, file_id))


async def set_preview_failed(db: Connection, file_id: int, key: str, error: str | None) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE files SET preview_state = 'failed', preview_source = ?, preview_error = ? "
                     "WHERE id = ?", (key, error, file_id))


async def clear_preview(db: Connection, file_id: int) -> None:
    """Due again. In the caller's transaction."""
    await db.execute("UPDATE files SET preview_state = NULL, preview_source = NULL WHERE id = ?", (file_id,))


async def clear_failed_previews(db: Connection, library_ids: Sequence[int] | None) -> int:
    """Failed videos due again; how many. In the caller's transaction."""
    libs, params = _libs_sql(library_ids, "library_id")
    cur = await db.execute(f"UPDATE files SET preview_state = NULL, preview_source = NULL, preview_error = NULL "
                           f"WHERE kind = 'video' AND preview_state = 'failed'{libs}", params)
    return int(cur.rowcount)


async def wall_page(db: Connection, library_id: int, *, folder: str, recursive: bool,
                    after: tuple[object, int] | None, limit: int) -> list[dict[str, Any]]:
    """Videos of a folder (or its subtree), newest first (taken-at, '' for none, then id), after the
    (key, id) given; each row has the files columns, `sort_key` and `current_key` (the version its
    previews must be for)."""
    key_sql = "COALESCE(f.taken_at, '')"
    where = ["f.library_id = ?", "f.kind = 'video'"]
    params: list[object] = [library_id]
    if recursive:
        if folder:
            cond, extra = subtree_sql("f.rel_path", folder)
            where.append(cond)
            params += extra
    else:
        where.append("f.dir = ?")
        params.append(folder)
    if after is not None:
        key, row_id = after
        # Written so that SQLite walks files_videos_by_taken from the cursor on.
        where.append(f"{key_sql} <= ? AND ({key_sql} < ? OR f.id < ?)")
        params += [key, key, row_id]
    sql = (f"SELECT f.*, {key_sql} AS sort_key, {_key_sql(db)} AS current_key FROM files f "
           f"WHERE {' AND '.join(where)} ORDER BY {key_sql} DESC, f.id DESC LIMIT ?")
    params.append(limit)
    async with db.execute(sql, params) as cur:
        return as_dicts(await cur.fetchall())


# ------------------------------------------------------------------------------------------- HLS

async def set_hls_failure(db: Connection, library: str, rel_path: str, key: str, error: str | None,
                          code: str | None) -> None:
    """In the caller's transaction."""
    await db.execute(
        "UPDATE files SET hls_source = ?, hls_error = ?, hls_error_code = ? "
        "WHERE library_id = (SELECT id FROM libraries WHERE name = ?) AND rel_path = ?",
        (key, error, code, library, rel_path))


async def clear_hls_failures(db: Connection, file_ids: Sequence[int]) -> None:
    """One batch. In the caller's transaction."""
    await db.executemany("UPDATE files SET hls_source = NULL, hls_error = NULL, hls_error_code = NULL WHERE id = ?",
                         [(i,) for i in file_ids])


@dataclass(frozen=True)
class VideoRow:
    id: int
    rel_path: str
    hls_source: str | None
    hls_error: str | None
    hls_error_code: str | None


async def videos(db: Connection, library_id: int, under: str = "") -> list[VideoRow]:
    """The library's videos by path: all, or the one at `under` and those in its subtree."""
    where, params = "", []
    if under:
        cond, extra = subtree_sql("rel_path", under)
        where, params = f" AND (rel_path = ? OR ({cond}))", [under, *extra]
    async with db.execute(
        f"SELECT id, rel_path, hls_source, hls_error, hls_error_code FROM files "
        f"WHERE library_id = ? AND kind = 'video'{where} ORDER BY rel_path", (library_id, *params)
    ) as cur:
        return [VideoRow(*r) for r in await cur.fetchall()]
