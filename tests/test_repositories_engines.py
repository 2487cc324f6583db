"""The services over their repositories give the same answers on SQLite and on PostgreSQL: faces
and people, the face backlog's counts, tags, the photo listing, the timeline, memories, video
previews and HLS failures, libraries. Each test runs once per engine against a fresh database (a
throwaway PostgreSQL database from tests/pg.py; skipped where there is no PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from imageapi.core import hls, previews
from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection, connect, utcnow
from imageapi.core.errors import MediaError, UsageError
from imageapi.core.faces import people
from imageapi.core.faces.apollo import DetectedFace, Detection
from imageapi.core.faces.store import (
    count_pending,
    face_status,
    insert_detection,
    list_unscanned_candidates,
    record_failure,
    retry_failed,
)
from imageapi.core.libraries import Library, add_library, list_libraries, remove_library
from imageapi.core.listing import PhotoQuery, list_photos
from imageapi.core.memories import memories
from imageapi.core.postgres.url import DatabaseSetting, parse_postgres_url
from imageapi.core.repositories import insights as insights_repo
from imageapi.core.tags import add_tags, list_tags, remove_tags
from imageapi.core.timeline import buckets, month_items


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | DatabaseSetting:
    if request.param == "sqlite":
        return tmp_path / "index.db"
    return parse_postgres_url(request.getfixturevalue("pg_url"))


@pytest.fixture()
async def db(target: Path | DatabaseSetting) -> AsyncIterator[Connection]:
    conn = await connect(target)
    try:
        yield conn
    finally:
        await conn.close()


def _config(tmp_path: Path, **kw: object) -> Config:
    data = tmp_path / "data"
    return Config(data_dir=data, database_path=data / "index.db", thumbnails=data / "thumbs",
                  video_path=data / "video", gifs_directory=data / "gifs",
                  preview_clips_directory=data / "clips", **kw)  # type: ignore[arg-type]


async def _library(db: Connection, tmp_path: Path) -> Library:
    root = tmp_path / "photos"
    root.mkdir(exist_ok=True)
    return await add_library(db, "main", root)


async def _file(db: Connection, lib: Library, rel: str, *, kind: str = "image", content_hash: str | None = None,
                taken_at: str | None = None, size: int = 100, thumb_state: str = "pending") -> int:
    now = utcnow()
    async with transaction(db):
        cur = await db.execute(
            "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, taken_at, "
            "thumb_state, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (lib.id, rel, rel.rpartition("/")[0], kind, size, 1_000, content_hash, taken_at, thumb_state, now, now))
        row = await cur.fetchone()
    return int(row[0])


def _face(x: float, direction: int) -> DetectedFace:
    embedding = tuple(1.0 if i == direction else 0.0 for i in range(8))
    return DetectedFace((x, 0.1, 0.2, 0.2), 0.9, embedding)


async def test_faces_people_and_backlog_counts(db: Connection, tmp_path: Path) -> None:
    lib = await _library(db, tmp_path)
    await _file(db, lib, "a.jpg", content_hash="h1")
    await _file(db, lib, "b.jpg", content_hash="h2")
    await _file(db, lib, "copy-of-a.jpg", content_hash="h1")
    await _file(db, lib, "c.jpg")                                  # not hashed yet
    await _file(db, lib, "v.mp4", kind="video", content_hash="hv")  # never sent to detection

    st = await face_status(db)
    assert (st.files, st.hashed, st.unhashed_images, st.scanned, st.pending, st.failed) == (5, 4, 1, 0, 2, 0)
    assert [c.content_hash for c in await list_unscanned_candidates(db, lib.id, 10)] == ["h1", "h2"]

    async with transaction(db):
        assert await insert_detection(db, "h1", Detection("m", [_face(0.1, 0)]), utcnow())
        assert not await insert_detection(db, "h1", Detection("m", [_face(0.1, 0)]), utcnow())
        await record_failure(db, "h2", "no answer", permanent=False)
    st = await face_status(db, lib.id)
    assert (st.scanned, st.pending, st.backing_off, st.failed, st.faces, st.people) == (1, 0, 1, 0, 1, 0)
    assert await count_pending(db) == 0
    async with transaction(db):
        await record_failure(db, "h2", "broken", permanent=True)
    assert (await face_status(db)).failed == 1
    assert await retry_failed(db) == 1
    assert await count_pending(db) == 1

    # A person tag on a photo with one face binds it (bootstrap); the people list counts it. Names
    # match tags and lookups case aside (ASCII), and the list is by name case aside.
    await people.create_person(db, "alice")
    await people.create_person(db, "Bob")
    await add_tags(db, ["h1"], ["ALICE"])
    assert await people.autobind_sweep(db, 0.5, incremental=True) == 1
    assert await people.autobind_sweep(db, 0.5, incremental=True) == 0
    summary = [(p.name, p.faces, p.photos, p.bound_by) for p in await people.list_people(db)]
    assert summary == [("alice", 1, 1, {"bootstrap": 1}), ("Bob", 0, 0, {})]
    assert await insights_repo.face_names(db, "h1") == ["alice"]

    with pytest.raises(UsageError, match="already exists"):
        await people.create_person(db, "ALICE")
    with pytest.raises(UsageError, match="already exists"):
        await people.rename_person(db, "bob", "Alice")
    assert (await people.get_person(db, "BOB")).name == "Bob"
    await people.rename_person(db, "Alice", "ALICE")
    assert [p.name for p in await people.list_people(db)] == ["ALICE", "Bob"]


async def test_drawn_faces_and_merging(db: Connection, tmp_path: Path) -> None:
    lib = await _library(db, tmp_path)
    await _file(db, lib, "a.jpg", content_hash="h1")
    async with transaction(db):
        await insert_detection(db, "h1", Detection("m", [_face(0.1, 0)]), utcnow())
    await people.create_person(db, "Alice")
    await people.create_person(db, "Bob")
    await add_tags(db, ["h1"], ["Alice"])
    assert await people.autobind_sweep(db, 0.5, incremental=False) == 1
    drawn = await people.draw_face(db, "h1", (0.5, 0.5, 0.2, 0.2), "Bob")
    assert [(f.person_name, f.bound_by) for f in (await people.content_faces(db, "h1")).faces] == [
        ("Alice", "bootstrap"), ("Bob", "manual")]
    assert sorted(n or "" for n in await insights_repo.face_names(db, "h1")) == ["Alice", "Bob"]
    merged = await people.merge_people(db, "Bob", "Alice")
    assert (merged.moved, merged.unbound) == (0, 1)   # Alice already has her face in that photo
    assert (await people.face_view(db, drawn.id)).person_id is None


async def test_tags_listing_timeline_and_memories(db: Connection, tmp_path: Path) -> None:
    lib = await _library(db, tmp_path)
    await _file(db, lib, "2020/june.jpg", content_hash="j20", taken_at="2020-06-15T10:00:00")
    await _file(db, lib, "2021/june.jpg", content_hash="j21", taken_at="2021-06-14T09:00:00")
    await _file(db, lib, "2021/sub/july.jpg", content_hash="j21b", taken_at="2021-07-01T09:00:00")
    await _file(db, lib, "undated.jpg", content_hash="u")

    assert await add_tags(db, ["j20", "j21"], ["Été"]) == 2
    assert await add_tags(db, ["j21"], ["été", "Sea"]) == 1
    assert await list_tags(db) == [{"name": "Sea", "count": 1}, {"name": "Été", "count": 2}]
    assert await remove_tags(db, ["j21"], ["SEA"]) == 1
    assert [t["name"] for t in await list_tags(db)] == ["Été"]

    config = _config(tmp_path)
    page = await list_photos(db, config, lib, PhotoQuery(recursive=True, limit=2))
    assert [i["path"] for i in page.items] == ["2021/sub/july.jpg", "2021/june.jpg"]
    rest = await list_photos(db, config, lib, PhotoQuery(recursive=True, limit=2, cursor=page.next_cursor))
    assert [i["path"] for i in rest.items] == ["2020/june.jpg", "undated.jpg"] and rest.next_cursor is None
    tagged = await list_photos(db, config, lib, PhotoQuery(recursive=True, tag="E\u0301TE\u0301", sort="name_asc"))
    assert [i["path"] for i in tagged.items] == ["2020/june.jpg", "2021/june.jpg"]
    root = await list_photos(db, config, lib, PhotoQuery())
    assert [i["path"] for i in root.items] == ["undated.jpg"]
    assert root.folders == [{"name": "2020", "path": "2020", "count": 1}, {"name": "2021", "path": "2021", "count": 2}]

    months = await buckets(db, [lib])
    assert [(m["month"], m["count"]) for m in months] == [("2021-07", 1), ("2021-06", 1), ("2020-06", 1),
                                                          ("undated", 1)]
    assert [i["path"] for i in await month_items(db, [lib], "2021-06")] == ["2021/june.jpg"]
    assert [i["path"] for i in await month_items(db, [lib], "undated")] == ["undated.jpg"]

    week = await memories(db, config, [lib], "week", date(2022, 6, 15))
    assert [(y.year, [i["path"] for i in y.items]) for y in week] == [(2021, ["2021/june.jpg"]),
                                                                      (2020, ["2020/june.jpg"])]
    june = await memories(db, _config(tmp_path, excluded_dirs=("2020",)), [lib], "month", date(2022, 6, 1))
    assert [y.year for y in june] == [2021]


async def test_previews_hls_and_libraries(db: Connection, tmp_path: Path) -> None:
    lib = await _library(db, tmp_path)
    a = await _file(db, lib, "clips/a.mp4", kind="video", taken_at="2021-01-01T00:00:00")
    await _file(db, lib, "clips/b.mp4", kind="video", taken_at="2022-01-01T00:00:00")
    await _file(db, lib, "photo.jpg")

    due = await previews.due_previews(db)
    assert [c.rel for c in due] == ["clips/a.mp4", "clips/b.mp4"] and due[0].library == lib
    await previews.record_done(db, due[0])
    await previews.record_failed(db, due[1], "no video stream")
    assert [c.rel for c in await previews.due_previews(db)] == []
    status = await previews.preview_status(db, [lib.id])
    assert (status.videos, status.done, status.failed, status.due) == (2, 1, 1, 0)
    wall = await previews.list_wall(db, lib, limit=1)
    assert [(i["path"], i["preview"]["state"]) for i in wall.items] == [("clips/b.mp4", "failed")]
    more = await previews.list_wall(db, lib, limit=1, cursor=wall.next_cursor)
    assert [(i["path"], i["preview"]["state"]) for i in more.items] == [("clips/a.mp4", "done")]
    assert await previews.retry_failed(db, [lib.id]) == 1
    async with transaction(db):  # a new version of a is due again
        await db.execute("UPDATE files SET size = 200 WHERE id = ?", (a,))
    assert [c.rel for c in await previews.due_previews(db, library_ids=[lib.id])] == ["clips/a.mp4", "clips/b.mp4"]

    await hls.record_failure(db, "main", "clips/a.mp4", "k1", MediaError("cannot decode"))
    targets = await hls.indexed_videos(db, lib, "clips")
    assert [t.rel for t in targets] == ["clips/a.mp4", "clips/b.mp4"]
    failure = hls.recorded_failure(targets[0].row, "k1")
    assert isinstance(failure, MediaError) and failure.message == "cannot decode"
    await hls.clear_failures(db, [t.id for t in targets])
    assert all(t.hls_source is None for t in await hls.indexed_videos(db, lib))

    assert [x.name for x in await list_libraries(db)] == ["main"]
    await remove_library(db, "main")
    assert await list_libraries(db) == []
