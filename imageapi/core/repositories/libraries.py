"""SQL of the libraries table, for imageapi.core.libraries."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.database import insert
from imageapi.core.db import Connection


@dataclass(frozen=True)
class LibraryRow:
    id: int
    name: str
    root: str      # as stored: the absolute path, as text


async def all_libraries(db: Connection) -> list[LibraryRow]:
    """By name."""
    async with db.execute("SELECT id, name, root FROM libraries ORDER BY name") as cur:
        return [LibraryRow(r[0], r[1], r[2]) for r in await cur.fetchall()]


async def all_ids(db: Connection) -> list[int]:
    """Every library's id, in id order."""
    async with db.execute("SELECT id FROM libraries ORDER BY id") as cur:
        return [r[0] for r in await cur.fetchall()]


async def by_name(db: Connection, name: str) -> LibraryRow | None:
    async with db.execute("SELECT id, name, root FROM libraries WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    return LibraryRow(row[0], row[1], row[2]) if row is not None else None


async def insert_library(db: Connection, name: str, root: str, now: str) -> int:
    """In the caller's transaction."""
    return await insert(db, "INSERT INTO libraries (name, root, created_at) VALUES (?, ?, ?)", (name, root, now))


async def delete_library(db: Connection, library_id: int) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM libraries WHERE id = ?", (library_id,))


async def set_root(db: Connection, library_id: int, root: str) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE libraries SET root = ? WHERE id = ?", (root, library_id))
