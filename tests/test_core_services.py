"""The core services the server's handlers and the CLI's commands call (imageapi.core.status,
the faces, tags and thumbnail-state services), tested here, without HTTP: the rules are theirs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from imageapi.core import search, status, tags, thumb_state
from imageapi.core.config import load_config
from imageapi.core.database import transaction
from imageapi.core.db import Connection, connect, utcnow
from imageapi.core.errors import MediaError, NotFoundError, UnsupportedMediaError, UsageError
from imageapi.core.faces import people
from imageapi.core.faces.apollo import DetectedFace, Detection
from imageapi.core.faces.store import insert_detection
from imageapi.core.ffmpeg_caps import thumb_tools
from imageapi.core.hashing import hash_file
from imageapi.core.libraries import Library, add_library, thumbnail_path
from imageapi.core.maintenance import current_tools, make_missing_thumbnails
from imageapi.core.media import ThumbResult
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import files as files_repo
from imageapi.core.thumbs import make_thumbnail
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
    assert await status.backlog(db) == status.Backlog(0, 0, 0, 0, 0, 0, 0)
    assert await status.file_counts(db) == {} and await status.last_scans(db) == []
    a, a_ids = await photos(db, tmp_path / "a", "alpha", 3, hashed=False)
    b, _ = await photos(db, tmp_path / "b", "beta", 2, first_seed=10)
    await photos(db, tmp_path / "c", "gamma", 0)
    await db.execute("UPDATE files SET thumb_state = 'failed' WHERE id = ?", (a_ids[0],))
    await db.execute("UPDATE files SET thumb_state = 'done', error = 'hash: unreadable' WHERE id = ?", (a_ids[1],))
    async with db.execute("SELECT id FROM files WHERE library_id = ? ORDER BY id", (b.id,)) as cur:
        b_ids = [r[0] for r in await cur.fetchall()]
    # A hashed picture with its thumbnail is due its perceptual hash; one with GPS, its place.
    await db.execute("UPDATE files SET thumb_state = 'done', gps_lat = 38.72, gps_lon = -9.14 WHERE id = ?",
                     (b_ids[0],))
    # Every file row starts with thumb_state 'pending', and in the search index's queue.
    assert await status.backlog(db) == status.Backlog(
        files=5, unhashed=3, thumbnails_pending=3, file_errors=1, perceptual_hashes_pending=1,
        places_pending=1, search_pending=5)
    await search.refresh(db)
    await db.execute("INSERT INTO perceptual_hashes (content_hash, error, computed_at) "
                     "SELECT content_hash, 'undecodable', 'x' FROM files WHERE id = ?", (b_ids[0],))
    backlog = await status.backlog(db)
    assert (backlog.perceptual_hashes_pending, backlog.search_pending) == (0, 0)
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


# -- faces: drawing, binding, deleting (imageapi.core.faces.people) ------------------------------------

async def content(db: Connection, tmp_path: Path, seed: int = 0) -> str:
    _, [file_id] = await photos(db, tmp_path / f"f{seed}", f"lib{seed}", 1, first_seed=seed)
    async with db.execute("SELECT content_hash FROM files WHERE id = ?", (file_id,)) as cur:
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def detect(db: Connection, content_hash: str, *boxes: tuple[float, float, float, float]) -> bool:
    async with transaction(db):
        return await insert_detection(db, content_hash, Detection(
            "buffalo_l", [DetectedFace(b, 0.9, (1.0, float(i), 0.5)) for i, b in enumerate(boxes)]), utcnow())


async def test_drawn_face_binds_under_the_one_face_per_person_rule(db: Connection, tmp_path: Path) -> None:
    h = await content(db, tmp_path)
    assert await people.content_faces(db, h) == people.ContentFaces(False, [])
    assert await detect(db, h, (0.1, 0.1, 0.2, 0.2), (0.5, 0.5, 0.2, 0.2))
    ann = await people.create_person(db, "Ann")
    first, second = (await people.content_faces(db, h)).faces
    async with transaction(db):  # an automatic binding of Ann in this photo
        await db.execute("UPDATE faces SET person_id = ?, bound_by = 'auto', bound_at = ? WHERE id = ?",
                         (ann.id, utcnow(), first.id))
    drawn = await people.draw_face(db, h, (0.0, 0.6, 0.4, 0.4), "ann")
    assert (drawn.person_id, drawn.person_name, drawn.bound_by, drawn.model) == (ann.id, "Ann", "manual", "manual")
    assert (drawn.x, drawn.y, drawn.w, drawn.h, drawn.score) == (0.0, 0.6, 0.4, 0.4, 1.0)
    found = await people.content_faces(db, h)
    assert found.scanned and [f.id for f in found.faces] == [first.id, second.id, drawn.id]
    # The drawn box won: Ann is in the photo once.
    assert [(f.person_id, f.bound_by) for f in found.faces] == [(None, None), (None, None), (ann.id, "manual")]
    await people.bind_face(db, second.id, "Ann")
    assert [f.person_id for f in (await people.content_faces(db, h)).faces] == [None, ann.id, None]
    await people.bind_face(db, second.id, None)
    assert (await people.face_view(db, second.id)).person_id is None


async def test_drawing_a_face_refuses_what_the_handler_refused(db: Connection, tmp_path: Path) -> None:
    h = await content(db, tmp_path)
    with pytest.raises(UsageError, match="not hashed yet"):
        await people.draw_face(db, None, (0.1, 0.1, 0.2, 0.2), what="2020/a.jpg")
    for bad in [(0.9, 0.0, 0.5, 0.1), (0.0, 0.0, 0.0, 0.5), (-0.1, 0.0, 0.2, 0.2), (0.0, 0.0, 1.5, 0.2)]:
        with pytest.raises(UsageError, match="box"):
            await people.draw_face(db, h, bad)
    with pytest.raises(NotFoundError):   # an unknown person: no face is left behind either
        await people.draw_face(db, h, (0.1, 0.1, 0.2, 0.2), "Nobody")
    assert (await people.content_faces(db, h)).faces == []
    assert await people.content_faces(db, None) == people.ContentFaces(False, [])
    drawn = await people.draw_face(db, h, (0.0, 0.0, 1.0, 1.0))
    assert drawn.person_id is None and drawn.bound_by is None
    await people.delete_face(db, drawn.id)
    with pytest.raises(NotFoundError):
        await people.delete_face(db, drawn.id)
    with pytest.raises(NotFoundError):
        await people.face_view(db, drawn.id)
    with pytest.raises(NotFoundError):
        await people.bind_face(db, drawn.id, "Ann")
    with pytest.raises(NotFoundError):
        await people.person_by_id(db, 424242)
    ann = await people.create_person(db, "Ann")
    assert await people.person_by_id(db, ann.id) == ann


async def test_a_face_drawn_before_detection_does_not_block_it(db: Connection, tmp_path: Path) -> None:
    """A box drawn on a photo Apollo has not seen yet took position 0; detection then numbered
    its faces from 0 too, and the unique (content, position) refused the whole detection, every
    time it was tried."""
    h = await content(db, tmp_path)
    ann = await people.create_person(db, "Ann")
    drawn = await people.draw_face(db, h, (0.0, 0.0, 0.3, 0.3), "Ann")
    assert await detect(db, h, (0.1, 0.1, 0.2, 0.2), (0.5, 0.5, 0.2, 0.2))
    found = await people.content_faces(db, h)
    assert found.scanned and len(found.faces) == 3 and found.faces[0].id == drawn.id
    assert [f.person_id for f in found.faces] == [ann.id, None, None]
    assert not await detect(db, h, (0.1, 0.1, 0.2, 0.2))   # scanned once: a second answer is ignored


# -- tags: tagging files hashes them first (imageapi.core.tags) -----------------------------------------

@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(1)
    yield p
    p.close()


async def file_hashes(db: Connection, ids: list[int]) -> list[str | None]:
    out = []
    for file_id in ids:
        async with db.execute("SELECT content_hash FROM files WHERE id = ?", (file_id,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        out.append(row[0])
    return out


async def test_tagging_hashes_unhashed_files_and_records_the_hash(db: Connection, pool: WorkerPool,
                                                                  tmp_path: Path) -> None:
    lib, ids = await photos(db, tmp_path / "a", "alpha", 3, hashed=False)
    done = await tags.change_tags(db, pool, lib, ["p0.jpg", "p1.jpg", "p0.jpg"], ["Beach", " beach ", "Sea"],
                                  add=True)
    assert done.changed == 4 and done.tags == {"p0.jpg": ["Beach", "Sea"], "p1.jpg": ["Beach", "Sea"]}
    h0, h1, h2 = await file_hashes(db, ids)
    assert h0 == hash_file(tmp_path / "a" / "p0.jpg") and h1 == hash_file(tmp_path / "a" / "p1.jpg") and h2 is None
    assert await tags.tags_for_hashes(db, [h0]) == {h0: ["Beach", "Sea"]}
    # A hashed file is not hashed again; removing is counted per pair.
    done = await tags.change_tags(db, pool, lib, ["p1.jpg"], ["BEACH"], add=False)
    assert done.changed == 1 and done.tags == {"p1.jpg": ["Sea"]}


async def test_tagging_a_file_that_cannot_be_hashed_records_nothing(db: Connection, pool: WorkerPool,
                                                                    tmp_path: Path) -> None:
    lib, ids = await photos(db, tmp_path / "a", "alpha", 2, hashed=False)
    (tmp_path / "a" / "p1.jpg").unlink()
    with pytest.raises(MediaError, match="cannot hash 'p1.jpg'"):
        await tags.change_tags(db, pool, lib, ["p0.jpg", "p1.jpg"], ["Beach"], add=True)
    assert await file_hashes(db, ids) == [None, None] and await tags.list_tags(db) == []
    with pytest.raises(NotFoundError):
        await tags.change_tags(db, pool, lib, ["nope.jpg"], ["Beach"], add=True)
    with pytest.raises(UsageError):
        await tags.change_tags(db, pool, lib, ["p0.jpg"], ["  "], add=True)


async def test_a_hash_written_meanwhile_is_kept(db: Connection, pool: WorkerPool, tmp_path: Path) -> None:
    lib, [file_id] = await photos(db, tmp_path / "a", "alpha", 1, hashed=False)
    async with transaction(db):
        await files_repo.set_missing_hashes(db, [("a" * 64, file_id)])
        await files_repo.set_missing_hashes(db, [("b" * 64, file_id)])
    assert await file_hashes(db, [file_id]) == ["a" * 64]


# -- thumbnails made on demand record what the thumbnail pass records (imageapi.core.thumb_state) -------

async def render_here(src: str, kind: str, dest: str, box: int, duration: float | None) -> ThumbResult:
    """The server's renderer without its pool: the same make_thumbnail, in a thread."""
    return await asyncio.to_thread(make_thumbnail, Path(src), kind, Path(dest), box, duration=duration)


async def thumb_row(db: Connection, lib: Library, rel: str) -> tuple[str, str | None, str | None]:
    async with db.execute("SELECT thumb_state, thumb_reason, thumb_tool FROM files WHERE library_id = ? "
                          "AND rel_path = ?", (lib.id, rel)) as cur:
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def test_on_demand_thumbnails_record_the_tools_like_the_pass(db: Connection, pool: WorkerPool,
                                                                   tmp_path: Path) -> None:
    """The server recorded state and reason only: a video it found unsupported had no tools
    recorded, so a newer ffmpeg never retried it (maintenance.retry_new_tools skips rows without
    tools), while the same video found unsupported by the thumbnail pass was retried."""
    root = tmp_path / "lib"
    root.mkdir()
    for name in ("v0.mp4", "v1.mp4"):
        (root / name).write_bytes(b"not a video at all" * 64)
    make_photo(root / "p0.jpg", 1)
    (root / "notes.txt").write_text("hello")
    lib = await add_library(db, "alpha", root)
    await insert_rows(db, lib.id, root, ["v0.mp4", "v1.mp4", "p0.jpg", "notes.txt"])
    cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": "s" * 32}, cwd=tmp_path)
    dest = thumbnail_path(cfg, lib.name, "v0.mp4")
    with pytest.raises(UnsupportedMediaError):
        await thumb_state.make_on_demand(db, lib, "v0.mp4", str(dest), 64, render_here)
    await make_missing_thumbnails(db, cfg, pool, library_id=lib.id)       # the pass makes v1's
    on_demand, by_pass = await thumb_row(db, lib, "v0.mp4"), await thumb_row(db, lib, "v1.mp4")
    assert on_demand[0] == by_pass[0] == "unsupported" and on_demand[1]
    assert on_demand[2] == by_pass[2] == thumb_tools("video") is not None
    assert "video" in await current_tools(db)
    # Known to have none: not rendered again.
    calls: list[str] = []

    async def counting(*args: object) -> ThumbResult:
        calls.append(str(args[0]))
        return await render_here(*args)  # type: ignore[arg-type]

    with pytest.raises(UnsupportedMediaError, match="has no thumbnail"):
        await thumb_state.make_on_demand(db, lib, "v0.mp4", str(dest), 64, counting)
    with pytest.raises(UnsupportedMediaError, match="has no picture"):
        await thumb_state.make_on_demand(db, lib, "notes.txt", str(tmp_path / "n.jpg"), 64, counting)
    with pytest.raises(NotFoundError):
        await thumb_state.make_on_demand(db, lib, "nope.jpg", str(tmp_path / "x.jpg"), 64, counting)
    assert calls == []
    # A photo: made, recorded as done; a write that fails is recorded as failed (and retried later).
    photo_dest = tmp_path / "elsewhere" / "p0.jpg"
    await thumb_state.make_on_demand(db, lib, "p0.jpg", str(photo_dest), 64, counting)
    assert photo_dest.is_file() and await thumb_row(db, lib, "p0.jpg") == ("done", None, None)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(MediaError, match="cannot make a thumbnail"):
        await thumb_state.make_on_demand(db, lib, "p0.jpg", str(tmp_path / "a_file" / "p0.jpg"), 64, counting)
    state, reason, _ = await thumb_row(db, lib, "p0.jpg")
    assert state == "failed" and reason and "cannot write thumbnail" in reason
    assert len(calls) == 2
