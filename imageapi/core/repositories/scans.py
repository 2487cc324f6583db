"""SQL of the scans table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imageapi.core.database import insert
from imageapi.core.db import Connection
from imageapi.core.repositories.files import fetch_plain


@dataclass(frozen=True)
class LastScan:
    """The newest scan of one library in one mode."""
    mode: str
    subtree: str
    started_at: str
    finished_at: str | None
    status: str
    scanned: int
    added: int
    changed: int
    removed: int
    moved: int
    errors: int
    error: str | None
    library: str


async def last_scans(db: Connection) -> list[LastScan]:
    """The newest scan per library and mode, by library name and mode."""
    async with db.execute(
        "SELECT l.name, s.mode, s.subtree, s.started_at, s.finished_at, s.status, s.scanned, s.added, "
        "s.changed, s.removed, s.moved, s.errors, s.error FROM scans s JOIN libraries l ON l.id = s.library_id "
        "WHERE s.id IN (SELECT MAX(id) FROM scans GROUP BY library_id, mode) ORDER BY l.name, s.mode"
    ) as cur:
        return [LastScan(mode=r[1], subtree=r[2], started_at=r[3], finished_at=r[4], status=r[5], scanned=r[6],
                         added=r[7], changed=r[8], removed=r[9], moved=r[10], errors=r[11], error=r[12],
                         library=r[0]) for r in await cur.fetchall()]


async def mark_interrupted(db: Connection, library_id: int, now: str) -> None:
    """The library's scans left 'running' end as interrupted. In the caller's transaction."""
    await db.execute("UPDATE scans SET status = 'interrupted', finished_at = ? WHERE status = 'running' "
                     "AND library_id = ?", (now, library_id))


async def insert_scan(db: Connection, library_id: int, mode: str, subtree: str, started_at: str) -> int:
    """The new scan's id. In the caller's transaction if it holds one."""
    return await insert(db, "INSERT INTO scans (library_id, mode, subtree, started_at) VALUES (?, ?, ?, ?)",
                        (library_id, mode, subtree, started_at))


async def finish_scan(db: Connection, scan_id: int | None, counts: Mapping[str, object], status: str,
                      finished_at: str, error: str | None) -> None:
    """The scan's counts (column -> value), status and end. In the caller's transaction."""
    sets = ", ".join(f"{k} = ?" for k in counts)
    await db.execute(f"UPDATE scans SET {sets}, status = ?, finished_at = ?, error = ? WHERE id = ?",
                     (*counts.values(), status, finished_at, error, scan_id))


# ----------------------------------------------------------------------------- folders (dirs)

async def known_dirs(db: Connection, library_id: int) -> list[tuple[Any, ...]]:
    """(rel_path, mtime_ns, fingerprint) of the library's folders, as the last scan that listed
    them left them."""
    return await fetch_plain(db, "SELECT rel_path, mtime_ns, fingerprint FROM dirs WHERE library_id = ?",
                             (library_id,))


async def delete_dirs_under(db: Connection, library_id: int, subtree: str) -> None:
    """The folders under `subtree` and `subtree` itself ('': every folder of the library). In the
    caller's transaction."""
    if not subtree:
        await db.execute("DELETE FROM dirs WHERE library_id = ?", (library_id,))
        return
    await db.execute("DELETE FROM dirs WHERE library_id = ? AND rel_path >= ? AND rel_path < ?",
                     (library_id, subtree + "/", subtree + "0"))
    await db.execute("DELETE FROM dirs WHERE library_id = ? AND rel_path = ?", (library_id, subtree))


async def delete_dirs(db: Connection, rows: Sequence[Sequence[object]]) -> None:
    """(library id, rel_path) rows, one batch. In the caller's transaction."""
    await db.executemany("DELETE FROM dirs WHERE library_id = ? AND rel_path = ?", rows)


async def upsert_dirs(db: Connection, rows: Sequence[Sequence[object]]) -> None:
    """(library id, rel_path, mtime_ns, seen_at, fingerprint) rows, one batch. In the caller's
    transaction."""
    await db.executemany(
        "INSERT INTO dirs (library_id, rel_path, mtime_ns, seen_at, fingerprint) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (library_id, rel_path) DO UPDATE SET mtime_ns = excluded.mtime_ns, "
        "seen_at = excluded.seen_at, fingerprint = excluded.fingerprint", rows)
