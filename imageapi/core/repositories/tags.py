"""SQL of tags and their links to content, for imageapi.core.tags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imageapi.core.database import insert
from imageapi.core.db import Connection
from imageapi.core.repositories import nocase


def match_sql(db: Connection, table: str = "t") -> str:
    """A condition on `tags {table}`: the tag of this key, or a row written without a key (by hand,
    or by a tool that predates keys) of this name, case aside. Parameters: key, name."""
    return f"({table}.key = ? OR ({table}.key IS NULL AND {nocase(db, table + '.name')} = {nocase(db, '?')}))"

IN_CHUNK = 500  # values of one `IN (...)`


@dataclass(frozen=True)
class TagCount:
    name: str
    count: int   # indexed files carrying it


async def counts(db: Connection) -> list[TagCount]:
    """Every tag with the number of indexed files carrying it, by key."""
    sql = (
        "SELECT t.name, COUNT(f.id) FROM tags t "
        "LEFT JOIN content_tags ct ON ct.tag_id = t.id "
        "LEFT JOIN files f ON f.content_hash = ct.content_hash "
        "GROUP BY t.id ORDER BY COALESCE(t.key, t.name), t.id"
    )
    async with db.execute(sql) as cur:
        return [TagCount(r[0], r[1]) for r in await cur.fetchall()]


async def names_of(db: Connection, hashes: Sequence[str]) -> list[tuple[str, str]]:
    """(content hash, tag name) pairs of these contents (at most IN_CHUNK), tags by key."""
    async with db.execute(
        f"SELECT ct.content_hash, t.name FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
        f"WHERE ct.content_hash IN ({','.join('?' * len(hashes))}) ORDER BY COALESCE(t.key, t.name), t.id",
        list(hashes),
    ) as cur:
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def by_key(db: Connection, key: str, name: str) -> int | None:
    """The id of the tag with this key (or, for a row without one, this name)."""
    async with db.execute(f"SELECT id FROM tags WHERE {match_sql(db, 'tags')} ORDER BY key IS NULL, id LIMIT 1",
                          (key, name)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def insert_tag(db: Connection, name: str, key: str, now: str) -> int:
    """In the caller's transaction."""
    return await insert(db, "INSERT INTO tags (name, key, created_at) VALUES (?, ?, ?)", (name, key, now))


async def link(db: Connection, content_hash: str, tag_id: int, now: str) -> int:
    """1 when the link is new, 0 when it was there. In the caller's transaction."""
    cur = await db.execute(
        "INSERT INTO content_tags (content_hash, tag_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (content_hash, tag_id, now),
    )
    return max(int(cur.rowcount), 0)


async def unlink(db: Connection, content_hash: str, tag_id: int) -> int:
    """1 when the link was there. In the caller's transaction."""
    cur = await db.execute("DELETE FROM content_tags WHERE content_hash = ? AND tag_id = ?", (content_hash, tag_id))
    return max(int(cur.rowcount), 0)


async def delete_if_unused(db: Connection, tag_id: int) -> None:
    """Delete the tag when no content carries it. In the caller's transaction."""
    await db.execute(
        "DELETE FROM tags WHERE id = ? AND NOT EXISTS (SELECT 1 FROM content_tags WHERE tag_id = ?)",
        (tag_id, tag_id),
    )
