"""The face backlog against a real stand-in Apollo: candidates, one call per hash, concurrency,
caps, failures and backoff, the down-service short-cut, what is sent."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

from imageapi.core.database import transaction, write
from imageapi.core.db import connect
from imageapi.core.faces.apollo import ApolloClient
from imageapi.core.faces.backlog import (
    DOWN_AFTER,
    FacePasses,
    ServiceState,
    backfill_unhashed_backlog,
    process_face_backlog,
)
from imageapi.core.faces.embeddings import from_blob
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.faces.store import (
    backoff_seconds,
    count_pending,
    face_status,
    insert_detection,
    list_unscanned_candidates,
    now_utc,
    record_failure,
    retry_failed,
)
from imageapi.core.libraries import Library, add_library
from imageapi.core.pool import WorkerPool
from tests.apollo_standin import StandIn, closed_port_url, default_faces, insert_rows, make_photo


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2)
    yield p
    p.close()


@pytest.fixture()
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(tmp_path / "imageapi.db")
    yield conn
    await conn.close()


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    with StandIn() as s:
        yield s


async def photo_library(db: aiosqlite.Connection, root: Path, n: int, name: str = "main",
                        seed0: int = 0) -> tuple[Library, list[str]]:
    rels = [f"p{seed0 + i:04d}.jpg" for i in range(n)]
    for i, rel in enumerate(rels):
        make_photo(root / rel, seed0 + i)
    lib = await add_library(db, name, root)
    await insert_rows(db, lib.id, root, rels)
    return lib, rels


async def hashes_of(db: aiosqlite.Connection, library_id: int | None = None) -> set[str]:
    sql = "SELECT content_hash FROM files WHERE content_hash IS NOT NULL"
    params: tuple[object, ...] = ()
    if library_id is not None:
        sql += " AND library_id = ?"
        params = (library_id,)
    async with db.execute(sql, params) as cur:
        return {r[0] for r in await cur.fetchall()}


def settings(url: str, **kw: object) -> FaceSettings:
    return FaceSettings(base_url=url, **kw)  # type: ignore[arg-type]


async def tick(db: aiosqlite.Connection, pool: WorkerPool, st: FaceSettings, **kw: object):  # type: ignore[no-untyped-def]
    assert st.base_url
    async with ApolloClient(st.base_url, timeout=st.detect_timeout, concurrency=st.detect_concurrency) as client:
        return await process_face_backlog(db, pool, client, st, **kw)  # type: ignore[arg-type]


async def test_list_unscanned_candidates_contract(db: aiosqlite.Connection, tmp_path: Path) -> None:
    """Only hashed, unscanned, in-library image rows come back, one per distinct hash: scanned rows,
    unhashed rows, other libraries' rows, videos and failed content do not."""
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    lib_a, rels = await photo_library(db, root_a, 6)
    shutil.copy(root_a / rels[0], root_a / "dup_of_0.jpg")          # same content, second row
    make_photo(root_a / "unhashed.jpg", 100)
    (root_a / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    await insert_rows(db, lib_a.id, root_a, ["dup_of_0.jpg", "clip.mp4"])
    await insert_rows(db, lib_a.id, root_a, ["unhashed.jpg"], hashed=False)
    lib_b, _ = await photo_library(db, root_b, 2, name="other", seed0=50)

    async with db.execute("SELECT rel_path, content_hash FROM files WHERE library_id = ?", (lib_a.id,)) as cur:
        by_rel = {r[0]: r[1] for r in await cur.fetchall()}
    scanned, permanent, backing_off = by_rel[rels[1]], by_rel[rels[2]], by_rel[rels[3]]
    async with transaction(db):
        from imageapi.core.faces.apollo import Detection
        await insert_detection(db, scanned, Detection("m", []), "2026-01-01T00:00:00.000000Z")
        await record_failure(db, permanent, "HTTP 400", permanent=True)
        await record_failure(db, backing_off, "HTTP 500", permanent=False)

    got = await list_unscanned_candidates(db, lib_a.id, 100)
    assert sorted(c.content_hash for c in got) == sorted({by_rel[rels[0]], by_rel[rels[4]], by_rel[rels[5]]})
    assert len(got) == len({c.content_hash for c in got}) == 3
    first = next(c for c in got if c.content_hash == by_rel[rels[0]])
    assert first.path == str(root_a / rels[0]) and first.kind == "image"  # the lowest id holds it
    assert all(c.library_id == lib_a.id for c in got)
    assert [c.file_id for c in got] == sorted(c.file_id for c in got)    # oldest first
    assert len(await list_unscanned_candidates(db, lib_a.id, 2)) == 2
    assert await list_unscanned_candidates(db, lib_a.id, 0) == []
    # The transient failure comes back once due.
    later = now_utc() + timedelta(seconds=backoff_seconds(1) + 1)
    assert backing_off in {c.content_hash for c in await list_unscanned_candidates(db, lib_a.id, 100, later)}
    assert {c.content_hash for c in await list_unscanned_candidates(db, lib_b.id, 100)} == await hashes_of(db, lib_b.id)


async def test_one_request_per_distinct_hash_and_stored_with_scan_mark(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    lib, rels = await photo_library(db, root, 12)
    for i in range(3):  # duplicates in the same library and in another one
        shutil.copy(root / rels[i], root / f"copy{i}.jpg")
    await insert_rows(db, lib.id, root, [f"copy{i}.jpg" for i in range(3)])
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(root / rels[0], other / "same.jpg")
    lib2 = await add_library(db, "other", other)
    await insert_rows(db, lib2.id, other, ["same.jpg"])

    report = await tick(db, pool, settings(standin.url))
    hashes = await hashes_of(db)
    assert len(hashes) == 12
    assert set(standin.requests) == hashes and max(standin.requests.values()) == 1
    assert report.candidates == report.sent == report.detected == 12
    expected = {h: len(default_faces(h)) for h in hashes}
    assert report.faces_found == sum(expected.values())
    async with db.execute("SELECT content_hash, face_count, model FROM face_scans") as cur:
        marks = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    assert {h: n for h, (n, _) in marks.items()} == expected   # zero-face photos are marked too
    assert 0 in expected.values()
    async with db.execute("SELECT content_hash, COUNT(*) FROM faces GROUP BY content_hash") as cur:
        assert dict(await cur.fetchall()) == {h: n for h, n in expected.items() if n}
    h = next(h for h, n in expected.items() if n)
    async with db.execute("SELECT embedding, x, y, w, h, score FROM faces WHERE content_hash = ? AND idx = 0",
                          (h,)) as cur:
        row = await cur.fetchone()
    assert row is not None
    want = default_faces(h)[0]
    assert list(from_blob(row[0])) == pytest.approx(want["embedding"], rel=1e-6)
    assert [row[1], row[2], row[3], row[4]] == pytest.approx(want["bbox"]) and row[5] == pytest.approx(0.9)
    # Nothing left: the next tick sends nothing.
    again = await tick(db, pool, settings(standin.url))
    assert again.candidates == 0 and standin.total == 12
    st = await face_status(db)
    assert (st.files, st.hashed, st.scanned, st.pending, st.backing_off, st.failed) == (16, 16, 12, 0, 0, 0)


async def test_concurrency_bound_and_per_tick_cap(db: aiosqlite.Connection, pool: WorkerPool,
                                                  tmp_path: Path) -> None:
    await photo_library(db, tmp_path / "lib", 14)
    with StandIn(delay=0.25) as slow:
        first = await tick(db, pool, settings(slow.url, detect_concurrency=3, backlog_max_per_tick=9))
        assert first.sent == 9 and slow.total == 9
        assert slow.max_in_flight == 3
        second = await tick(db, pool, settings(slow.url, detect_concurrency=3, backlog_max_per_tick=9))
        assert second.sent == 5 and slow.total == 14 and max(slow.requests.values()) == 1
        assert slow.max_in_flight == 3
        limited = await tick(db, pool, settings(slow.url, backlog_max_per_tick=9), limit=2)
        assert limited.candidates == 0


async def test_hash_backfill_pass_is_capped_and_feeds_the_face_pass(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    rels = [f"u{i}.jpg" for i in range(7)]
    for i, rel in enumerate(rels):
        make_photo(root / rel, 200 + i)
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, rels, hashed=False)
    st = settings(standin.url, hash_backfill_max_per_tick=3)
    counts = await backfill_unhashed_backlog(db, pool, st)
    assert counts.hashed == 3 and counts.remaining == 4
    async with db.execute("SELECT rel_path FROM files WHERE content_hash IS NOT NULL ORDER BY id") as cur:
        assert [r[0] for r in await cur.fetchall()] == rels[:3]          # in id order
    async with FacePasses(db, pool, st) as passes:
        rep = await passes.tick()
        assert rep.hashing.hashed == 3 and rep.faces.detected == 6
        rep = await passes.tick()
        assert rep.hashing.hashed == 1 and rep.faces.detected == 1
        rep = await passes.tick()
        assert not rep.did_something
    assert standin.total == 7


async def test_transient_failures_back_off_without_blocking_the_queue(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    await photo_library(db, tmp_path / "lib", 8)
    hashes = sorted(await hashes_of(db))
    modes = {hashes[0]: "500", hashes[1]: "badjson", hashes[2]: "429", hashes[3]: "408", hashes[4]: "badshape",
             hashes[5]: "drop"}
    standin.per_hash.update(modes)
    report = await tick(db, pool, settings(standin.url))
    assert report.detected == 2 and report.transient_failures == 6 and report.permanent_failures == 0
    async with db.execute("SELECT content_hash, permanent, attempts, last_error, next_attempt_at, updated_at "
                          "FROM face_failures") as cur:
        rows = {r[0]: r for r in await cur.fetchall()}
    assert set(rows) == set(modes)
    for row in rows.values():
        assert row[1] == 0 and row[2] == 1 and row[3]
        assert row[4] > row[5]                                            # a retry time in the future
    assert "500" in rows[hashes[0]][3] and "not a valid detection" in rows[hashes[1]][3]
    # No spinning: the failed ones are not sent again until due.
    assert (await tick(db, pool, settings(standin.url))).candidates == 0
    assert standin.total == 8
    st = await face_status(db)
    assert (st.scanned, st.backing_off, st.pending, st.failed) == (2, 6, 0, 0)
    # Due a minute later; failing again doubles the wait.
    later = now_utc() + timedelta(seconds=61)
    assert await count_pending(db, now=later) == 6
    async with transaction(db):
        rec = await record_failure(db, hashes[0], "HTTP 500 again", permanent=False, now=later)
    assert rec.attempts == 2
    assert backoff_seconds(1) == 60 and backoff_seconds(2) == 120 and backoff_seconds(12) == 86_400
    assert backoff_seconds(1000) == 86_400
    # Once the service answers, a due retry succeeds and clears the failure.
    standin.per_hash.clear()
    await write(db, "UPDATE face_failures SET next_attempt_at = '2000-01-01T00:00:00.000000Z'")
    report = await tick(db, pool, settings(standin.url))
    assert report.detected == 6
    async with db.execute("SELECT COUNT(*) FROM face_failures") as cur:
        assert (await cur.fetchone())[0] == 0  # type: ignore[index]


async def test_timeout_is_transient(db: aiosqlite.Connection, pool: WorkerPool, tmp_path: Path) -> None:
    await photo_library(db, tmp_path / "lib", 2)
    with StandIn(mode="hang") as hanging:
        report = await tick(db, pool, settings(hanging.url, detect_timeout=0.5))
    assert report.transient_failures == 2 and report.detected == 0 and not report.service_down
    assert "no answer within" in report.errors[0][1]


async def test_permanent_failures_are_not_retried_until_retry_failed(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    lib, _ = await photo_library(db, root, 4)
    (root / "not_a_photo.jpg").write_bytes(b"%PDF-1.4\n" + bytes(2000))   # no picture: never sent
    await insert_rows(db, lib.id, root, ["not_a_photo.jpg"])
    hashes = sorted(await hashes_of(db))
    async with db.execute("SELECT content_hash FROM files WHERE rel_path = 'not_a_photo.jpg'") as cur:
        pdf = (await cur.fetchone())[0]  # type: ignore[index]
    photos = [h for h in hashes if h != pdf]
    standin.per_hash.update({photos[0]: "400", photos[1]: "422"})
    report = await tick(db, pool, settings(standin.url))
    assert report.permanent_failures == 3 and report.detected == 2
    assert pdf not in standin.requests                                   # rejected before sending
    async with db.execute("SELECT content_hash, permanent, next_attempt_at, last_error FROM face_failures") as cur:
        rows = {r[0]: r for r in await cur.fetchall()}
    assert set(rows) == {pdf, photos[0], photos[1]}
    assert all(r[1] == 1 and r[2] is None for r in rows.values())
    assert "HTTP 400" in rows[photos[0]][3]
    far = now_utc() + timedelta(days=400)
    assert await list_unscanned_candidates(db, lib.id, 100, far) == []
    st = await face_status(db)
    assert (st.failed, st.pending, st.scanned) == (3, 0, 2)
    standin.per_hash.clear()
    assert await retry_failed(db) == 3
    report = await tick(db, pool, settings(standin.url))
    assert report.detected == 2 and report.permanent_failures == 1       # the PDF fails again
    assert standin.requests[photos[0]] == 2


async def test_service_down_stops_the_tick_once_and_probes_after(
        db: aiosqlite.Connection, pool: WorkerPool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await photo_library(db, tmp_path / "lib", 20)
    st = settings(closed_port_url(), detect_concurrency=2)
    # Down from the start (imageapi restarted before Apollo): the first tick's probe finds out and
    # no photo is blamed.
    fresh = ServiceState()
    first = await tick(db, pool, st, state=fresh)
    assert first.service_down and fresh.down and first.sent == 0 and first.not_sent == 20
    assert (await face_status(db)).backing_off == 0
    # Down in the middle of a tick (it answered before): the tick stops after a few refusals.
    state = ServiceState(checked=True)
    caplog.clear()
    with caplog.at_level("WARNING", logger="imageapi.core.faces.backlog"):
        report = await tick(db, pool, st, state=state)
    assert report.service_down and state.down and "cannot connect" in (report.down_reason or "")
    # Not every candidate failed one by one: the tick stopped after DOWN_AFTER (plus what was in flight).
    assert DOWN_AFTER <= report.transient_failures <= DOWN_AFTER + st.detect_concurrency
    assert report.not_sent == 20 - report.transient_failures
    assert sum("unreachable" in r.message for r in caplog.records) == 1     # said once
    # The next tick probes the health endpoint and records nothing while it is still down.
    failed_before = (await face_status(db)).backing_off
    report2 = await tick(db, pool, st, state=state)
    assert report2.service_down and report2.sent == 0 and report2.not_sent == report2.candidates > 0
    assert (await face_status(db)).backing_off == failed_before
    # The service comes back: the probe passes and the tick sends.
    with StandIn() as apollo:
        report3 = await tick(db, pool, settings(apollo.url), state=state)
        assert not state.down and apollo.health_requests == 1
        assert report3.detected == report3.candidates == 20 - failed_before


async def test_sent_image_is_an_upright_jpeg_within_1600(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path, corpus: Path) -> None:
    root = tmp_path / "lib"
    make_photo(root / "big_rotated.jpg", 1, size=(2400, 1200), orientation=6)  # displays as 1200 x 2400
    make_photo(root / "small.jpg", 2, size=(300, 200))
    shutil.copy(corpus / "heic" / "IMG_5195.HEIC", root / "phone.heic")
    shutil.copy(corpus / "raw" / "Canon_350D.cr2", root / "camera.cr2")
    shutil.copy(corpus / "video" / next(p.name for p in (corpus / "video").iterdir() if p.suffix == ".mp4"),
                root / "clip.mp4")
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, ["big_rotated.jpg", "small.jpg", "phone.heic", "camera.cr2", "clip.mp4"])
    report = await tick(db, pool, settings(standin.url))
    assert report.detected == 4 and report.candidates == 4               # the video is not sent
    async with db.execute("SELECT rel_path, content_hash FROM files") as cur:
        by_rel = {r[0]: r[1] for r in await cur.fetchall()}
    got = {r.content_hash: r for r in standin.received}
    assert by_rel["clip.mp4"] not in got
    big = got[by_rel["big_rotated.jpg"]]
    assert (big.format, big.width, big.height) == ("JPEG", 800, 1600)
    small = got[by_rel["small.jpg"]]
    assert (small.width, small.height) == (300, 200)                      # never upscaled
    for rel in ("phone.heic", "camera.cr2"):
        r = got[by_rel[rel]]
        assert r.format == "JPEG" and r.width and r.height and max(r.width, r.height) <= 1600
    import imageapi.core.thumbs  # noqa: F401  (registers the HEIF opener)

    with Image.open(root / "phone.heic") as im:
        assert max(got[by_rel["phone.heic"]].width or 0, got[by_rel["phone.heic"]].height or 0) == min(
            1600, max(im.size))


async def test_file_changed_since_hashed_is_not_sent(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    lib, rels = await photo_library(db, root, 2)
    make_photo(root / rels[0], 999)     # edited in place after the scan hashed it
    report = await tick(db, pool, settings(standin.url))
    assert report.detected == 1 and report.transient_failures == 1 and standin.total == 1
    assert "changed since it was hashed" in report.errors[0][1]


async def test_bad_corpus_files_never_crash_the_tick(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path, corpus: Path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(corpus / "bad", root)
    lib = await add_library(db, "bad", root)
    rels = sorted(p.name for p in root.iterdir() if p.is_file())
    await insert_rows(db, lib.id, root, rels)
    report = await tick(db, pool, settings(standin.url))
    images = await count_pending(db) + report.candidates
    assert report.candidates > 5 and images == report.candidates
    assert report.detected + report.permanent_failures + report.transient_failures == report.candidates
    assert report.permanent_failures >= 3           # the PDF, the ZIP under a RAW name, the empty file
    assert all(r.format == "JPEG" for r in standin.received)
