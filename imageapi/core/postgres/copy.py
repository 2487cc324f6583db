"""`imageapi db copy`: an SQLite index into PostgreSQL, so a user can switch without rescanning.

Every table of the SQLite index is copied in key order, in batches written with COPY. Each batch
and the record of how far its table has got (the db_copy table in PostgreSQL) commit together, so
a copy that is killed and run again carries on after the last committed batch and never writes a
row twice. The SQLite side is read in one read transaction: one consistent snapshot even while
imageapi keeps writing to it. Identity sequences are then set past the copied ids (and past
SQLite's AUTOINCREMENT counters), and the copy is verified: row count and a checksum per table,
computed the same way from the rows each side returns (canonical bytes of every value, in key
order, through blake3).

A PostgreSQL database that holds anything else (another index's copy, rows not written by this
copy, a finished copy) is refused unless `force`, which empties its tables first.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from blake3 import blake3

from imageapi.core import errors
from imageapi.core.postgres import migrations as pgm
from imageapi.core.postgres.url import redact

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")
Progress = Callable[[str, int, int | None], None]

BATCH = 5000
CONNECT_TIMEOUT = 30.0     # seconds to reach the server
COMMAND_TIMEOUT = 600.0    # seconds for one statement (a batch, a count)
WHOLE = "*"                # db_copy's row for the copy as a whole
COPY_LOCK = 0x1A9E_0002    # advisory lock: one copy into a database at a time

PROGRESS_TABLE = """
CREATE TABLE IF NOT EXISTS db_copy (
    table_name   TEXT COLLATE "C" PRIMARY KEY,
    source       TEXT COLLATE "C" NOT NULL,
    last_key     TEXT COLLATE "C",          -- JSON: the key of the last row copied
    rows         BIGINT NOT NULL DEFAULT 0,
    finished_at  TEXT COLLATE "C"
)
"""


@dataclass
class TableCopy:
    name: str
    rows: int = 0          # rows in the table (both sides, once verified)
    copied: int = 0        # rows written by this run (less than rows when resumed)
    checksum: str = ""


@dataclass
class CopyResult:
    source: str
    target: str
    resumed: bool
    seconds: float = 0.0
    tables: list[TableCopy] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "resumed": self.resumed, "verified": True,
                "seconds": round(self.seconds, 3),
                "rows": sum(t.rows for t in self.tables), "copied": sum(t.copied for t in self.tables),
                "tables": {t.name: {"rows": t.rows, "copied": t.copied, "checksum": t.checksum}
                           for t in self.tables}}


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]            # primary key columns: the copy's order and resume point
    identity: str | None            # the INTEGER PRIMARY KEY column, an identity in PostgreSQL
    embeddings: frozenset[str]      # float32 blob columns, vector or real[] in PostgreSQL


# -- canonical row bytes (both sides) -------------------------------------------------------------

def _value_bytes(value: object) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i" + str(value).encode() + b";"
    if isinstance(value, float):
        return b"f" + value.hex().encode() + b";"
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        return b"s" + str(len(raw)).encode() + b":" + raw
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"b" + str(len(raw)).encode() + b":" + raw
    raise TypeError(f"no canonical form for {type(value).__name__}")


def row_bytes(row: Sequence[object]) -> bytes:
    return b"(" + b"".join(_value_bytes(v) for v in row) + b")"


# -- SQLite side (one thread, one read transaction) ----------------------------------------------

class SqliteSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-copy-sqlite")
        self.conn: sqlite3.Connection | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def open(self) -> None:
        from imageapi.core.db import connect_sync

        if not self.path.is_file():
            raise errors.NotFoundError(f"no SQLite index at {self.path} (DATABASE_URL or --database names it)")
        self.conn = connect_sync(self.path)  # brought to this imageapi's schema, as every command does
        self.conn.row_factory = None  # plain tuples
        self.conn.execute("BEGIN")  # one snapshot for the whole copy (WAL: writers carry on)
        self.conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def identity(self) -> str:
        """Which index this is: its file and when its schema was first made."""
        assert self.conn is not None
        first = self.conn.execute("SELECT MIN(applied_at) FROM schema_migrations").fetchone()[0]
        return f"{self.path.resolve()} (created {first})"

    def version(self) -> int:
        assert self.conn is not None
        return int(self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

    def tables(self) -> list[Table]:
        """Every table but SQLite's own, schema_migrations and the search index, parents before the tables that
        refer to them (foreign keys are checked as rows arrive)."""
        assert self.conn is not None
        names = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'schema_migrations' AND name NOT LIKE 'search%' ORDER BY name")]
        # The search index is not copied: PostgreSQL's triggers mark every copied file for it.
        found: dict[str, Table] = {}
        parents: dict[str, set[str]] = {}
        for name in names:
            info = self.conn.execute(f'PRAGMA table_info("{name}")').fetchall()
            columns = tuple(r[1] for r in info)
            key = tuple(r[1] for r in sorted((r for r in info if r[5] > 0), key=lambda r: r[5]))
            if not key:
                raise errors.DatabaseError(f"table {name} has no primary key: it cannot be copied in key order")
            identity = key[0] if len(key) == 1 and info[columns.index(key[0])][2].upper() == "INTEGER" else None
            embeddings = frozenset(c for t, c in pgm.EMBEDDING_COLUMNS if t == name)
            found[name] = Table(name, columns, key, identity, embeddings)
            parents[name] = {r[2] for r in self.conn.execute(f'PRAGMA foreign_key_list("{name}")')} - {name}
        ordered: list[Table] = []
        while parents:
            ready = sorted(n for n, p in parents.items() if not (p & parents.keys()))
            if not ready:
                raise errors.DatabaseError(f"foreign keys form a cycle among {sorted(parents)}")
            for n in ready:
                ordered.append(found[n])
                del parents[n]
        return ordered

    def count(self, table: Table) -> int:
        assert self.conn is not None
        return int(self.conn.execute(f'SELECT COUNT(*) FROM "{table.name}"').fetchone()[0])

    def batch(self, table: Table, after: list[object] | None, limit: int) -> list[tuple[object, ...]]:
        assert self.conn is not None
        cols = ", ".join(f'"{c}"' for c in table.columns)
        keys = ", ".join(f'"{c}"' for c in table.key)
        where = f"WHERE ({keys}) > ({', '.join('?' * len(table.key))})" if after is not None else ""
        sql = f'SELECT {cols} FROM "{table.name}" {where} ORDER BY {keys} LIMIT ?'
        return self.conn.execute(sql, (*(after or ()), limit)).fetchall()

    def sequences(self) -> dict[str, int]:
        """AUTOINCREMENT's counters: an id once handed out (and deleted since) stays used."""
        assert self.conn is not None
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            return {}
        return {r[0]: int(r[1]) for r in self.conn.execute("SELECT name, seq FROM sqlite_sequence")}


# -- PostgreSQL side ------------------------------------------------------------------------------

def _float32_list(blob: object, where: str) -> list[float]:
    if not isinstance(blob, bytes) or len(blob) % 4 or not blob:
        raise errors.DatabaseError(f"{where}: an embedding must be float32 values, got "
                                   f"{len(blob) if isinstance(blob, bytes) else type(blob).__name__} bytes")
    return [float(v) for v in np.frombuffer(blob, dtype="<f4")]


def _vector_encode(values: list[float]) -> bytes:
    """pgvector's binary form: dimensions, unused, then big-endian float32s."""
    return struct.pack(">HH", len(values), 0) + np.asarray(values, dtype=">f4").tobytes()


def _vector_decode(data: bytes) -> bytes:
    """Straight back to SQLite's form: little-endian float32s."""
    (dim,) = struct.unpack(">H", data[:2])
    return np.frombuffer(data[4:4 + 4 * dim], dtype=">f4").astype("<f4").tobytes()


async def _connect(url: str) -> asyncpg.Connection:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    except (TimeoutError, OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise errors.ServiceError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from None
    return conn


async def _vector_codec(conn: asyncpg.Connection) -> None:
    """pgvector's type read and written as SQLite's float32 blobs (when the extension is there)."""
    if await conn.fetchval("SELECT 1 FROM pg_type WHERE typname = 'vector'"):
        schema = await conn.fetchval("SELECT n.nspname FROM pg_type t JOIN pg_namespace n "
                                     "ON n.oid = t.typnamespace WHERE t.typname = 'vector'")
        await conn.set_type_codec("vector", schema=schema, encoder=_vector_encode, decoder=_vector_decode,
                                  format="binary")


def _to_pg(table: Table, row: tuple[object, ...], types: dict[str, str]) -> tuple[object, ...]:
    out = list(row)
    for i, col in enumerate(table.columns):
        value = out[i]
        if value is None:
            continue
        kind = types[col]
        if col in table.embeddings and value == b"":
            out[i] = None  # a face drawn by hand has no embedding: NULL here (migration 16)
        elif col in table.embeddings:
            out[i] = _float32_list(value, f"{table.name} {dict(zip(table.key, _key(table, row), strict=True))}")
        elif kind == "double precision" and isinstance(value, int):
            out[i] = float(value)
        elif kind == "bigint" and isinstance(value, float) and value.is_integer():
            out[i] = int(value)
    return tuple(out)


def _from_pg(table: Table, row: Sequence[object], types: dict[str, str]) -> tuple[object, ...]:
    out = list(row)
    for i, col in enumerate(table.columns):
        if col in table.embeddings and out[i] is None:
            out[i] = b""  # back to SQLite's empty embedding of a face drawn by hand
        elif col in table.embeddings and types[col] != "vector":
            out[i] = np.asarray(out[i], dtype="<f4").tobytes()
    return tuple(out)


def _key(table: Table, row: Sequence[object]) -> list[object]:
    return [row[table.columns.index(c)] for c in table.key]


async def _column_types(conn: asyncpg.Connection, table: Table) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped", table.name)
    types = {r[0]: str(r[1]).split("(")[0] for r in rows}
    missing = [c for c in table.columns if c not in types]
    if missing:
        raise errors.DatabaseError(f"PostgreSQL table {table.name} has no column {', '.join(missing)}: "
                                   "its schema is not this index's")
    return types


async def _prepare_target(conn: asyncpg.Connection, tables: list[Table], source: str, force: bool) -> bool:
    """Make sure the target may take this copy; True when an earlier run of it is resumed."""
    await conn.execute(PROGRESS_TABLE)
    done = {r["table_name"]: r for r in await conn.fetch("SELECT * FROM db_copy")}
    whole = done.get(WHOLE)
    refusal = None
    if whole is not None and whole["source"] != source:
        refusal = f"it holds a copy of another index ({whole['source']})"
    elif whole is not None and whole["finished_at"] is not None:
        refusal = f"it already holds a finished copy of this index (made {whole['finished_at']})"
    elif whole is None:
        for table in tables:
            if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table.name}")'):
                refusal = f"its table {table.name} holds rows that no copy of this index wrote"
                break
    if refusal is None:
        if whole is None:
            await conn.execute("INSERT INTO db_copy (table_name, source) VALUES ($1, $2)", WHOLE, source)
        return whole is not None
    if not force:
        raise errors.UsageError(f"refusing to copy into this PostgreSQL database: {refusal}; "
                                "--force empties it first")
    async with conn.transaction():
        names = ", ".join(f'"{t.name}"' for t in tables)
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        await conn.execute("DELETE FROM db_copy")
        await conn.execute("INSERT INTO db_copy (table_name, source) VALUES ($1, $2)", WHOLE, source)
    return False


async def _copy_table(conn: asyncpg.Connection, src: SqliteSource, table: Table, source: str, batch: int,
                      step: Callable[[int], None]) -> TableCopy:
    """Copy the table's rows after its last committed batch; `step(n)` after each batch."""
    import asyncpg

    types = await _column_types(conn, table)
    state = await conn.fetchrow("SELECT last_key, rows, finished_at FROM db_copy WHERE table_name = $1", table.name)
    result = TableCopy(table.name)
    if state is not None and state["finished_at"] is not None:
        return result
    after: list[object] | None = json.loads(state["last_key"]) if state and state["last_key"] else None
    while True:
        rows = await src.call(src.batch, table, after, batch)
        if not rows:
            break
        records = [_to_pg(table, r, types) for r in rows]
        after = _key(table, rows[-1])
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(table.name, records=records, columns=list(table.columns))
                await conn.execute(
                    "INSERT INTO db_copy (table_name, source, last_key, rows) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (table_name) DO UPDATE SET last_key = excluded.last_key, "
                    "rows = db_copy.rows + excluded.rows", table.name, source, json.dumps(after), len(rows))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, TypeError, OverflowError) as exc:
            first = dict(zip(table.key, _key(table, rows[0]), strict=True))
            raise errors.DatabaseError(f"copying {table.name} (the batch from {first}): {exc}") from None
        result.copied += len(rows)
        step(len(rows))
    await conn.execute(
        "INSERT INTO db_copy (table_name, source, finished_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (table_name) DO UPDATE SET finished_at = excluded.finished_at", table.name, source, _now())
    return result


async def _set_identities(conn: asyncpg.Connection, tables: list[Table], counters: dict[str, int]) -> None:
    """Identity sequences continue after the highest id copied, or SQLite's counter if higher."""
    for table in tables:
        if table.identity is None:
            continue
        seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, $2)", table.name, table.identity)
        if seq is None:
            continue
        top = await conn.fetchval(f'SELECT MAX("{table.identity}") FROM "{table.name}"')
        last = max(int(top or 0), counters.get(table.name, 0))
        if last > 0:
            await conn.execute("SELECT setval($1::regclass, $2, true)", seq, last)
        else:
            await conn.execute("SELECT setval($1::regclass, 1, false)", seq)


async def _checksums(conn: asyncpg.Connection, src: SqliteSource, table: Table, batch: int
                     ) -> tuple[tuple[int, str], tuple[int, str]]:
    """(count, checksum) of the SQLite table and of the PostgreSQL one, each read in key order."""
    types = await _column_types(conn, table)
    mine, theirs = blake3(), blake3()
    n_src = n_pg = 0
    after: list[object] | None = None
    while True:
        rows = await src.call(src.batch, table, after, batch)
        if not rows:
            break
        for r in rows:
            mine.update(row_bytes(r))
        n_src += len(rows)
        after = _key(table, rows[-1])
    cols = ", ".join(f'"{c}"' for c in table.columns)
    keys = ", ".join(f'"{c}"' for c in table.key)
    async with conn.transaction(readonly=True):
        async for rec in conn.cursor(f'SELECT {cols} FROM "{table.name}" ORDER BY {keys}', prefetch=batch):
            theirs.update(row_bytes(_from_pg(table, tuple(rec), types)))
            n_pg += 1
    return (n_src, mine.hexdigest()), (n_pg, theirs.hexdigest())


def _now() -> str:
    from imageapi.core.db import utcnow

    return utcnow()


async def copy_index(sqlite_path: Path, url: str, *, force: bool = False, batch: int = BATCH,
                     progress: Progress | None = None, use_vector: bool | None = None) -> CopyResult:
    """Copy the SQLite index at `sqlite_path` into the PostgreSQL database at `url` (see module doc).
    Raises UsageError when the target holds something else (and not `force`), DatabaseError when
    the verification finds a difference, ServiceError when the server cannot be reached."""
    import asyncpg

    started = time.monotonic()
    src = SqliteSource(sqlite_path)
    try:
        await src.call(src.open)
        conn = await _connect(url)
        try:
            return await _copy(src, conn, url, force, batch, progress, use_vector, started)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # A refused statement (rights, space) or a lost connection: what is committed stays.
            raise errors.DatabaseError(f"PostgreSQL at {redact(url)}: {exc} (run the copy again to carry on "
                                       "once that is fixed)") from None
        finally:
            if not conn.is_closed():
                await conn.close(timeout=10)
    finally:
        await src.call(src.close)
        src.pool.shutdown(wait=True)


async def _copy(src: SqliteSource, conn: asyncpg.Connection, url: str, force: bool, batch: int,
                progress: Progress | None, use_vector: bool | None, started: float) -> CopyResult:
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", COPY_LOCK):
        raise errors.LockedError("another `imageapi db copy` into this PostgreSQL database is running")
    version = await src.call(src.version)
    known = max(m.version for m in pgm.PG_MIGRATIONS)
    if version > known:
        raise errors.UsageError(f"the index is at schema version {version}, and this imageapi's PostgreSQL "
                                f"schema knows versions up to {known} only")
    await pgm.apply_migrations(conn, use_vector=use_vector)
    if await pgm.schema_version(conn) != version:
        raise errors.UsageError(f"the PostgreSQL database is at schema version {await pgm.schema_version(conn)}, "
                                f"the index at {version}: one imageapi version must have made both")
    await _vector_codec(conn)
    tables = await src.call(src.tables)
    source = await src.call(src.identity)
    resumed = await _prepare_target(conn, tables, source, force)
    result = CopyResult(source=str(src.path), target=redact(url), resumed=resumed)
    # One bar over every row: those copied by an earlier run count as done.
    total = sum([await src.call(src.count, t) for t in tables])
    done = int(await conn.fetchval("SELECT COALESCE(SUM(rows), 0) FROM db_copy WHERE table_name != $1", WHOLE))

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("copy", done, max(total, done))

    step(0)
    copies = [await _copy_table(conn, src, table, source, batch, step) for table in tables]
    await _set_identities(conn, tables, await src.call(src.sequences))
    mismatched = []
    checked = 0
    for table, copied in zip(tables, copies, strict=True):
        (n_src, sum_src), (n_pg, sum_pg) = await _checksums(conn, src, table, batch)
        if (n_src, sum_src) != (n_pg, sum_pg):
            mismatched.append(f"{table.name} ({n_src} rows in SQLite, {n_pg} in PostgreSQL"
                              f"{', same count but different rows' if n_src == n_pg else ''})")
        copied.rows, copied.checksum = n_src, sum_src
        checked += n_src
        if progress:
            progress("verify", checked, max(total, checked))
    if mismatched:
        raise errors.DatabaseError(
            "the copy differs from the index in " + "; ".join(mismatched)
            + ": the index changed since this copy started, or rows were written to PostgreSQL meanwhile; "
            "run `imageapi db copy --force` to copy it again")
    await conn.execute("UPDATE db_copy SET finished_at = $1 WHERE table_name = $2", _now(), WHOLE)
    result.tables = copies
    result.seconds = time.monotonic() - started
    return result
