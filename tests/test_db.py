"""The store's connection handling: migrations and concurrent writers on one shared connection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from imageapi.core.database import transaction, write
from imageapi.core.db import connect, connect_sync
from imageapi.core.migrations import MIGRATIONS


def test_migrations_are_numbered_once_and_recorded(tmp_path: Path) -> None:
    versions = [m.version for m in MIGRATIONS]
    assert len(versions) == len(set(versions))
    conn = connect_sync(tmp_path / "a.db")
    recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == sorted(versions)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # A second start applies nothing twice.
    conn = connect_sync(tmp_path / "a.db")
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(versions)


async def test_concurrent_transactions_on_one_connection_do_not_collide(tmp_path: Path) -> None:
    db = await connect(tmp_path / "b.db")
    await db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")

    async def writer(k: int) -> None:
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (?, 0)", (k,))
            await asyncio.sleep(0.01)  # another request runs meanwhile
            await db.execute("UPDATE t SET v = v + 1 WHERE k = ?", (k,))

    async def failing() -> None:
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (999, 0)")
            await asyncio.sleep(0.01)
            raise RuntimeError("half-way")

    results = await asyncio.gather(*(writer(k) for k in range(20)), failing(), return_exceptions=True)
    assert [r for r in results if r is not None] == [results[-1]] and isinstance(results[-1], RuntimeError)
    async with db.execute("SELECT COUNT(*), SUM(v) FROM t") as cur:
        assert tuple(await cur.fetchone()) == (20, 20)  # every writer whole, the failed one not at all
    await db.close()


async def test_a_second_connection_leaves_the_first_its_locks(tmp_path: Path) -> None:
    """POSIX locks belong to the process and any close() of the file drops them all: a check that
    opens the database file itself (not through SQLite) while a connection is open makes another
    process believe it holds the last connection, and on closing it deletes the write-ahead log
    under the server's feet. The server then no longer sees other processes' commits, and what it
    writes itself goes to an unlinked file."""
    import subprocess
    import sys

    path = tmp_path / "db.sqlite"
    db = await connect(path)                     # the server's connection
    other = await connect(path, migrate=False)   # a second one of the same process (insights has one)
    script = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
              "c.execute('INSERT INTO persons (name, created_at) VALUES (?, ?)', (sys.argv[2], 'now')); "
              "c.commit(); c.close()")
    names: list[str] = []
    try:
        for i in range(3):
            # Another process commits and closes its connection, which it must not take for the last.
            subprocess.run([sys.executable, "-c", script, str(path), f"cli {i}"], check=True, timeout=60)
            names.append(f"cli {i}")
            for conn in (db, other):
                async with conn.execute("SELECT name FROM persons") as cur:
                    assert sorted(r[0] for r in await cur.fetchall()) == sorted(names)
            await write(db, "INSERT INTO persons (name, created_at) VALUES (?, 'now')", (f"server {i}",))
            names.append(f"server {i}")
    finally:
        await other.close()
        await db.close()
    check = sqlite3.connect(path)
    try:
        assert sorted(r[0] for r in check.execute("SELECT name FROM persons")) == sorted(names)
    finally:
        check.close()
