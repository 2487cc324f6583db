"""SQLite: connections, pragmas and migrations.

Long jobs take the job lock's leases for the work they do (`imageapi.core.lock`: one scan per
library, one run of the drains) and write in batched transactions. WAL lets readers (the server's
requests) go on while a job writes. Every write and transaction on an aiosqlite connection goes
through `imageapi.core.database.Database`.

Failures that come from the disk or the file, not from a bug, become the core's own errors: a full
disk (SQLITE_FULL) is DatabaseFullError, with the transaction rolled back and everything committed
before it kept; a file that is not an SQLite database, or is damaged, is DatabaseCorruptError, found
at open by a header check and a cheap read of every table's first page (`imageapi doctor` runs the
full quick_check).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from imageapi.core.config import ensure_dir
from imageapi.core.errors import ConfigError, DatabaseCorruptError, DatabaseError, DatabaseFullError
from imageapi.core.migrations import MIGRATIONS, Migration
from imageapi.core.postgres.url import DatabaseSetting

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000

_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26  # primary result codes


# The connection, row and driver error types as the rest of the code names them; no module
# outside this one, database.py and postgres/ names a driver. A Connection is aiosqlite's (SQLite)
# or imageapi.core.postgres.connection.PgConnection (PostgreSQL, the same API); a row is
# sqlite3.Row or an asyncpg Record (index, name, unpacking, slices).
class Connection(Protocol):
    def execute(self, sql: str, parameters: Any = ...) -> Any:
        """Awaited for a cursor, or `async with ... as cursor`."""

    async def executemany(self, sql: str, parameters: Any) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...

    async def close(self) -> None: ...


Row = Any
DriverError = sqlite3.Error  # PostgreSQL's errors are raised as its subclasses (postgres/connection.py)
IntegrityError = sqlite3.IntegrityError  # a constraint broken, on either engine
SqliteConnection = sqlite3.Connection  # the synchronous one SQLite's migrations run on


def dialect(conn: object) -> str:
    """"sqlite" or "postgresql": the SQL a connection speaks, for the few statements that must be said
    differently (row leases, advisory locks)."""
    return str(getattr(conn, "dialect", "sqlite"))


def utcnow() -> str:
    """Timestamps are stored as sortable ISO 8601 UTC strings."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pragmas(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def recover_hint() -> str:
    return ("restore it from a backup, or recover what is readable (`imageapi doctor` gives the commands; "
            "README: A full disk or a damaged database)")


def recover_commands(path: Path | str) -> str:
    """How to copy what is readable out of a damaged database (the README's steps, for doctor)."""
    new = f"{path}.recovered"
    return (f"stop imageapi; restore a backup, or: sqlite3 {path} .recover | sqlite3 {new} (where that says "
            f"'SQL logic error': sqlite3 {path} .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | "
            f"sqlite3 {new}); then sqlite3 {new} 'DELETE FROM dirs' (the next full scan then re-reads every "
            f"folder), set DATABASE_URL to {new} and run imageapi scan --full")


def database_error(exc: BaseException, path: Path | str | None = None) -> DatabaseError | None:
    """The core's error for a SQLite failure that comes from the disk or the file (full, damaged,
    not a database); None for any other exception."""
    if isinstance(exc, DatabaseError):
        return exc
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary == _SQLITE_FULL or (primary is None and "database or disk is full" in text):
        where = f" ({path})" if path else ""
        return DatabaseFullError(
            f"database or disk is full{where}: the last write was rolled back and everything written "
            "before it is kept; free some space and run again to finish the job")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
            primary is None and ("malformed" in text or "not a database" in text)):
        return DatabaseCorruptError(f"{path or 'the database'} is damaged ({text}): {recover_hint()}")
    return None


def probe_writable(path: Path) -> None:
    """Open the file, read its version and take the write lock for a moment (what every write
    needs); sqlite3.Error when any of it fails (`imageapi doctor`)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA user_version").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def quick_check(path: Path, limit: int = 20) -> list[str]:
    """The problems PRAGMA quick_check finds in the file (at most `limit`; none when sound)."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute(f"PRAGMA quick_check({int(limit)})") if r[0] != "ok"]
    finally:
        conn.close()


def check_header(path: Path) -> None:
    """A file that exists and is not empty must be an SQLite database (SQLite would otherwise fail
    later, on some statement, with a less useful message). Asked of SQLite, never by opening the
    file here: POSIX locks belong to the process, and closing any descriptor of the file would drop
    the locks of every connection this process has open on it (SQLite's own opens keep them)."""
    try:
        if path.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError("DATABASE_URL", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if isinstance(database_error(exc), DatabaseCorruptError):
            raise DatabaseCorruptError(f"{path} is not an SQLite database ({exc}): "
                                       "set DATABASE_URL to the database, or restore it from a backup") from None
        raise ConfigError("DATABASE_URL", f"cannot read {path}: {exc}") from None


def check_readable(conn: sqlite3.Connection) -> None:
    """Cheap enough for every start: the schema parses and every table's first page reads."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        # NOT INDEXED: the table's own b-tree, not a smaller index that would answer instead.
        conn.execute(f'SELECT * FROM "{table.replace(chr(34), chr(34) * 2)}" NOT INDEXED LIMIT 1').fetchall()


def connect_sync(path: Path, migrate: bool = True) -> sqlite3.Connection:
    """A stdlib connection (worker processes, short CLI commands, tests). Raises DatabaseCorruptError
    for a file that is not an SQLite database or is visibly damaged, DatabaseFullError when the
    migrations cannot be written."""
    ensure_dir("DATABASE_URL", path.parent)
    check_header(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ConfigError("DATABASE_URL", f"cannot open {path}: {exc}") from None
    try:
        try:
            _pragmas(conn)
            check_readable(conn)
        except sqlite3.Error as exc:
            if database_error(exc) is None:
                raise ConfigError("DATABASE_URL", f"cannot open {path}: {exc}") from None
            raise
        conn.row_factory = sqlite3.Row
        if migrate:
            apply_migrations(conn)
    except BaseException as exc:
        conn.close()
        error = database_error(exc, path)
        if error is not None and error is not exc:
            raise error from None
        raise
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
            rollback_sync(conn)
            raise
    return applied


def rollback_sync(conn: sqlite3.Connection) -> None:
    """ROLLBACK if a transaction is still open. SQLite ends it by itself after some errors (a full
    disk among them), and a failing ROLLBACK must not hide the error that led to it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed: %s", exc)


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


async def connect(target: Path | DatabaseSetting, migrate: bool = True) -> Connection:
    """The index's connection: for a path (or an SQLite setting) an aiosqlite connection with the
    project's pragmas, migrated (and checked, see connect_sync); for a PostgreSQL setting a pool
    with the same API (imageapi.core.postgres.connection)."""
    if isinstance(target, DatabaseSetting):
        if target.kind == "postgresql":
            from imageapi.core.postgres.connection import connect as pg_connect

            return await pg_connect(target.url, migrate)
        assert target.path is not None
        target = target.path
    path = target
    if migrate:
        conn = await asyncio.to_thread(connect_sync, path, True)
        conn.close()
    else:
        ensure_dir("DATABASE_URL", path.parent)
        check_header(path)
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError("DATABASE_URL", f"cannot open {path}: {exc}") from None
    db.row_factory = aiosqlite.Row
    _paths[db] = path
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute("PRAGMA foreign_keys = ON")
    return db


_paths: weakref.WeakKeyDictionary[Connection, Path] = weakref.WeakKeyDictionary()


def db_path(db: Connection) -> Path | None:
    """The file a connection made by `connect` is on (for messages)."""
    return _paths.get(db)
