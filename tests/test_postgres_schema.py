"""The PostgreSQL schema (imageapi.core.postgres.migrations) against the SQLite one, on a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imageapi.core.db import connect_sync
from imageapi.core.migrations import MIGRATIONS
from imageapi.core.postgres import migrations as pgm


def sqlite_columns(path: Path) -> dict[str, list[str]]:
    conn = connect_sync(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE 'search_fts%'")]  # FTS5's tables: PostgreSQL's index is a GIN
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


async def pg_columns(url: str, use_vector: bool | None = None) -> dict[str, list[str]]:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        await pgm.apply_migrations(conn, use_vector=use_vector)
        assert await pgm.apply_migrations(conn) == []  # recorded: a second run applies nothing
        rows = await conn.fetch("SELECT table_name, column_name FROM information_schema.columns "
                                "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["table_name"], []).append(r["column_name"])
        return out
    finally:
        await conn.close()


def test_every_sqlite_migration_has_a_postgres_twin() -> None:
    sqlite_versions = {m.version: m.name for m in MIGRATIONS}
    pg_versions = {m.version: m.name for m in pgm.PG_MIGRATIONS}
    assert sqlite_versions == pg_versions, "a migration without its PostgreSQL twin (imageapi/core/postgres)"


@pytest.mark.parametrize("use_vector", [None, False], ids=["detected", "arrays"])
def test_same_tables_and_columns(tmp_path: Path, pg_url: str, use_vector: bool | None) -> None:
    sqlite = sqlite_columns(tmp_path / "x.db")
    pg = asyncio.run(pg_columns(pg_url, use_vector))
    assert set(sqlite) == set(pg)
    for table, columns in sqlite.items():
        assert sorted(columns) == sorted(pg[table]), table


def test_postgres_forms_of_sqlite_idioms(pg_url: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(pg_url, timeout=30)
        try:
            await pgm.apply_migrations(conn, use_vector=False)
            now = "2024-01-01T00:00:00"
            # NOCASE: ASCII case folded, as in SQLite; other scripts not (SQLite's NOCASE neither).
            await conn.execute("INSERT INTO persons (name, created_at) VALUES ('Ann', $1), ('Éva', $1)", now)
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO persons (name, created_at) VALUES ('ANN', $1)", now)
            await conn.execute("INSERT INTO persons (name, created_at) VALUES ('éva', $1)", now)
            # Identity ids are never reused, even after the highest is deleted.
            top = await conn.fetchval("SELECT max(id) FROM persons")
            await conn.execute("DELETE FROM persons WHERE id = $1", top)
            again = await conn.fetchval("INSERT INTO persons (name, created_at) VALUES ('Bo', $1) RETURNING id", now)
            assert again > top
            # Byte order for text, whatever the database's locale: the folder-range trick works.
            await conn.execute("INSERT INTO libraries (id, name, root, created_at) VALUES (1, 'm', '/', $1)", now)
            names = ["a/b", "a0", "a/Z", "a-b", "a/é", "A/x", "a/\U0001f600"]
            for i, name in enumerate(names):
                await conn.execute(
                    "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, first_seen, last_seen) "
                    "VALUES (1, $1, '', 'image', $2, 9223372036854775807, $3, $3)", name, i, now)
            got = [r[0] for r in await conn.fetch(
                "SELECT rel_path FROM files WHERE rel_path >= 'a/' AND rel_path < 'a0' ORDER BY rel_path")]
            assert got == sorted(n for n in names if "a/" <= n < "a0")  # Python compares code points
            assert got == ["a/Z", "a/b", "a/é", "a/\U0001f600"]
        finally:
            await conn.close()

    asyncio.run(go())


def test_migration_11_merges_tags_in_postgres(pg_url: str) -> None:
    """Tags written before migration 11 that are one tag by its rule are merged, links kept."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(pg_url, timeout=30)
        try:
            await pgm.apply_migrations(conn, [m for m in pgm.PG_MIGRATIONS if m.version < 11], use_vector=False)
            now = "2024-01-01T00:00:00"
            for name in ("Straße", "STRASSE", "e\u0301té", "Other"):
                await conn.execute("INSERT INTO tags (name, created_at) VALUES ($1, $2)", name, now)
            ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM tags")}
            await conn.executemany("INSERT INTO content_tags VALUES ($1, $2, $3)",
                                   [("h1", ids["Straße"], now), ("h2", ids["STRASSE"], now),
                                    ("h1", ids["STRASSE"], now), ("h3", ids["e\u0301té"], now)])
            assert await pgm.apply_migrations(conn, [m for m in pgm.PG_MIGRATIONS if m.version <= 11]) == [11]
            tags = {r["name"]: r["key"] for r in await conn.fetch("SELECT name, key FROM tags")}
            assert tags == {"Straße": "strasse", "e\u0301té": "\u00e9t\u00e9", "Other": "other"}
            links = {(r[0], r[1]) for r in await conn.fetch(
                "SELECT ct.content_hash, t.name FROM content_tags ct JOIN tags t ON t.id = ct.tag_id")}
            assert links == {("h1", "Straße"), ("h2", "Straße"), ("h3", "e\u0301té")}
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO tags (name, key, created_at) VALUES ('x', 'other', $1)", now)
        finally:
            await conn.close()

    asyncio.run(go())

