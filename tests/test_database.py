"""The one write idiom (imageapi.core.database): transactions nest as savepoints, writers from
many tasks are serialized, a full disk inside any level is DatabaseFullError with nothing committed
lost, and a write from a task that holds no transaction never lands inside (or commits) another
task's. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageapi.core.database import Database, transaction, write, write_many
from imageapi.core.db import connect
from imageapi.core.errors import DatabaseFullError
from imageapi.core.insights.store import InsightDraft, InsightStore
from imageapi.core.libraries import add_library, list_libraries


class Boom(Exception):
    pass


async def _table(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER, who TEXT)")
    return conn


async def _values(conn: aiosqlite.Connection) -> list[int]:
    return [r[0] for r in await conn.execute_fetchall("SELECT v FROM t ORDER BY v")]


async def test_savepoints_nest(tmp_path: Path) -> None:
    conn = await _table(tmp_path / "n.db")
    db = Database.of(conn)
    try:
        # An inner failure rolls back only the inner part; the outer level goes on and commits.
        async with db.transaction():
            await conn.execute("INSERT INTO t (v) VALUES (1)")
            with pytest.raises(Boom):
                async with db.transaction():
                    await conn.execute("INSERT INTO t (v) VALUES (2)")
                    async with db.transaction():
                        await conn.execute("INSERT INTO t (v) VALUES (3)")
                    raise Boom
            async with db.transaction():
                await db.write("INSERT INTO t (v) VALUES (4)")
                assert db.in_transaction()
            await conn.execute("INSERT INTO t (v) VALUES (5)")
        assert not conn.in_transaction and not db.in_transaction()
        assert await _values(conn) == [1, 4, 5]
        # An outer failure rolls back everything, the released savepoints with it.
        with pytest.raises(Boom):
            async with db.transaction():
                await conn.execute("INSERT INTO t (v) VALUES (6)")
                async with db.transaction():
                    await write_many(conn, "INSERT INTO t (v) VALUES (?)", [(7,), (8,)])
                raise Boom
        assert await _values(conn) == [1, 4, 5]
        # The lock was released: another transaction begins at once.
        await asyncio.wait_for(write(conn, "INSERT INTO t (v) VALUES (9)"), 5)
        assert await _values(conn) == [1, 4, 5, 9]
    finally:
        await conn.close()


async def test_writers_from_many_tasks_never_interleave(tmp_path: Path) -> None:
    conn = await _table(tmp_path / "w.db")
    try:
        async def writer(name: str, fail: bool) -> None:
            async with transaction(conn):
                for i in range(3):
                    await conn.execute("INSERT INTO t (v, who) VALUES (?, ?)", (i, name))
                    await asyncio.sleep(0.002)  # other tasks run meanwhile
                    async with transaction(conn):
                        await conn.execute("INSERT INTO t (v, who) VALUES (?, ?)", (10 + i, name))
                        await asyncio.sleep(0)
                if fail:
                    raise Boom

        async def single(name: str) -> None:
            await write(conn, "INSERT INTO t (v, who) VALUES (?, ?)", (99, name))

        jobs = [writer(f"w{k}", fail=k % 4 == 3) for k in range(16)] + [single(f"s{k}") for k in range(8)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, Boom) for r in results) == 4
        assert all(r is None or isinstance(r, Boom) for r in results)
        rows = await conn.execute_fetchall("SELECT who FROM t ORDER BY seq")
        runs = [(who, len(list(group))) for who, group in itertools.groupby(r[0] for r in rows)]
        # Each transaction's rows are one contiguous run: nothing of another task in between.
        whole = [(f"w{k}", 6) for k in range(16) if k % 4 != 3] + [(f"s{k}", 1) for k in range(8)]
        assert sorted(runs) == sorted(whole)
    finally:
        await conn.close()


async def test_a_write_without_a_transaction_does_not_join_another_tasks(tmp_path: Path) -> None:
    """A request adding a library while another task's transaction is open: it waits for that one to
    end, and neither commits the other's half-done work nor is rolled back with it."""
    db = await connect(tmp_path / "j.db")
    try:
        (tmp_path / "pictures").mkdir()
        began = asyncio.Event()

        async def failing() -> None:
            async with transaction(db):
                await db.execute("INSERT INTO persons (name, created_at) VALUES ('half-done', 'now')")
                began.set()
                await asyncio.sleep(0.05)
                raise Boom

        async def adding() -> None:
            await began.wait()
            await add_library(db, "main", tmp_path / "pictures")

        results = await asyncio.gather(failing(), adding(), return_exceptions=True)
        assert isinstance(results[0], Boom) and results[1] is None
        assert [lib.name for lib in await list_libraries(db)] == ["main"]
        assert await db.execute_fetchall("SELECT name FROM persons") == []
    finally:
        await db.close()


async def _fill_up(conn: aiosqlite.Connection, spare_pages: int) -> None:
    pages = (await (await conn.execute("PRAGMA page_count")).fetchone())[0]  # type: ignore[index]
    await conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")


async def test_full_disk_inside_a_nested_transaction(tmp_path: Path) -> None:
    conn = await _table(tmp_path / "f.db")
    db = Database.of(conn)
    try:
        await conn.execute("CREATE TABLE b (k INTEGER PRIMARY KEY, blob BLOB)")
        await db.write("INSERT INTO b VALUES (1, zeroblob(1000))")
        await _fill_up(conn, 2)
        # The inner level fills the disk: DatabaseFullError comes out of it and out of the outer
        # level too, even when the outer level catches it and goes on; nothing of it is kept.
        caught: list[DatabaseFullError] = []
        with pytest.raises(DatabaseFullError, match="database or disk is full"):
            async with db.transaction():
                await conn.execute("INSERT INTO b VALUES (2, zeroblob(10))")
                try:
                    async with db.transaction():
                        await conn.executemany("INSERT INTO b VALUES (?, zeroblob(3000))",
                                               [(k,) for k in range(3, 50)])
                except DatabaseFullError as exc:
                    caught.append(exc)
                await conn.execute("INSERT INTO b VALUES (60, zeroblob(10))")
        assert len(caught) == 1
        assert not conn.in_transaction and not db.in_transaction()
        assert [r[0] for r in await conn.execute_fetchall("SELECT k FROM b")] == [1]
        # The same through write_many inside a transaction held, its error caught there.
        with pytest.raises(DatabaseFullError):
            async with db.transaction():
                with pytest.raises(DatabaseFullError):
                    await db.write_many("INSERT INTO b VALUES (?, zeroblob(3000))", [(k,) for k in range(3, 50)])
                await conn.execute("INSERT INTO b VALUES (61, zeroblob(10))")
        assert [r[0] for r in await conn.execute_fetchall("SELECT k FROM b")] == [1]
        await conn.execute("PRAGMA max_page_count = 1000000")
        await asyncio.wait_for(db.write("INSERT INTO b VALUES (2, zeroblob(10))"), 5)  # lock released
        assert [r[0] for r in await conn.execute_fetchall("SELECT k FROM b")] == [1, 2]
        assert (await conn.execute_fetchall("PRAGMA integrity_check")) == [("ok",)]
    finally:
        await conn.close()


def _draft(title: str, body: str) -> InsightDraft:
    return InsightDraft(title=title, body=body, tools=[], backend="b", server="s", model="m", failovers=[],
                        timings={})


async def test_insight_store_reports_a_full_disk_as_such(tmp_path: Path) -> None:
    """The insights store had its own BEGIN/ROLLBACK: on a full disk the ROLLBACK of a transaction
    SQLite had already ended replaced the cause with 'cannot rollback'."""
    db = await connect(tmp_path / "i.db")
    try:
        store = InsightStore(db)
        await store.add_insight("h1", _draft("first", "kept"))
        await _fill_up(db, 1)
        with pytest.raises(DatabaseFullError, match="database or disk is full"):
            await store.add_insight("h2", _draft("second", "x" * 200_000))
        assert not db.in_transaction
        assert [i["title"] for i in await store.list_insights("h1")] == ["first"]
        assert await store.list_insights("h2") == []
    finally:
        await db.close()


# ------------------------------------------------------------------ random nestings vs. a model

@dataclass
class Block:
    """A transaction: its items (values to insert, nested blocks) then, maybe, a failure.
    `caught`: the parent catches this block's failure and goes on."""
    items: list[int | Block] = field(default_factory=list)
    fails: bool = False
    caught: bool = True


def _blocks(depth: int) -> st.SearchStrategy[Block]:
    item: st.SearchStrategy[int | Block] = st.integers(0, 0)
    if depth > 0:
        item = st.one_of(st.integers(0, 0), _blocks(depth - 1))
    return st.builds(Block, st.lists(item, max_size=4), st.booleans(), st.booleans())


def _number(block: Block, counter: itertools.count[int]) -> Block:
    """Every inserted value unique, so the database says which inserts survived."""
    block.items = [next(counter) if isinstance(i, int) else _number(i, counter) for i in block.items]
    return block


def _model(block: Block) -> tuple[list[int], bool]:
    """What the block keeps if its parent commits, and whether its failure reaches the parent."""
    kept: list[int] = []
    for item in block.items:
        if isinstance(item, int):
            kept.append(item)
            continue
        inner, raised = _model(item)
        if raised and not item.caught:
            return [], True
        if not raised:
            kept += inner
    if block.fails:
        return [], True
    return kept, False


async def _run(db: Database, block: Block) -> None:
    async with db.transaction():
        for item in block.items:
            if isinstance(item, int):
                await db.write("INSERT INTO t (v) VALUES (?)", (item,))
                await asyncio.sleep(0)  # let the other programs try to write meanwhile
                continue
            try:
                await _run(db, item)
            except Boom:
                if not item.caught:
                    raise
        if block.fails:
            raise Boom


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_blocks(3), min_size=1, max_size=4))
def test_random_nestings_match_the_model(tmp_path: Path, programs: list[Block]) -> None:
    counter = itertools.count(1)
    programs = [_number(p, counter) for p in programs]
    expected = sorted(v for p in programs for v in (_model(p)[0] if not _model(p)[1] else []))

    async def main() -> list[int]:
        conn = await _table(tmp_path / "h.db")
        try:
            await conn.execute("DELETE FROM t")
            db = Database.of(conn)
            results = await asyncio.gather(*(_run(db, p) for p in programs), return_exceptions=True)
            for p, r in zip(programs, results, strict=True):
                assert (r is None) == (not _model(p)[1]), r
            assert not conn.in_transaction
            return await _values(conn)
        finally:
            await conn.close()

    assert asyncio.run(main()) == expected


def test_core_writes_only_inside_transactions(tmp_path: Path) -> None:
    """The core services' tests (files, faces, tags, users, sessions, libraries) run again with
    tests/write_guard.py, which fails the run when imageapi's code writes outside a transaction
    held by its task (a raw statement there would join, or commit, another task's transaction)."""
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.write_guard",
         "tests/test_core_services.py", "tests/test_tags.py", "tests/test_faces_people.py", "tests/test_auth_users.py"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert res.returncode == 0 and "writes outside a transaction" not in res.stderr, res.stdout[-3000:] + res.stderr
