"""The one way to write to the database.

A `Database` owns the connection it was opened on and is the only place transactions are begun,
nested and ended:

    async with database.transaction():      # BEGIN IMMEDIATE ... COMMIT
        await database.conn.execute(...)
        async with database.transaction():  # SAVEPOINT ... RELEASE: a failure here rolls back
            ...                             # only this part, the outer one goes on
    await database.write(sql, params)       # one statement, a transaction of its own
    await database.write_many(sql, rows)    # executemany, one transaction (batches stay batched)

Writes are serialized by it: one task holds the transaction at a time (others wait, as datasette's
`execute_write_fn` queues them on its one write connection); the holder's own nested
`transaction()` calls become savepoints (as sqlite-utils' and Django's `atomic()` nest). The holder
is the task, not the coroutine chain: a task it spawns that writes waits for the outer
transaction to end, so never await such a task from inside a transaction.

Reads use the same connection (`conn`). aiosqlite runs every statement of a connection on that
connection's one thread, so a pool of read connections would let reads overlap a long write; the
server's writes are short and the long jobs (scan, drains) run in their own processes with their
own connections, so one connection is kept for now.

A full disk (SQLITE_FULL) or a damaged file leaves any level as DatabaseFullError /
DatabaseCorruptError. SQLite may end the whole transaction by itself on such an error, so the
error dooms the transaction: everything since BEGIN is rolled back (even when an outer level
catches the error), everything committed before is kept, and a failing ROLLBACK is logged, never
raised in place of the cause.

Code that holds only the connection (`imageapi.core.db.Connection`: SQLite or PostgreSQL) reaches its
Database with `Database.of(conn)`, or the module's `transaction`, `write` and `write_many`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imageapi.core import db as sqlite_db
from imageapi.core.db import Connection
from imageapi.core.errors import DatabaseError

log = logging.getLogger(__name__)

Params = Sequence[object]
SNAPSHOT_WAIT = 5.0  # seconds a BEGIN waits for this connection's own open reads (_begin_immediate)


class Database:
    """The connection and its writer: see the module's docstring."""

    _registry: weakref.WeakKeyDictionary[Connection, Database] = weakref.WeakKeyDictionary()

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None
        self._depth = 0                         # 0: no transaction; 1: BEGIN; n > 1: n - 1 savepoints
        self._doomed: DatabaseError | None = None  # a full disk or damage inside: only rollback is left

    @classmethod
    def of(cls, conn: Connection) -> Database:
        """The one Database of a connection (made on first use)."""
        found = cls._registry.get(conn)
        if found is None:
            found = cls._registry[conn] = cls(conn)
        return found

    @classmethod
    async def open(cls, path: Path, migrate: bool = True) -> Database:
        """Open (and migrate) the database file; see `imageapi.core.db.connect`."""
        return cls.of(await sqlite_db.connect(path, migrate))

    async def close(self) -> None:
        await self.conn.close()

    @property
    def path(self) -> Path | None:
        return sqlite_db.db_path(self.conn)

    def in_transaction(self) -> bool:
        """Whether the calling task holds this database's transaction."""
        return self._depth > 0 and self._owner is asyncio.current_task()

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    async def write(self, sql: str, params: Params = ()) -> Any:
        """One write statement: in the caller's transaction if it holds one (a single statement is
        atomic by itself, no savepoint needed), else in a transaction of its own."""
        if self.in_transaction():
            try:
                return await self.conn.execute(sql, params)
            except BaseException as exc:
                await self._doom(exc)  # a full disk dooms the transaction held
                self._raise_as_core(exc)
                raise
        async with self.transaction():
            return await self.conn.execute(sql, params)

    async def write_many(self, sql: str, rows: Sequence[Params]) -> None:
        """executemany, as `write`: the whole batch lands or none of it."""
        if self.in_transaction():
            try:
                await self.conn.executemany(sql, rows)
            except BaseException as exc:
                await self._doom(exc)
                self._raise_as_core(exc)
                raise
            return
        async with self.transaction():
            await self.conn.executemany(sql, rows)

    # ------------------------------------------------------------------------------ internals

    def _core_error(self, exc: BaseException) -> DatabaseError | None:
        return sqlite_db.database_error(exc, self.path)

    def _note(self, exc: BaseException) -> DatabaseError | None:
        error = self._core_error(exc)
        if error is not None and self._doomed is None:
            self._doomed = error
        return error

    async def _doom(self, exc: BaseException) -> None:
        """After a full disk or damage in a transaction held: SQLite may have ended the transaction
        itself, and whatever the holder runs next would then commit on its own. A new (deferred,
        so it cannot fail for want of space) transaction catches it, for the outermost level to
        roll back."""
        if self._note(exc) is not None and not self.conn.in_transaction:
            try:
                await self.conn.execute("BEGIN")
            except sqlite3.Error as begin_exc:
                log.warning("could not begin again after %s: %s", exc, begin_exc)

    async def _begin(self) -> None:
        task = asyncio.current_task()
        if self._depth > 0 and self._owner is task:
            self._depth += 1
            try:
                await self.conn.execute(f"SAVEPOINT sp{self._depth}")
            except BaseException as exc:
                self._depth -= 1
                self._raise_as_core(exc)
                raise
            return
        await self._lock.acquire()
        try:
            await self._begin_immediate()
        except BaseException as exc:
            if not isinstance(exc, sqlite3.Error):
                # Cancelled while the BEGIN was queued: it may still run on the connection's thread,
                # after which this ROLLBACK runs (aiosqlite keeps the order).
                await self._quiet_rollback()
            self._lock.release()
            self._raise_as_core(exc)
            raise
        self._owner, self._depth, self._doomed = task, 1, None

    async def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE. SQLite refuses it at once, without waiting (SQLITE_BUSY_SNAPSHOT), while
        another task's read on this connection is still open on a snapshot that another process
        has committed past (two server processes writing login counts do that often); such a read
        ends soon, so the BEGIN is tried again for up to SNAPSHOT_WAIT seconds."""
        deadline = time.monotonic() + SNAPSHOT_WAIT
        while True:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # SQLITE_BUSY comes back at once too, without the busy timeout's wait, when waiting
                # could deadlock with the read this connection has open.
                busy = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY")
                if not busy or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.005)

    async def _end(self, exc: BaseException | None) -> None:
        if self._depth > 1:
            if exc is not None:
                await self._doom(exc)
            await self._end_savepoint(exc)
        else:
            if exc is not None:
                self._note(exc)
            await self._end_transaction(exc)

    async def _end_savepoint(self, exc: BaseException | None) -> None:
        name = f"sp{self._depth}"
        self._depth -= 1
        if self._doomed is not None:
            # The whole transaction is lost (SQLite may already have rolled it back): the outermost
            # level rolls back; here only the cause goes on.
            if exc is None:
                raise self._doomed
            self._raise_as_core(exc)
            return
        if exc is None:
            try:
                await self.conn.execute(f"RELEASE {name}")
            except BaseException as release_exc:
                await self._doom(release_exc)
                self._raise_as_core(release_exc)
                raise
            return
        try:
            await self.conn.execute(f"ROLLBACK TO {name}")
            await self.conn.execute(f"RELEASE {name}")
        except sqlite3.Error as rollback_exc:
            # The cause is the body's error; the transaction can no longer be trusted.
            log.warning("rollback to savepoint failed: %s", rollback_exc)
            await self._doom(self._core_error(rollback_exc)
                             or DatabaseError(f"the transaction was lost after: {exc}"))

    async def _end_transaction(self, exc: BaseException | None) -> None:
        try:
            if exc is None and self._doomed is None:
                try:
                    await self.conn.execute("COMMIT")
                except BaseException as commit_exc:
                    await self._rollback()
                    self._raise_as_core(commit_exc)
                    raise
                return
            await self._rollback()
            if exc is None:
                assert self._doomed is not None
                raise self._doomed
            self._raise_as_core(exc)
        finally:
            self._owner, self._depth, self._doomed = None, 0, None
            self._lock.release()

    async def _rollback(self) -> None:
        """ROLLBACK if a transaction is still open (SQLite ends it by itself after some errors, a
        full disk among them); a failing ROLLBACK must not hide the error that led to it."""
        if self.conn.in_transaction:
            try:
                await self.conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("rollback failed: %s", exc)

    async def _quiet_rollback(self) -> None:
        try:
            await self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def _raise_as_core(self, exc: BaseException) -> None:
        error = self._core_error(exc)
        if error is not None and error is not exc:
            raise error from exc


class _Transaction:
    """`async with database.transaction():` see Database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def __aenter__(self) -> Connection:
        await self.database._begin()
        return self.database.conn

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        await self.database._end(exc)


async def insert(conn: Connection, sql: str, params: Params = ()) -> int:
    """An INSERT of one row with an `id` column; the new id (RETURNING, which SQLite and PostgreSQL
    both speak: there is no lastrowid on PostgreSQL). In the caller's transaction if it holds one."""
    database = Database.of(conn)
    if database.in_transaction():
        cur = await database.write(sql + " RETURNING id", params)
        row = await cur.fetchone()
    else:
        async with database.transaction():
            cur = await conn.execute(sql + " RETURNING id", params)
            row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def transaction(conn: Connection) -> _Transaction:
    """`Database.of(conn).transaction()`."""
    return Database.of(conn).transaction()


async def write(conn: Connection, sql: str, params: Params = ()) -> Any:
    """`Database.of(conn).write(sql, params)`."""
    return await Database.of(conn).write(sql, params)


async def write_many(conn: Connection, sql: str, rows: Sequence[Params]) -> None:
    """`Database.of(conn).write_many(sql, rows)`."""
    await Database.of(conn).write_many(sql, rows)
