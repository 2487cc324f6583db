"""SQL of the `job_leases` table, for imageapi.core.lock."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.db import Connection


@dataclass(frozen=True)
class LeaseRow:
    holder: str
    host: str
    machine: str
    pid: int
    job: str
    expires_at: float


async def lease_row(db: Connection, name: str) -> LeaseRow | None:
    async with db.execute("SELECT holder, host, machine, pid, job, expires_at FROM job_leases WHERE name = ?",
                          (name,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return LeaseRow(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), float(row[5]))


async def insert_lease(db: Connection, name: str, row: LeaseRow) -> None:
    """The lease's row, unless one exists meanwhile (then nothing). In the caller's transaction."""
    await db.execute(
        "INSERT INTO job_leases (name, holder, host, machine, pid, job, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        (name, row.holder, row.host, row.machine, row.pid, row.job, row.expires_at))


async def replace_lease(db: Connection, name: str, row: LeaseRow, holder_seen: str) -> None:
    """The lease's row replaced, only while it still names `holder_seen` (a compare-and-set). In
    the caller's transaction."""
    await db.execute(
        "UPDATE job_leases SET holder = ?, host = ?, machine = ?, pid = ?, job = ?, expires_at = ? "
        "WHERE name = ? AND holder = ?",
        (row.holder, row.host, row.machine, row.pid, row.job, row.expires_at, name, holder_seen))


async def extend_lease(db: Connection, name: str, holder: str, expires_at: float) -> None:
    """The holder's lease runs to `expires_at` (nothing when it is not theirs). In the caller's
    transaction."""
    await db.execute("UPDATE job_leases SET expires_at = ? WHERE name = ? AND holder = ?", (expires_at, name, holder))


async def delete_lease(db: Connection, name: str, holder: str) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM job_leases WHERE name = ? AND holder = ?", (name, holder))
