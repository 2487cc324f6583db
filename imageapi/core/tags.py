"""Tags. They belong to content (the blake3 hash), not to paths: a moved or renamed file keeps its
tags, and identical copies share them. Names are case-insensitive (the column is NOCASE) and
keep the spelling they were first created with."""

from __future__ import annotations

from collections.abc import Iterable

import aiosqlite

from imageapi.core.db import Transaction, utcnow
from imageapi.core.errors import UsageError

MAX_TAG_CHARS = 100


def clean_tag(name: object) -> str:
    if not isinstance(name, str):
        raise UsageError("a tag must be a string")
    tag = " ".join(name.split())  # trim and collapse inner whitespace
    if not tag:
        raise UsageError("a tag must not be empty")
    if len(tag) > MAX_TAG_CHARS:
        raise UsageError(f"a tag must be at most {MAX_TAG_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in tag):
        raise UsageError("a tag must not contain control characters")
    return tag


async def list_tags(db: aiosqlite.Connection) -> list[dict[str, object]]:
    """Every tag with the number of indexed files carrying it, by name."""
    sql = (
        "SELECT t.name, COUNT(f.id) FROM tags t "
        "LEFT JOIN content_tags ct ON ct.tag_id = t.id "
        "LEFT JOIN files f ON f.content_hash = ct.content_hash "
        "GROUP BY t.id ORDER BY t.name COLLATE NOCASE"
    )
    async with db.execute(sql) as cur:
        return [{"name": r[0], "count": r[1]} for r in await cur.fetchall()]


async def tags_for_hashes(db: aiosqlite.Connection, hashes: Iterable[str]) -> dict[str, list[str]]:
    wanted = sorted(set(hashes))
    out: dict[str, list[str]] = {h: [] for h in wanted}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        async with db.execute(
            f"SELECT ct.content_hash, t.name FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
            f"WHERE ct.content_hash IN ({','.join('?' * len(chunk))}) ORDER BY t.name COLLATE NOCASE",
            chunk,
        ) as cur:
            for h, name in await cur.fetchall():
                out[h].append(name)
    return out


async def add_tags(db: aiosqlite.Connection, hashes: Iterable[str], names: Iterable[str]) -> int:
    """Tag every content with every name, in one transaction; returns how many pairs were new."""
    tags = [clean_tag(n) for n in names]
    hash_list = sorted(set(hashes))
    now = utcnow()
    added = 0
    async with Transaction(db):
        for tag in tags:
            await db.execute("INSERT OR IGNORE INTO tags (name, created_at) VALUES (?, ?)", (tag, now))
            async with db.execute("SELECT id FROM tags WHERE name = ?", (tag,)) as cur:
                row = await cur.fetchone()
            assert row is not None
            for h in hash_list:
                cur2 = await db.execute(
                    "INSERT OR IGNORE INTO content_tags (content_hash, tag_id, created_at) VALUES (?, ?, ?)",
                    (h, row[0], now),
                )
                added += max(cur2.rowcount, 0)
    return added


async def remove_tags(db: aiosqlite.Connection, hashes: Iterable[str], names: Iterable[str]) -> int:
    """Untag; a tag left on no content is deleted. Returns how many pairs were removed."""
    tags = [clean_tag(n) for n in names]
    hash_list = sorted(set(hashes))
    removed = 0
    async with Transaction(db):
        for tag in tags:
            async with db.execute("SELECT id FROM tags WHERE name = ?", (tag,)) as cur:
                row = await cur.fetchone()
            if row is None:
                continue
            for h in hash_list:
                cur2 = await db.execute(
                    "DELETE FROM content_tags WHERE content_hash = ? AND tag_id = ?", (h, row[0])
                )
                removed += max(cur2.rowcount, 0)
            await db.execute(
                "DELETE FROM tags WHERE id = ? AND NOT EXISTS (SELECT 1 FROM content_tags WHERE tag_id = ?)",
                (row[0], row[0]),
            )
    return removed
