"""SQL of `imageapi worker`'s backlogs: which rows of `files f` are due per kind (the same rules
as the one-shot commands), and the rows a claimed batch is worked from."""

from __future__ import annotations

from imageapi.core.db import Connection, dialect
from imageapi.core.repositories import duplicates as duplicates_repo
from imageapi.core.repositories import faces as faces_repo
from imageapi.core.repositories import places as places_repo
from imageapi.core.repositories import previews as previews_repo

# kind -> the condition on `files f` of a due row (`?`: the parameters due_params gives).
_DUE = {
    "thumbs": "f.thumb_state = 'pending'",
    # A failed hash is tried again by `imageapi hash backfill`, not in a loop by the workers.
    "hash": "f.content_hash IS NULL AND (f.error IS NULL OR f.error NOT LIKE 'hash:%')",
    "phash": duplicates_repo.DUE_WHERE,
}

_ROWS = {
    "thumbs": "SELECT f.id, l.name, l.root, f.rel_path, f.kind, f.duration FROM files f "
              "JOIN libraries l ON l.id = f.library_id WHERE f.id IN ({ids}) ORDER BY f.id",
    "hash": "SELECT f.id, l.name, l.root, f.rel_path FROM files f JOIN libraries l ON l.id = f.library_id "
            "WHERE f.id IN ({ids}) ORDER BY f.id",
    "faces": "SELECT f.id, f.library_id, f.content_hash, f.kind, f.rel_path, l.name, l.root FROM files f "
             "JOIN libraries l ON l.id = f.library_id WHERE f.id IN ({ids}) AND f.kind IN {kinds} ORDER BY f.id",
    "previews": "SELECT f.id, f.rel_path, f.size, f.mtime_ns, f.duration, l.id, l.name, l.root FROM files f "
                "JOIN libraries l ON l.id = f.library_id WHERE f.id IN ({ids}) ORDER BY f.id",
    "hls": "SELECT f.id, f.rel_path, f.size, f.mtime_ns, l.id, l.name, l.root FROM files f "
           "JOIN libraries l ON l.id = f.library_id WHERE f.id IN ({ids}) ORDER BY f.id",
}


async def set_hls_outcome(db: Connection, file_id: int, key: str, error: str | None, code: str | None) -> None:
    """The playlist of version `key` was made (no error) or cannot be. In the caller's transaction."""
    await db.execute("UPDATE files SET hls_source = ?, hls_error = ?, hls_error_code = ? WHERE id = ?",
                     (key, error, code, file_id))


# A video's HLS playlist is due when no outcome is recorded for the row's version (migration 17's
# partial index, word for word per database).
_HLS_DUE = {
    "sqlite": "f.kind = 'video' AND f.hls_source IS NOT f.size || '-' || f.mtime_ns",
    "postgresql": "f.kind = 'video' AND f.hls_source IS DISTINCT FROM (f.size::text || '-' || f.mtime_ns::text)",
}


def due_where(db: Connection, kind: str, face_kinds: tuple[str, ...]) -> str:
    if kind == "places":
        return places_repo.DUE_SQL
    if kind == "hls":
        return _HLS_DUE[dialect(db)]
    if kind == "faces":
        return faces_repo.unscanned_where(face_kinds)
    if kind == "previews":
        return previews_repo.DUE_SQL[dialect(db)]
    return _DUE[kind]


async def rows(db: Connection, kind: str, ids: list[int], face_kinds: tuple[str, ...] = ()) -> list[tuple]:
    """The claimed rows `ids` with what working them needs (columns as _ROWS says), by id."""
    sql = _ROWS[kind].format(ids=", ".join("?" * len(ids)), kinds=faces_repo.kinds_sql(face_kinds))
    async with db.execute(sql, ids) as cur:
        return [tuple(r) for r in await cur.fetchall()]
