"""Leases on backlog items, so that `imageapi worker` processes on several hosts share a backlog
without working one item twice at once.

A backlog is derived from rows (files whose thumbnail is pending, whose hash is missing, whose
content has no face scan, whose previews are due); nothing is queued. A worker claims a batch: it
selects backlog rows that no unexpired lease covers and takes a lease on each (work_leases,
migration 14: kind, item, holder, token, expires_at), in one transaction. On PostgreSQL the select
is `FOR UPDATE SKIP LOCKED`, so two claimers never pick the same row and never wait on each other;
on SQLite the transaction alone serializes claims (one writer at a time). After taking the leases
the claimer asks again which items are still due: a result committed between its select and its
lease (PostgreSQL reads each statement at its own snapshot) puts the item back at once.

A lease is renewed while the holder lives (`renew`), so long items keep it; a holder that dies
stops renewing, the lease expires after WORKER_LEASE_SECONDS and the item can be claimed again,
with a higher token. A result is written only in a transaction that first deletes the holder's
own lease with its token (`Fence.settle`): a holder whose lease expired and was taken over finds
no lease and writes nothing (the result is dropped and counted).

Times are unix seconds of the worker's clock: hosts need their clocks in step (NTP) to well within
the lease time.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from imageapi.core.database import transaction, write
from imageapi.core.db import Connection, dialect


def new_holder() -> str:
    """host:pid:random, unique to one worker run."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Backlog:
    """One kind of work as rows of `files f`: `where` selects the rows due (with `params`), `key`
    is an item's key (a row may share its item with others: faces are keyed on content), and
    `locks_files` says the result is written on the files rows themselves."""

    kind: str
    where: str
    params: tuple[object, ...] = ()
    key: str = "CAST(f.id AS TEXT)"
    locks_files: bool = True


@dataclass(frozen=True)
class Claimed:
    file_id: int   # the row the item was found on (for faces: the lowest id holding the content)
    key: str
    token: int


def _libs(library_ids: Sequence[int] | None) -> tuple[str, list[object]]:
    """`--library`: the rows stay picked as without it (a backlog's own index, in id order); `+`
    keeps the library's index out, which SQLite would otherwise walk whole, then sort."""
    if not library_ids:
        return "", []
    return f" AND +f.library_id IN ({', '.join('?' * len(library_ids))})", list(library_ids)


async def claim(db: Connection, backlog: Backlog, holder: str, limit: int, lease_seconds: float, *,
                library_ids: Sequence[int] | None = None) -> list[Claimed]:
    """Take leases on at most `limit` due items no one else holds, oldest row first."""
    postgres = dialect(db) == "postgresql"
    libs, lib_params = _libs(library_ids)
    sql = (f"SELECT f.id, {backlog.key} FROM files f WHERE {backlog.where}{libs} "
           f"AND NOT EXISTS (SELECT 1 FROM work_leases w WHERE w.kind = ? AND w.item = {backlog.key} "
           f"AND w.expires_at > ?) ORDER BY f.id LIMIT ?")
    if postgres:
        sql += " FOR UPDATE OF f SKIP LOCKED"
    now = time.time()
    async with transaction(db):
        # Rows sharing an item (the same content) are read past: a few more rows than items.
        async with db.execute(sql, (*backlog.params, *lib_params, backlog.kind, now, limit * 2)) as cur:
            rows = await cur.fetchall()
        first: dict[str, int] = {}
        for file_id, key in rows:
            if key is not None and key not in first and len(first) < limit:
                first[str(key)] = int(file_id)
        taken: dict[str, int] = {}
        for key in sorted(first):  # one order for every claimer: no deadlock between two of them
            async with db.execute(
                "INSERT INTO work_leases (kind, item, holder, token, expires_at) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT (kind, item) DO UPDATE SET holder = excluded.holder, "
                "token = work_leases.token + 1, expires_at = excluded.expires_at "
                "WHERE work_leases.expires_at <= ? RETURNING token",
                (backlog.kind, key, holder, now + lease_seconds, now),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                taken[key] = int(row[0])
        if taken:
            ids = [first[k] for k in taken]
            async with db.execute(
                f"SELECT {backlog.key} FROM files f WHERE {backlog.where} "
                f"AND f.id IN ({', '.join('?' * len(ids))})", (*backlog.params, *ids),
            ) as cur:
                still = {str(r[0]) for r in await cur.fetchall()}
            for key in [k for k in taken if k not in still]:
                await db.execute("DELETE FROM work_leases WHERE kind = ? AND item = ? AND holder = ?",
                                 (backlog.kind, key, holder))
                del taken[key]
    return [Claimed(first[k], k, t) for k, t in sorted(taken.items(), key=lambda kt: first[kt[0]])]


async def backlog_left(db: Connection, backlog: Backlog, library_ids: Sequence[int] | None = None) -> int:
    """Items due, leased or not."""
    libs, lib_params = _libs(library_ids)
    async with db.execute(f"SELECT COUNT(DISTINCT {backlog.key}) FROM files f WHERE {backlog.where}{libs}",
                          (*backlog.params, *lib_params)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def renew(db: Connection, holder: str, lease_seconds: float) -> int:
    """Push back the expiry of every lease the holder still has; an expired one stays lost."""
    now = time.time()
    cur = await write(db, "UPDATE work_leases SET expires_at = ? WHERE holder = ? AND expires_at > ?",
                      (now + lease_seconds, holder, now))
    return max(0, cur.rowcount or 0)


async def release_all(db: Connection, holder: str) -> int:
    """Give back every lease of the holder (a clean stop): the items are due again at once."""
    cur = await write(db, "DELETE FROM work_leases WHERE holder = ?", (holder,))
    return max(0, cur.rowcount or 0)


@dataclass
class Fence:
    """The leases one worker holds on one kind, and the guard of every result write."""

    kind: str
    holder: str
    tokens: dict[str, int] = field(default_factory=dict)
    kept: int = 0        # results written under their lease
    dropped: int = 0     # results thrown away: the lease had been lost to another worker
    locks_files: bool = True

    def add(self, claimed: Sequence[Claimed]) -> None:
        self.tokens.update((c.key, c.token) for c in claimed)

    async def settle(self, db: Connection, keys: Sequence[object]) -> set[str]:
        """Inside the caller's write transaction: end the leases still held on `keys` and return
        those; the caller writes the results of these only. On PostgreSQL the files rows are locked
        first, in the order a claimer locks them (files, then leases), so the two cannot deadlock."""
        wanted = sorted({str(k) for k in keys if str(k) in self.tokens})
        if not wanted:
            return set()
        if self.locks_files and dialect(db) == "postgresql":
            ids = [int(k) for k in wanted]
            async with db.execute(f"SELECT id FROM files WHERE id IN ({', '.join('?' * len(ids))}) "
                                  "ORDER BY id FOR UPDATE", ids) as cur:
                await cur.fetchall()
        held: set[str] = set()
        for key in wanted:
            async with db.execute(
                "DELETE FROM work_leases WHERE kind = ? AND item = ? AND holder = ? AND token = ? RETURNING item",
                (self.kind, key, self.holder, self.tokens[key]),
            ) as cur:
                if await cur.fetchone() is not None:
                    held.add(key)
        for key in wanted:
            del self.tokens[key]
        self.kept += len(held)
        self.dropped += len(wanted) - len(held)
        return held

    async def hold(self, db: Connection, key: object) -> bool:
        """`settle` of one item."""
        return str(key) in await self.settle(db, [key])

    async def release_rest(self, db: Connection) -> None:
        """Give back the leases of items this worker claimed and did not finish (not sent to a
        service that went down, stopped): due again at once, for anyone."""
        if not self.tokens:
            return
        async with transaction(db):
            for key, token in sorted(self.tokens.items()):
                await db.execute("DELETE FROM work_leases WHERE kind = ? AND item = ? AND holder = ? AND token = ?",
                                 (self.kind, key, self.holder, token))
        self.tokens.clear()
