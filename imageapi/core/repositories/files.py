"""SQL of the files table, for the services that read counts and record outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from imageapi.core.db import Connection
from imageapi.core.repositories import as_dicts


async def _count(db: Connection, sql: str, params: tuple[object, ...] = ()) -> int:
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


async def count_by_library(db: Connection) -> dict[int, int]:
    """library id -> indexed files (libraries with none are missing)."""
    async with db.execute("SELECT library_id, COUNT(*) FROM files GROUP BY library_id") as cur:
        return {int(lib_id): int(n) for lib_id, n in await cur.fetchall()}


async def count_in_library(db: Connection, library_id: int) -> int:
    return await _count(db, "SELECT COUNT(*) FROM files WHERE library_id = ?", (library_id,))


async def count_all(db: Connection) -> int:
    return await _count(db, "SELECT COUNT(*) FROM files")


async def count_unhashed(db: Connection, library_id: int | None = None) -> int:
    """Files with no content hash, in one library or in all."""
    if library_id is None:
        return await _count(db, "SELECT COUNT(*) FROM files WHERE content_hash IS NULL")
    return await _count(db, "SELECT COUNT(*) FROM files WHERE content_hash IS NULL AND library_id = ?", (library_id,))


async def count_thumbs_pending(db: Connection) -> int:
    return await _count(db, "SELECT COUNT(*) FROM files WHERE thumb_state IN ('pending', 'failed')")


async def count_with_error(db: Connection) -> int:
    return await _count(db, "SELECT COUNT(*) FROM files WHERE error IS NOT NULL")


async def set_missing_hashes(db: Connection, digests: list[tuple[str, int]]) -> None:
    """(content hash, file id) pairs; a row hashed meanwhile keeps its hash. In the caller's
    transaction."""
    await db.executemany("UPDATE files SET content_hash = ? WHERE id = ? AND content_hash IS NULL", digests)


async def set_thumb_state(db: Connection, file_id: int, state: str, reason: str | None, tool: str | None) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE files SET thumb_state = ?, thumb_reason = ?, thumb_tool = ? WHERE id = ?",
                     (state, reason, tool, file_id))


async def library_name(db: Connection, library_id: int) -> str | None:
    async with db.execute("SELECT name FROM libraries WHERE id = ?", (library_id,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row is not None else None


# ------------------------------------------------------------------------- hash and thumb jobs

# (id, library name, root, rel_path, kind, thumb_state, duration, thumb_tool)
ThumbRow = tuple[int, str, str, str, str, str, float | None, str | None]
# (id, library name, root, rel_path, duration)
RetryRow = tuple[int, str, str, str, float | None]

async def unhashed_rows(db: Connection, limit: int | None = None) -> list[tuple[int, str, str]]:
    """(id, library root, rel_path) of the files with no content hash, in id order, those whose
    hashing already failed last (so a block of unreadable files at low ids cannot starve the rest
    of the backlog tick after tick); at most `limit`."""
    sql = (
        "SELECT f.id, l.root, f.rel_path FROM files f JOIN libraries l ON l.id = f.library_id "
        "WHERE f.content_hash IS NULL ORDER BY CASE WHEN f.error LIKE 'hash:%' THEN 1 ELSE 0 END, f.id"
    )
    params: tuple[object, ...] = ()
    if limit is not None:
        sql += " LIMIT ?"
        params = (limit,)
    async with db.execute(sql, params) as cur:
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


async def record_hashes(db: Connection, hashed: Sequence[Sequence[object]],
                        failed: Sequence[Sequence[object]]) -> None:
    """(content hash, id) rows hashed (their error cleared) and (error, id) rows that failed, each
    one batch. In the caller's transaction."""
    await db.executemany("UPDATE files SET content_hash = ?, error = NULL WHERE id = ?", hashed)
    await db.executemany("UPDATE files SET error = ? WHERE id = ?", failed)


async def unsupported_kinds_with_tools(db: Connection, kinds: Sequence[str]) -> list[str]:
    """Which of `kinds` have files marked unsupported with the tools recorded."""
    async with db.execute(
        f"SELECT DISTINCT kind FROM files WHERE thumb_state = 'unsupported' "
        f"AND kind IN ({', '.join('?' * len(kinds))}) AND thumb_tool IS NOT NULL", tuple(kinds),
    ) as cur:
        return [row[0] for row in await cur.fetchall()]


async def thumb_rows(db: Connection, library_id: int | None = None) -> AsyncIterator[ThumbRow]:
    """(id, library name, root, rel_path, kind, thumb_state, duration, thumb_tool) of every file,
    or one library's, in id order, streamed."""
    sql = (
        "SELECT f.id, l.name, l.root, f.rel_path, f.kind, f.thumb_state, f.duration, f.thumb_tool "
        "FROM files f JOIN libraries l ON l.id = f.library_id"
    )
    params: tuple[object, ...] = ()
    if library_id is not None:
        sql += " WHERE f.library_id = ?"
        params = (library_id,)
    sql += " ORDER BY f.id"
    async with db.execute(sql, params) as cur:
        async for r in cur:
            yield (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


async def unsupported_with_other_tools(db: Connection, kind: str, tools: str | None,
                                       library_ids: Sequence[int] | None = None) -> AsyncIterator[RetryRow]:
    """(id, library name, root, rel_path, duration) of the files of `kind` marked unsupported with
    other tools recorded than `tools`, in id order, streamed; in `library_ids` only, when given."""
    only = ""
    if library_ids is not None:
        only = " AND f.library_id IN (" + ", ".join(str(int(i)) for i in library_ids) + ")"
    async with db.execute(
        "SELECT f.id, l.name, l.root, f.rel_path, f.duration FROM files f "
        "JOIN libraries l ON l.id = f.library_id "
        "WHERE f.thumb_state = 'unsupported' AND f.kind = ? AND f.thumb_tool IS NOT NULL "
        "AND f.thumb_tool <> COALESCE(?, '')" + only + " ORDER BY f.id", (kind, tools),
    ) as cur:
        async for r in cur:
            yield (r[0], r[1], r[2], r[3], r[4])


async def record_thumb_states(db: Connection, updates: Sequence[Sequence[object]]) -> None:
    """(thumb_state, thumb_reason, thumb_tool, id) rows, one batch. In the caller's transaction."""
    await db.executemany("UPDATE files SET thumb_state = ?, thumb_reason = ?, thumb_tool = ? WHERE id = ?", updates)


# ------------------------------------------------------------------------------------- the scan
# Plain tuples (row_factory None on SQLite): much cheaper than Row objects for 100,000 rows.

def _under(subtree: str) -> tuple[str, tuple[str, ...]]:
    """` AND rel_path` strictly under `subtree` ('/' + 1 == '0': every path that starts with
    'subtree/'), nothing for the whole library; with its parameters."""
    if not subtree:
        return "", ()
    return " AND rel_path >= ? AND rel_path < ?", (subtree + "/", subtree + "0")


async def fetch_plain(db: Connection, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    async with db.execute(sql, params) as cur:
        cur.row_factory = None
        return cast(list[tuple[Any, ...]], await cur.fetchall())


_KNOWN = "SELECT rel_path, id, size, mtime_ns, content_hash FROM files WHERE library_id = ?"


async def known_in_dir(db: Connection, library_id: int, folder: str) -> list[tuple[Any, ...]]:
    """(rel_path, id, size, mtime_ns, content_hash) of the files right in `folder`."""
    return await fetch_plain(db, _KNOWN + " AND dir = ?", (library_id, folder))


async def known_under(db: Connection, library_id: int, subtree: str) -> list[tuple[Any, ...]]:
    """(rel_path, id, size, mtime_ns, content_hash) of the files under `subtree` ('': all)."""
    where, params = _under(subtree)
    return await fetch_plain(db, _KNOWN + where, (library_id, *params))


async def rows_under(db: Connection, library_id: int, folder: str) -> list[tuple[Any, ...]]:
    """(id, rel_path, size, mtime_ns, content_hash) of the files under `folder`."""
    where, params = _under(folder)
    async with db.execute("SELECT id, rel_path, size, mtime_ns, content_hash FROM files WHERE library_id = ?" + where,
                          (library_id, *params)) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def dirs_with_rows(db: Connection, library_id: int, subtree: str) -> set[str]:
    """Every folder that holds file rows (within subtree): the index on (library_id, dir) answers it."""
    sql = "SELECT DISTINCT dir FROM files WHERE library_id = ?"
    params: tuple[object, ...] = (library_id,)
    if subtree:
        sql += " AND (dir = ? OR (dir >= ? AND dir < ?))"
        params += (subtree, subtree + "/", subtree + "0")
    return {r[0] for r in await fetch_plain(db, sql, params)}


async def delete_files(db: Connection, ids: Sequence[Sequence[object]]) -> None:
    """(id,) rows, one batch. In the caller's transaction."""
    await db.executemany("DELETE FROM files WHERE id = ?", ids)


# The folder's seen_at (migration 6) beside a file row: `SELECT f.*, {DIR_SEEN_SQL} FROM files f ...`.
DIR_SEEN_SQL = (
    "(SELECT d.seen_at FROM dirs d WHERE d.library_id = f.library_id AND d.rel_path = f.dir) AS dir_seen_at"
)


def subtree_sql(column: str, folder: str) -> tuple[str, tuple[str, ...]]:
    """A condition: rows of `column` strictly under `folder` ('/' + 1 == '0', so the range is the
    prefix); with its parameters."""
    if not folder:
        return f"{column} != ''", ()
    return f"{column} >= ? AND {column} < ?", (folder + "/", folder + "0")


async def file_row(db: Connection, library_id: int, rel_path: str) -> dict[str, Any] | None:
    """The file's row (every column, and its folder's `dir_seen_at`)."""
    async with db.execute(
        f"SELECT f.*, {DIR_SEEN_SQL} FROM files f WHERE f.library_id = ? AND f.rel_path = ?", (library_id, rel_path)
    ) as cur:
        row = await cur.fetchone()
    return as_dicts([row])[0] if row is not None else None


# ------------------------------------------------------------------------------- scan results

def file_row_writes(columns: tuple[str, ...], updated: tuple[str, ...]) -> tuple[str, str]:
    """The upsert of a row (`columns` in order; `updated` replaced on a path already indexed) and
    the move of a row (`rel_path`, then `updated`, then the id)."""
    upsert = (
        f"INSERT INTO files ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        "ON CONFLICT (library_id, rel_path) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in updated)
    )
    # A moved file keeps its row (and id): only its path and what was read from it change.
    move = "UPDATE files SET rel_path = ?, " + ", ".join(f"{c} = ?" for c in updated) + " WHERE id = ?"
    return upsert, move


async def write_file_rows(db: Connection, statements: tuple[str, str], upserts: Sequence[Sequence[object]],
                          moves: Sequence[Sequence[object]]) -> None:
    """The moves, then the upserts, each one batch (`statements`: file_row_writes'). In the
    caller's transaction."""
    upsert_sql, move_sql = statements
    if moves:
        await db.executemany(move_sql, moves)
    if upserts:
        await db.executemany(upsert_sql, upserts)
