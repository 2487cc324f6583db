"""The watcher in-process: ticks callable one by one, faces disabled, the drain's progress, and a
stop in the middle of a tick that leaves nothing half-stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

from imageapi.core.config import Config, load_config
from imageapi.core.db import connect
from imageapi.core.faces.backlog import FACES_STAGE, FacePasses, drain
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.libraries import add_library
from imageapi.core.pool import WorkerPool
from imageapi.core.watch import Watcher
from tests.apollo_standin import StandIn, insert_rows, make_photo


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2)
    yield p
    p.close()


@pytest.fixture()
def config(env_dirs: dict[str, Path]) -> Config:
    return load_config(environ={"IMAGEAPI_DATA_DIR": str(env_dirs["data"]), "WATCH_QUICK_INTERVAL_SECONDS": "1",
                                "WATCH_FULL_INTERVAL_SECONDS": "3600"})


@pytest.fixture()
async def db(config: Config) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(config.database_path)
    yield conn
    await conn.close()


async def photos(db: aiosqlite.Connection, root: Path, n: int, *, hashed: bool = True) -> None:
    for i in range(n):
        make_photo(root / f"p{i}.jpg", 700 + i)
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, [f"p{i}.jpg" for i in range(n)], hashed=hashed)


async def test_ticks_with_faces_disabled(db: aiosqlite.Connection, config: Config, pool: WorkerPool,
                                         env_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    root = env_dirs["tmp"] / "Pictures"
    make_photo(root / "a.jpg", 1)
    await add_library(db, "main", root)
    watcher = Watcher(db, config, pool, FaceSettings(base_url=None))
    assert watcher.passes is None
    with caplog.at_level("INFO", logger="imageapi.core.watch"):
        first = await watcher.scan_tick("quick")
        second = await watcher.face_tick()
    assert first.number == 1 and first.kind == "quick" and first.scan is not None and first.scan.added == 1
    assert "quick scan of 1 library" in first.line and "faces disabled" in first.line
    assert second.number == 2 and second.line == "tick 2 (faces): faces disabled" and not second.more_face_work
    assert [r.getMessage() for r in caplog.records if r.name == "imageapi.core.watch"] == [first.line, second.line]
    await watcher.aclose()


async def test_no_library_is_logged_not_fatal(db: aiosqlite.Connection, config: Config, pool: WorkerPool) -> None:
    with StandIn() as apollo:
        watcher = Watcher(db, config, pool, FaceSettings(base_url=apollo.url))
        result = await watcher.scan_tick("full")
        await watcher.aclose()
    assert "full scan skipped: no library configured" in result.line
    assert "faces: 0 candidates" in result.line and result.pending == 0


async def test_drain_progress_counts_the_backlog_up_front(db: aiosqlite.Connection, pool: WorkerPool,
                                                          env_dirs: dict[str, Path]) -> None:
    await photos(db, env_dirs["tmp"] / "Pictures", 7, hashed=False)
    calls: list[tuple[str, int, int | None]] = []
    with StandIn() as apollo:
        async with FacePasses(db, pool, FaceSettings(base_url=apollo.url, backlog_max_per_tick=3)) as passes:
            report = await drain(passes, progress=lambda stage, done, total: calls.append((stage, done, total)))
    faces = [c for c in calls if c[0] == FACES_STAGE]
    assert faces[0] == (FACES_STAGE, 0, 7)                    # 7 photos not even hashed yet
    assert faces[-1] == (FACES_STAGE, 7, 7) and [c[1] for c in faces] == sorted(c[1] for c in faces)
    assert report.hashed == 7 and report.detected == 7 and report.remaining == 0 and report.ticks >= 3
    hashing = [c for c in calls if c[0] == "hash"]
    assert hashing and all(c[2] for c in hashing)             # no empty "0/0" hashing bar per tick


async def test_stop_mid_tick_stores_nothing_half_and_the_next_run_finishes(
        db: aiosqlite.Connection, config: Config, pool: WorkerPool, env_dirs: dict[str, Path]) -> None:
    await photos(db, env_dirs["tmp"] / "Pictures", 6)
    with StandIn(delay=1.0) as slow:
        watcher = Watcher(db, config, pool, FaceSettings(base_url=slow.url, detect_concurrency=2))
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        deadline = time.monotonic() + 10
        while slow.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert slow.in_flight > 0
        t = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - t < 2                       # the 1 s answers were not waited for
        await watcher.aclose()
        async with db.execute("SELECT (SELECT COUNT(*) FROM face_scans), (SELECT COUNT(*) FROM faces), "
                              "(SELECT COUNT(*) FROM face_failures)") as cur:
            assert tuple(await cur.fetchone()) == (0, 0, 0)  # type: ignore[arg-type]
        assert not db.in_transaction
        slow.delay = 0.0
        again = Watcher(db, config, pool, FaceSettings(base_url=slow.url))
        result = await again.face_tick()
        await again.aclose()
    assert result.faces is not None and result.faces.faces.detected == 6 and result.pending == 0
