"""PgConnection: the core's connection API over PostgreSQL (a real server, tests/pg.py)."""

from __future__ import annotations

import asyncio
import sqlite3

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageapi.core.database import Database, insert, transaction
from imageapi.core.db import DriverError, connect, dialect
from imageapi.core.errors import DatabaseFullError, UsageError
from imageapi.core.faces import people
from imageapi.core.postgres.connection import PgConnection, _as_driver_error, translate
from imageapi.core.postgres.url import DatabaseSetting


def test_placeholders_become_numbered_outside_quotes_and_comments() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b IN (?, ?)") == "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"
    assert translate("SELECT '?', \"a?b\", 'it''s ?' FROM t WHERE x = ?") == \
        "SELECT '?', \"a?b\", 'it''s ?' FROM t WHERE x = $1"
    assert translate("SELECT 1 -- why?\nWHERE y = ?") == "SELECT 1 -- why?\nWHERE y = $1"


@given(st.lists(st.sampled_from(["?", "'?'", "'a''?'", " x ", "\"q?\"", ","]), max_size=30))
def test_every_bare_placeholder_and_only_those_is_numbered(parts: list[str]) -> None:
    out = translate("".join(parts))
    bare = parts.count("?")
    assert [f"${i}" for i in range(1, bare + 1)] == [w for w in _dollar_words(out)]


def _dollar_words(text: str) -> list[str]:
    import re

    return re.findall(r"\$\d+", text)


def test_a_full_disk_becomes_the_core_error() -> None:
    import asyncpg

    exc = asyncpg.exceptions.DiskFullError("could not extend file: No space left on device")
    error = _as_driver_error(exc)
    assert isinstance(error, DriverError)
    from imageapi.core.db import database_error

    assert isinstance(database_error(error), DatabaseFullError)


@pytest.fixture()
async def pg(pg_url: str):
    conn = await connect(DatabaseSetting("postgresql", url=pg_url))
    assert isinstance(conn, PgConnection) and dialect(conn) == "postgresql"
    try:
        yield conn
    finally:
        await conn.close()


async def test_rows_read_by_index_name_and_unpacking(pg) -> None:
    lib = await insert(pg, "INSERT INTO libraries (name, root, created_at) VALUES (?, ?, ?)", ("main", "/x", "t"))
    async with pg.execute("SELECT id, name, root FROM libraries WHERE id = ?", (lib,)) as cur:
        row = await cur.fetchone()
    assert row[0] == lib and row["name"] == "main"
    got_id, name, root = row
    assert (got_id, name, root) == (lib, "main", "/x")
    # SUM over BIGINT is numeric in PostgreSQL; the core gets an int, as from SQLite.
    async with pg.execute("SELECT SUM(id), AVG(id) FROM libraries") as cur:
        total, mean = await cur.fetchone()
    assert total == lib and isinstance(total, int) and float(mean) == float(lib)
    cur = await pg.execute("UPDATE libraries SET root = ? WHERE id = ?", ("/y", lib))
    assert cur.rowcount == 1


async def test_nested_transactions_roll_back_only_their_part(pg) -> None:
    async with transaction(pg):
        await pg.execute("INSERT INTO libraries (name, root, created_at) VALUES ('a', '/a', 't')")
        with pytest.raises(sqlite3.IntegrityError):
            async with transaction(pg):  # a savepoint
                await pg.execute("INSERT INTO libraries (name, root, created_at) VALUES ('b', '/b', 't')")
                await pg.execute("INSERT INTO libraries (name, root, created_at) VALUES ('a', '/c', 't')")
        await pg.execute("INSERT INTO libraries (name, root, created_at) VALUES ('c', '/c', 't')")
    async with pg.execute("SELECT name FROM libraries ORDER BY name") as cur:
        assert [r[0] for r in await cur.fetchall()] == ["a", "c"]


async def test_reads_of_other_tasks_do_not_wait_for_a_transaction_nor_see_it(pg) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with transaction(pg):
            await pg.execute("INSERT INTO libraries (name, root, created_at) VALUES ('w', '/w', 't')")
            started.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await started.wait()
    async with pg.execute("SELECT COUNT(*) FROM libraries") as cur:
        assert (await cur.fetchone())[0] == 0  # not committed yet, and this read did not wait
    release.set()
    await task
    async with pg.execute("SELECT COUNT(*) FROM libraries") as cur:
        assert (await cur.fetchone())[0] == 1


async def test_writes_of_two_tasks_are_serialized(pg) -> None:
    await pg.execute("INSERT INTO libraries (name, root, created_at) VALUES ('n', '/n', '0')")

    async def bump() -> None:
        async with transaction(pg):
            async with pg.execute("SELECT created_at FROM libraries WHERE name = 'n'") as cur:
                value = int((await cur.fetchone())[0])
            await asyncio.sleep(0)
            await pg.execute("UPDATE libraries SET created_at = ? WHERE name = 'n'", (str(value + 1),))

    await asyncio.gather(*(bump() for _ in range(20)))
    async with pg.execute("SELECT created_at FROM libraries WHERE name = 'n'") as cur:
        assert (await cur.fetchone())[0] == "20"  # no lost update
    assert not Database.of(pg).in_transaction()


async def test_a_constraint_is_the_rule_the_core_states(pg) -> None:
    await people.create_person(pg, "Anna")
    with pytest.raises(UsageError, match="already exists"):
        await people.create_person(pg, "Anna")


@pytest.mark.parametrize("use_vector", [True, False], ids=["vector", "real-array"])
async def test_embeddings_are_float32_bytes_both_ways(pg_url: str, use_vector: bool) -> None:
    import asyncpg

    from imageapi.core.postgres import migrations as pgm
    from imageapi.core.postgres.connection import connect as pg_connect

    raw = await asyncpg.connect(pg_url)
    try:
        try:
            await pgm.apply_migrations(raw, use_vector=use_vector)
        except RuntimeError:
            pytest.skip("pgvector is not installed (apt-get install postgresql-15-pgvector)")
        kind = await pgm.embedding_type(raw, "faces")
    finally:
        await raw.close()
    assert kind == ("vector" if use_vector else "real[]")
    conn = await pg_connect(pg_url)
    try:
        vec = np.arange(128, dtype="<f4") / 7
        face_id = await insert(
            conn, "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ("h", 0, 0.1, 0.1, 0.2, 0.2, 0.9, vec.tobytes(), "m", "t"))
        async with conn.execute("SELECT embedding FROM faces WHERE id = ?", (face_id,)) as cur:
            (blob,) = await cur.fetchone()
        assert blob == vec.tobytes()
        # A box drawn by hand has no embedding: stored (NULL in a vector column) and read back empty.
        drawn = await insert(
            conn, "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ("h", 1, 0.5, 0.5, 0.2, 0.2, 1.0, b"", "manual", "t"))
        async with conn.execute("SELECT id, embedding FROM faces ORDER BY id") as cur:
            assert [tuple(r) for r in await cur.fetchall()] == [(face_id, vec.tobytes()), (drawn, b"")]
    finally:
        await conn.close()
