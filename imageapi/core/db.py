"""SQLite: connections, pragmas and migrations.

One writer per database: long jobs take the job lock (`imageapi.core.lock`) and write in batched
transactions. WAL lets readers (the server's requests) go on while a job writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from imageapi.core.config import ensure_dir
from imageapi.core.errors import ConfigError
from imageapi.core.migrations import MIGRATIONS, Migration

BUSY_TIMEOUT_MS = 30_000


def utcnow() -> str:
    """Timestamps are stored as sortable ISO 8601 UTC strings."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pragmas(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def connect_sync(path: Path, migrate: bool = True) -> sqlite3.Connection:
    """A stdlib connection (worker processes, short CLI commands, tests)."""
    ensure_dir("DATABASE_URL", path.parent)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        _pragmas(conn)
    except sqlite3.Error as exc:
        raise ConfigError("DATABASE_URL", f"cannot open {path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    if migrate:
        apply_migrations(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def apply_migrations(conn: sqlite3.Connection, migrations: Iterable[Migration] = MIGRATIONS) -> list[int]:
    """Apply every migration newer than the database, each in its own transaction.

    BEGIN IMMEDIATE takes the write lock first, so two processes starting at once do not both
    apply the same migration.
    """
    applied: list[int] = []
    schema_version(conn)
    for migration in sorted(migrations, key=lambda m: m.version):
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if done:
                conn.execute("COMMIT")
                continue
            for statement in _statements(migration.sql):
                conn.execute(statement)
            if migration.step is not None:
                migration.step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, utcnow()),
            )
            conn.execute("COMMIT")
            applied.append(migration.version)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf)
            buf = ""
    if buf.strip():
        out.append(buf)
    return out


async def connect(path: Path, migrate: bool = True) -> aiosqlite.Connection:
    """An aiosqlite connection with the project's pragmas, migrated."""
    if migrate:
        conn = await asyncio.to_thread(connect_sync, path, True)
        conn.close()
    else:
        ensure_dir("DATABASE_URL", path.parent)
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError("DATABASE_URL", f"cannot open {path}: {exc}") from None
    db.row_factory = aiosqlite.Row
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute("PRAGMA foreign_keys = ON")
    return db


_write_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = weakref.WeakKeyDictionary()


def write_lock(db: aiosqlite.Connection) -> asyncio.Lock:
    """The lock every writer on this connection takes. A server shares one connection between
    concurrent requests; a transaction is the connection's, not the coroutine's, so two requests
    writing at once would otherwise nest BEGINs or commit each other's half-done work."""
    lock = _write_locks.get(db)
    if lock is None:
        lock = _write_locks[db] = asyncio.Lock()
    return lock


async def write(db: aiosqlite.Connection, sql: str, params: tuple[object, ...] | list[object] = ()) -> aiosqlite.Cursor:
    """One write statement in a transaction of its own, under the connection's write lock."""
    async with Transaction(db):
        return await db.execute(sql, params)


async def write_many(db: aiosqlite.Connection, sql: str, rows: list[tuple[object, ...]]) -> None:
    """executemany in a transaction of its own, under the connection's write lock."""
    async with Transaction(db):
        await db.executemany(sql, rows)


class Transaction:
    """`async with Transaction(db):` BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error, holding the
    connection's write lock throughout (not re-entrant: never nest two on one connection)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.lock = write_lock(db)

    async def __aenter__(self) -> aiosqlite.Connection:
        await self.lock.acquire()
        try:
            await self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                await self.db.execute("COMMIT")
            else:
                await self.db.execute("ROLLBACK")
        finally:
            self.lock.release()
