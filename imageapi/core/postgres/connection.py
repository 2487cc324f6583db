"""PostgreSQL behind the connection API the core already speaks.

The core writes its SQL once, with `?` placeholders, in the subset SQLite and PostgreSQL both
understand (`ON CONFLICT ... DO NOTHING / DO UPDATE`, `RETURNING`, `CASE`, explicit `NULLS FIRST`),
and runs it through aiosqlite's connection API: `await conn.execute(sql, params)` or
`async with conn.execute(...) as cur`, `cur.fetchone()/fetchall()/rowcount`, `conn.executemany`.
`PgConnection` gives that API over an asyncpg pool, so every core service and repository runs on
either database; the few statements that must differ branch on `imageapi.core.db.dialect(conn)`.

- Placeholders: `?` becomes `$1, $2, ...` (outside quotes and comments), once per statement text.
- Transactions: `imageapi.core.database.Database` begins, nests (SAVEPOINT) and ends them with
  the same statements on both databases. Here BEGIN takes a connection out of the pool for the
  task that began, every statement of that task runs on it until COMMIT or ROLLBACK, and every
  other task's statements run on other pooled connections, outside the transaction: reads run
  concurrently with a write, as with SQLite's WAL.
- Rows are asyncpg Records: by index, by name, unpacked, sliced, like sqlite3.Row.
- numeric (SUM and AVG of integers) is read as int or float, as SQLite returns them.
- Embeddings are float32 little-endian bytes to the core, as in SQLite; here they are `vector`
  (pgvector) or `real[]` columns, converted on the way in and out.
- Errors are raised as the driver errors the core already handles: a constraint violation is an
  `sqlite3.IntegrityError`, a full disk carries SQLite's full-disk code (so it becomes
  DatabaseFullError), anything else from the server an `sqlite3.DatabaseError`; each keeps the
  asyncpg error as its cause and its SQLSTATE in `sqlstate`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from imageapi.core.errors import ServiceError
from imageapi.core.postgres.url import redact

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0     # seconds to reach the server
COMMAND_TIMEOUT = 300.0    # no statement of ours runs this long; a hung server does not hang a job
POOL_SIZE = 8              # per process: one writer at a time plus concurrent readers

_SQLITE_FULL = 13
_DISK_FULL = "53100"
_ROWS_RE = re.compile(r"^\s*(SELECT|WITH|VALUES)\b", re.I)
_RETURNING_RE = re.compile(r"\bRETURNING\b", re.I)
_TX_RE = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK)\b(?!\s+TO\b)(.*)$", re.I | re.S)


class PgDatabaseError(sqlite3.OperationalError):
    """An error from PostgreSQL, as the driver error the core handles."""

    sqlstate: str | None = None


class PgIntegrityError(PgDatabaseError, sqlite3.IntegrityError):
    """A unique, foreign key, not-null or check constraint refused the statement."""


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """`?` placeholders as `$n`, skipping quoted text and comments."""
    out: list[str] = []
    n = 0
    i, size = 0, len(sql)
    while i < size:
        c = sql[i]
        if c in ("'", '"'):
            end = i + 1
            while end < size:
                if sql[end] == c:
                    if end + 1 < size and sql[end + 1] == c:  # '' inside a literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i:end + 1])
            i = end + 1
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = size if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif c == "?":
            n += 1
            out.append(f"${n}")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _returns_rows(sql: str) -> bool:
    return bool(_ROWS_RE.match(sql) or _RETURNING_RE.search(sql))


def _as_driver_error(exc: BaseException) -> BaseException:
    import asyncpg

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        error: PgDatabaseError = PgIntegrityError(str(exc))
    elif isinstance(exc, asyncpg.PostgresError):
        error = PgDatabaseError(str(exc))
    elif isinstance(exc, (asyncpg.InterfaceError, OSError, ConnectionError)):
        error = PgDatabaseError(f"lost the connection to PostgreSQL: {exc}")
    else:
        return exc
    error.sqlstate = getattr(exc, "sqlstate", None)
    if error.sqlstate == _DISK_FULL:
        error.sqlite_errorcode = _SQLITE_FULL  # read by db.database_error
        error.args = ("database or disk is full: " + str(exc),)
    return error


# -- embeddings: float32 little-endian bytes in the core ------------------------------------------

def _vector_encode(value: bytes | Sequence[float]) -> bytes:
    """pgvector's binary form (dimensions, unused, big-endian float32s) from the core's bytes."""
    values = np.frombuffer(value, dtype="<f4") if isinstance(value, (bytes, bytearray, memoryview)) \
        else np.asarray(value, dtype="<f4")
    return struct.pack(">HH", len(values), 0) + values.astype(">f4").tobytes()


def _vector_decode(data: bytes) -> bytes:
    (dim,) = struct.unpack(">H", data[:2])
    return np.frombuffer(data[4:4 + 4 * dim], dtype=">f4").astype("<f4").tobytes()


def _numeric(text: str) -> int | float:
    """SUM and AVG over integers are numeric here; SQLite gives int (whole) or float."""
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() and "." not in text else float(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=_numeric, format="text")
    schema = await conn.fetchval("SELECT n.nspname FROM pg_type t JOIN pg_namespace n "
                                 "ON n.oid = t.typnamespace WHERE t.typname = 'vector'")
    if schema:
        await conn.set_type_codec("vector", schema=schema, encoder=_vector_encode, decoder=_vector_decode,
                                  format="binary")


def _float32_list(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype="<f4").tolist()
    return value


def _vector_param(value: object) -> object:
    """A face box drawn by hand has no embedding (b"" in SQLite); a vector holds at least one
    dimension, so it is NULL here (migration 16) and b"" again when read."""
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 0:
        return None
    return value


def _embedding_out(value: object) -> object:
    if isinstance(value, list):
        return np.asarray(value, dtype="<f4").tobytes()
    return b"" if value is None else value


_ARRAY_TYPES = ("_float4", "float4[]")


class _Plan:
    """What a statement's parameters and columns need beyond asyncpg's own codecs: real[] and
    vector embeddings."""

    __slots__ = ("array_params", "vector_params", "embedding_columns")

    def __init__(self, array_params: tuple[int, ...] = (), vector_params: tuple[int, ...] = (),
                 embedding_columns: tuple[int, ...] = ()) -> None:
        self.array_params = array_params
        self.vector_params = vector_params
        self.embedding_columns = embedding_columns

    @property
    def converts_params(self) -> bool:
        return bool(self.array_params or self.vector_params)


_NOTHING = _Plan()


# -- the cursor ------------------------------------------------------------------------------------

class PgCursor:
    """The result of one statement: rows already fetched, or the count of rows changed."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount
        self.row_factory: object = None  # accepted and ignored: Records serve both ways

    @property
    def lastrowid(self) -> int:
        raise PgDatabaseError("lastrowid does not exist on PostgreSQL: write INSERT ... RETURNING id")

    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    async def fetchall(self) -> list[Any]:
        rows = self._rows[self._next:]
        self._next = len(self._rows)
        return rows

    async def fetchmany(self, size: int = 1) -> list[Any]:
        rows = self._rows[self._next:self._next + size]
        self._next += len(rows)
        return rows

    async def close(self) -> None:
        self._rows = []

    def __aiter__(self) -> PgCursor:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class _Pending:
    """`conn.execute(...)`: awaited for the cursor, or used as `async with ... as cur`."""

    def __init__(self, conn: PgConnection, sql: str, params: Sequence[object]) -> None:
        self._conn, self._sql, self._params = conn, sql, params

    def __await__(self) -> Any:
        return self._conn._run(self._sql, self._params).__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._conn._run(self._sql, self._params)

    async def __aexit__(self, *exc: object) -> None:
        return None


# -- the connection --------------------------------------------------------------------------------

class PgConnection:
    """An asyncpg pool with aiosqlite's connection API; see the module's docstring."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url
        self._held: dict[asyncio.Task[Any] | None, asyncpg.pool.PoolConnectionProxy] = {}
        self._plans: dict[str, _Plan] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"PgConnection({redact(self.url)!r})"

    @property
    def in_transaction(self) -> bool:
        """Whether the calling task has a transaction open."""
        return asyncio.current_task() in self._held

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> _Pending:
        return _Pending(self, sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Sequence[object]]) -> None:
        text = translate(sql)
        batch = [tuple(r) for r in parameters]
        if not batch:
            return
        try:
            async with self._connection() as conn:
                plan = await self._plan(conn, text, batch[0])
                if plan.converts_params:
                    batch = [self._encode(plan, r) for r in batch]
                await conn.executemany(text, batch)
        except Exception as exc:
            raise _as_driver_error(exc) from exc

    async def execute_fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        return await (await self._run(sql, params)).fetchall()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._held.values()):
            await self.pool.release(conn)
        self._held.clear()
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            self.pool.terminate()

    # ---------------------------------------------------------------------------- internals

    def _connection(self) -> _Use:
        return _Use(self)

    async def _plan(self, conn: Any, text: str, params: Sequence[object]) -> _Plan:
        """Which parameters and columns are embeddings (real[] or vector), found from the prepared
        statement's types once per statement, when it passes bytes or names an embedding."""
        plan = self._plans.get(text)
        if plan is not None:
            return plan
        if "embedding" not in text and not any(isinstance(p, (bytes, bytearray, memoryview)) for p in params):
            return _NOTHING  # found from the text each time: only statements about embeddings are kept
        statement = await conn.prepare(text)
        kinds = [t.name for t in statement.get_parameters()]
        plan = _Plan(
            tuple(i for i, t in enumerate(kinds) if t in _ARRAY_TYPES),
            tuple(i for i, t in enumerate(kinds) if t == "vector"),
            tuple(i for i, a in enumerate(statement.get_attributes()) if a.type.name in (*_ARRAY_TYPES, "vector")))
        self._plans[text] = plan
        return plan

    @staticmethod
    def _encode(plan: _Plan, params: Sequence[object]) -> tuple[object, ...]:
        out = list(params)
        for i in plan.array_params:
            out[i] = _float32_list(out[i])
        for i in plan.vector_params:
            out[i] = _vector_param(out[i])
        return tuple(out)

    async def _run(self, sql: str, params: Sequence[object]) -> PgCursor:
        tx = _TX_RE.match(sql)
        if tx is not None:
            await self._transaction_statement(tx.group(1).upper())
            return PgCursor([], -1)
        text = translate(sql)
        try:
            async with self._connection() as conn:
                plan = await self._plan(conn, text, params)
                args = self._encode(plan, params) if plan.converts_params else tuple(params)
                if _returns_rows(text):
                    rows = await conn.fetch(text, *args)
                    if plan.embedding_columns:
                        rows = [tuple(_embedding_out(v) if i in plan.embedding_columns else v for i, v in enumerate(r))
                                for r in rows]
                    return PgCursor(list(rows), len(rows))
                status = await conn.execute(text, *args)
        except Exception as exc:
            raise _as_driver_error(exc) from exc
        last = status.rsplit(" ", 1)[-1]
        return PgCursor([], int(last) if last.isdigit() else -1)

    async def _transaction_statement(self, verb: str) -> None:
        task = asyncio.current_task()
        if verb == "BEGIN":
            if task in self._held:
                raise PgDatabaseError("cannot start a transaction within a transaction")
            try:
                conn = await self.pool.acquire(timeout=CONNECT_TIMEOUT)
            except Exception as exc:
                raise _as_driver_error(exc) from exc
            try:
                await conn.execute("BEGIN")
            except BaseException as exc:
                await self.pool.release(conn)
                raise _as_driver_error(exc) from exc
            self._held[task] = conn
            return
        conn = self._held.pop(task, None)
        if conn is None:
            raise PgDatabaseError(f"cannot {verb.lower()}: no transaction is active")
        try:
            await conn.execute("ROLLBACK" if verb == "ROLLBACK" else "COMMIT")
        except Exception as exc:
            raise _as_driver_error(exc) from exc
        finally:
            await self.pool.release(conn)


class _Use:
    """The connection a statement runs on: the calling task's transaction, else one from the pool."""

    def __init__(self, owner: PgConnection) -> None:
        self.owner = owner
        self.conn: Any = None
        self.pooled = False

    async def __aenter__(self) -> Any:
        held = self.owner._held.get(asyncio.current_task())
        if held is not None:
            self.conn = held
        else:
            self.conn = await self.owner.pool.acquire(timeout=CONNECT_TIMEOUT)
            self.pooled = True
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        if self.pooled:
            await self.owner.pool.release(self.conn)


async def connect(url: str, migrate: bool = True, *, pool_size: int = POOL_SIZE) -> PgConnection:
    """A pool on the database at `url`, migrated to this imageapi's schema (unless `migrate` is
    False: then a database an older or newer imageapi made is refused)."""
    import asyncpg

    from imageapi.core.postgres import migrations as pgm

    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT,
                                         command_timeout=COMMAND_TIMEOUT, init=_init_connection)
    except (TimeoutError, OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from None
    try:
        async with pool.acquire() as conn:
            if migrate:
                await pgm.apply_migrations(conn)
    except BaseException:
        pool.terminate()
        raise
    if migrate:
        # Types the migrations made (vector) are known to connections opened from now on.
        await pool.expire_connections()
    return PgConnection(pool, url)
