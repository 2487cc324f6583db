"""SQL of the `login_counts` table, for imageapi.core.throttle's DatabaseCounts."""

from __future__ import annotations

from collections.abc import Sequence

from imageapi.core.db import Connection, dialect


async def lock_counts(db: Connection, lock: int) -> None:
    """PostgreSQL: take the transaction-level advisory lock `lock` (SQLite's write lock is the
    transaction itself: nothing to do). In the caller's transaction."""
    if dialect(db) == "postgresql":
        await db.execute(f"SELECT pg_advisory_xact_lock({int(lock)})")


async def forget(db: Connection, last_before: float, now: float) -> None:
    """Delete the counts last failed at or before `last_before` whose wait is over (the index on
    last_failure finds them). In the caller's transaction."""
    await db.execute("DELETE FROM login_counts WHERE last_failure <= ? AND not_before <= ?", (last_before, now))


async def read(db: Connection, keys: Sequence[str]) -> list[tuple[str, int, float, float]]:
    """(key, failures, not_before, last_failure) of the keys stored."""
    marks = ", ".join("?" * len(keys))
    async with db.execute(f"SELECT id, failures, not_before, last_failure FROM login_counts WHERE id IN ({marks})",
                          tuple(keys)) as cur:
        rows = await cur.fetchall()
    return [(str(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows]


async def delete(db: Connection, key: str) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM login_counts WHERE id = ?", (key,))


async def store(db: Connection, key: str, failures: int, not_before: float, last_failure: float) -> None:
    """Insert or replace the count of `key`. In the caller's transaction."""
    await db.execute(
        "INSERT INTO login_counts (id, failures, not_before, last_failure) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET failures = excluded.failures, "
        "not_before = excluded.not_before, last_failure = excluded.last_failure",
        (key, failures, not_before, last_failure))
