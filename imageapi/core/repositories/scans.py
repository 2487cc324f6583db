"""SQL of the scans table."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.db import Connection


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
