"""SQL of the files table, for the services that read counts and record outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


async def count_unhashed(db: Connection) -> int:
    return await _count(db, "SELECT COUNT(*) FROM files WHERE content_hash IS NULL")


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
