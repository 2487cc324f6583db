"""The core services the server's handlers and the CLI's commands call (imageapi.core.status,
the faces, tags and thumbnail-state services), tested here, without HTTP: the rules are theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imageapi.core import status
from imageapi.core.db import Connection, connect, utcnow
from imageapi.core.libraries import Library, add_library
from tests.apollo_standin import insert_rows, make_photo


@pytest.fixture()
async def db(tmp_path: Path) -> AsyncIterator[Connection]:
    conn = await connect(tmp_path / "imageapi.db")
    yield conn
    await conn.close()


async def photos(db: Connection, root: Path, name: str, count: int, *, hashed: bool = True,
                 first_seed: int = 0) -> tuple[Library, list[int]]:
    root.mkdir(parents=True, exist_ok=True)
    rels = []
    for i in range(count):
        make_photo(root / f"p{i}.jpg", first_seed + i)
        rels.append(f"p{i}.jpg")
    lib = await add_library(db, name, root)
    return lib, await insert_rows(db, lib.id, root, rels, hashed=hashed)


async def test_backlog_and_library_counts(db: Connection, tmp_path: Path) -> None:
    assert await status.backlog(db) == status.Backlog(0, 0, 0, 0)
    assert await status.file_counts(db) == {} and await status.last_scans(db) == []
    a, a_ids = await photos(db, tmp_path / "a", "alpha", 3, hashed=False)
    b, _ = await photos(db, tmp_path / "b", "beta", 2, first_seed=10)
    await photos(db, tmp_path / "c", "gamma", 0)
    await db.execute("UPDATE files SET thumb_state = 'failed' WHERE id = ?", (a_ids[0],))
    await db.execute("UPDATE files SET thumb_state = 'done', error = 'hash: unreadable' WHERE id = ?", (a_ids[1],))
    # Every file row starts with thumb_state 'pending'.
    assert await status.backlog(db) == status.Backlog(files=5, unhashed=3, thumbnails_pending=4, file_errors=1)
    assert await status.file_counts(db) == {a.id: 3, b.id: 2}
    counted = await status.libraries_with_counts(db)
    assert [(c.library.name, c.files) for c in counted] == [("alpha", 3), ("beta", 2), ("gamma", 0)]


async def test_last_scans_are_the_newest_per_library_and_mode(db: Connection, tmp_path: Path) -> None:
    a, _ = await photos(db, tmp_path / "a", "alpha", 0)
    b, _ = await photos(db, tmp_path / "b", "beta", 0)
    for lib, mode, st, added in [(b, "full", "done", 1), (b, "full", "failed", 2), (a, "quick", "done", 3),
                                 (a, "full", "running", 4), (a, "quick", "interrupted", 5)]:
        await db.execute("INSERT INTO scans (library_id, mode, started_at, status, added) VALUES (?, ?, ?, ?, ?)",
                         (lib.id, mode, utcnow(), st, added))
    got = [(s.library, s.mode, s.status, s.added) for s in await status.last_scans(db)]
    assert got == [("alpha", "full", "running", 4), ("alpha", "quick", "interrupted", 5), ("beta", "full", "failed", 2)]
