"""`imageapi worker` as users run it, several at once on one database: real processes, a real
stand-in Apollo (tests/apollo_standin.py), real thumbnails. What is checked is what the leases
promise (imageapi.core.repositories.leases, imageapi.core.drainer):

- two workers draining one library: every thumbnail written once and every photo sent to Apollo
  once (the stand-in's request log; a trigger logs every thumbnail write);
- kill -9 of one worker mid-drain: the other finishes its items after the lease time; every result
  is still written exactly once, and the only work done twice is the detect call the killed
  worker had in flight (FACE_DETECT_CONCURRENCY=1: at most one photo is sent twice);
- a worker whose lease expired and was taken over writes nothing when it finishes.

On SQLite, and on PostgreSQL with IMAGEAPI_TEST_DATABASE=postgresql (claims FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageapi.core.database import transaction, write
from imageapi.core.db import Connection, connect, dialect, utcnow
from imageapi.core.faces.embeddings import to_blob
from imageapi.core.hashing import hash_file
from imageapi.core.libraries import add_library
from imageapi.core.postgres.url import parse_postgres_url
from imageapi.core.repositories import faces as faces_repo
from imageapi.core.repositories import leases
from tests import dbq
from tests.apollo_standin import StandIn, make_photo
from tests.conftest import ON_POSTGRES

LEASE = "2"

# Every thumbnail result written on a row, in order: exactly one per file when no result is
# written twice.
WRITE_LOG = {
    "sqlite": [
        "CREATE TABLE test_thumb_writes (file_id INTEGER NOT NULL, state TEXT NOT NULL)",
        "CREATE TRIGGER test_log_thumb_writes AFTER UPDATE OF thumb_state ON files "
        "WHEN NEW.thumb_state != 'pending' "
        "BEGIN INSERT INTO test_thumb_writes (file_id, state) VALUES (NEW.id, NEW.thumb_state); END",
    ],
    "postgresql": [
        "CREATE TABLE test_thumb_writes (file_id BIGINT NOT NULL, state TEXT NOT NULL)",
        "CREATE FUNCTION test_log_thumb_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO test_thumb_writes (file_id, state) VALUES (NEW.id, NEW.thumb_state); RETURN NEW; END $$",
        "CREATE TRIGGER test_log_thumb_writes AFTER UPDATE OF thumb_state ON files FOR EACH ROW "
        "WHEN (NEW.thumb_state <> 'pending') EXECUTE FUNCTION test_log_thumb_writes()",
    ],
}


@pytest.fixture()
def backend(env_dirs: dict[str, Path]) -> str | None:
    """The database the workers share: None for the SQLite file, else the PostgreSQL URL the suite
    runs against (IMAGEAPI_TEST_DATABASE=postgresql: env_dirs sets DATABASE_URL)."""
    url = os.environ.get("DATABASE_URL")
    found = url if url and url.startswith(("postgresql:", "postgres:")) else None
    assert (found is not None) == ON_POSTGRES
    return found


@pytest.fixture()
def env(env_dirs: dict[str, Path], backend: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("APOLLO_", "FACE_", "WORKER_", "LIBRARY_", "DATABASE_URL"))}
    # FACE_CLUSTER_HOUR off: the day's face clustering (which a worker runs) does not depend on the clock.
    out.update({"WORKERS": "1", "WORKER_LEASE_SECONDS": LEASE, "FACE_DETECT_CONCURRENCY": "1",
                "FACE_CLUSTER_HOUR": "off", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    if backend is not None:
        out["DATABASE_URL"] = backend
    _backends[str(env_dirs["tmp"])] = backend
    return out


_backends: dict[str, str | None] = {}


def db_path(env_dirs: dict[str, Path]) -> Path:
    return env_dirs["data"] / "imageapi.db"


def _url(env_dirs: dict[str, Path]) -> str | None:
    return _backends.get(str(env_dirs["tmp"]))


def query(env_dirs: dict[str, Path], sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    conn = dbq.connect(db_path(env_dirs), url=_url(env_dirs))
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def index_videos(env_dirs: dict[str, Path], root: Path, names: list[str]) -> None:
    """Library `videos` at `root` with these files indexed as 2 s videos, thumbnails done."""
    async def index() -> None:
        db = await open_db(env_dirs)
        try:
            lib = await add_library(db, "videos", root)
            now = utcnow()
            for name in names:
                st = (root / name).stat()
                await write(db, "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, duration, "
                                "thumb_state, first_seen, last_seen) VALUES (?, ?, '', 'video', ?, ?, ?, 'done', ?, ?)",
                            (lib.id, name, st.st_size, st.st_mtime_ns, 2.0, now, now))
        finally:
            await db.close()

    asyncio.run(index())


async def open_db(env_dirs: dict[str, Path]) -> Connection:
    url = _url(env_dirs)
    return await connect(db_path(env_dirs) if url is None else parse_postgres_url(url))


def library(env_dirs: dict[str, Path], n: int, *, seed: int = 0, hashed: bool = True) -> list[int]:
    """n distinct photos indexed with their thumbnails pending (and hashed, unless not), as a scan
    that was told to leave thumbnails to the workers would leave them; the write log installed."""
    root = env_dirs["tmp"] / "Pictures"
    rels = [f"album{i % 3}/IMG_{i:03d}.jpg" for i in range(n)]
    for i, rel in enumerate(rels):
        make_photo(root / rel, seed + i)

    async def go() -> list[int]:
        db = await open_db(env_dirs)
        try:
            lib = await add_library(db, "main", root)
            ids = []
            now = utcnow()
            async with transaction(db):
                for rel in rels:
                    path = root / rel
                    st = path.stat()
                    async with db.execute(
                        "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, "
                        "first_seen, last_seen) VALUES (?, ?, ?, 'image', ?, ?, ?, ?, ?) RETURNING id",
                        (lib.id, rel, rel.rpartition("/")[0], st.st_size, st.st_mtime_ns,
                         hash_file(path) if hashed else None, now, now),
                    ) as cur:
                        row = await cur.fetchone()
                    ids.append(int(row[0]))
            for statement in WRITE_LOG[dialect(db)]:
                await write(db, statement)
            return ids
        finally:
            await db.close()

    return asyncio.run(go())


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_worker_left() -> Iterator[None]:
    """A failing test leaves no worker running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "worker", "--concurrency", "1", "--json", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started.append(proc)
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def wait_for(cond: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def holds(env_dirs: dict[str, Path], pid: int, kind: str) -> bool:
    return bool(query(env_dirs, "SELECT 1 FROM work_leases WHERE kind = ? AND holder LIKE ?", (kind, f"%:{pid}:%")))


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    with StandIn(delay=0.1) as s:
        yield s


def test_two_workers_do_every_item_exactly_once(env: dict[str, str], env_dirs: dict[str, Path],
                                                standin: StandIn) -> None:
    n = 30
    ids = library(env_dirs, n)
    e = {**env, "APOLLO_FACE_API_BASE_URL": standin.url}
    workers = [start(e, "--kinds", "thumbs,faces", "--until-empty") for _ in range(2)]
    reports = [finish(w) for w in workers]

    hashes = {r[0] for r in query(env_dirs, "SELECT content_hash FROM files")}
    assert len(hashes) == n
    assert set(standin.requests) == hashes and set(standin.requests.values()) == {1}  # each photo sent once
    assert {r[0] for r in query(env_dirs, "SELECT content_hash FROM face_scans")} == hashes
    writes = query(env_dirs, "SELECT file_id, COUNT(*) FROM test_thumb_writes GROUP BY file_id")
    assert dict(writes) == {i: 1 for i in ids}                                        # each thumbnail written once
    assert query(env_dirs, "SELECT DISTINCT thumb_state FROM files") == [("done",)]
    assert all((env_dirs["data"] / "thumbnails" / "main" / f"album{i % 3}" / f"IMG_{i:03d}.jpg").is_file()
               for i in range(n))
    for kind in ("thumbs", "faces"):
        assert sum(r["kinds"][kind]["done"] for r in reports) == n
        assert all(r["kinds"][kind]["done"] > 0 for r in reports), "both workers took part"
        assert all(r["kinds"][kind]["dropped"] == 0 for r in reports)
    assert all(r["remaining"] == {"thumbs": 0, "faces": 0} for r in reports)
    assert query(env_dirs, "SELECT COUNT(*) FROM work_leases") == [(0,)]


def test_kill_9_items_go_back_and_only_the_call_in_flight_is_repeated(env: dict[str, str],
                                                                      env_dirs: dict[str, Path]) -> None:
    n = 16
    ids = library(env_dirs, n, seed=100)
    with StandIn(delay=0.4) as slow:
        e = {**env, "APOLLO_FACE_API_BASE_URL": slow.url}
        doomed = start(e, "--kinds", "thumbs,faces")
        wait_for(lambda: slow.total >= 2 and slow.in_flight > 0 and holds(env_dirs, doomed.pid, "faces"))
        survivor = start(e, "--kinds", "thumbs,faces", "--until-empty")
        wait_for(lambda: slow.total >= 4 and slow.in_flight > 0 and holds(env_dirs, doomed.pid, "faces"))
        held = query(env_dirs, "SELECT item FROM work_leases WHERE kind = 'faces' AND holder LIKE ?",
                     (f"%:{doomed.pid}:%",))
        doomed.kill()
        doomed.wait(10)
        killed_at = time.monotonic()
        report = finish(survivor)
        took = time.monotonic() - killed_at
    hashes = {r[0] for r in query(env_dirs, "SELECT content_hash FROM files")}
    assert {r[0] for r in query(env_dirs, "SELECT content_hash FROM face_scans")} == hashes   # nothing lost
    assert set(slow.requests) == hashes
    twice = [h for h, c in slow.requests.items() if c > 1]
    assert max(slow.requests.values()) <= 2 and len(twice) <= 1, slow.requests   # only the call in flight
    assert set(twice) <= {r[0] for r in held}
    assert held and took >= float(LEASE) - 0.5       # the survivor waited for the dead worker's leases
    assert dict(query(env_dirs, "SELECT file_id, COUNT(*) FROM test_thumb_writes GROUP BY file_id")) == \
        {i: 1 for i in ids}
    assert report["remaining"] == {"thumbs": 0, "faces": 0}
    assert query(env_dirs, "SELECT COUNT(*) FROM work_leases") == [(0,)]


def test_workers_run_the_days_face_clustering_once_between_them(env: dict[str, str], env_dirs: dict[str, Path],
                                                                standin: StandIn) -> None:
    """Without a watcher (WATCH_DRAINS=false, or workers only) the nightly full pass is the
    workers' to run: three scanned photos whose faces look alike become one unnamed person, and two
    workers started the same day run the pass once between them."""
    library(env_dirs, 3, seed=300)
    contents = [r[0] for r in query(env_dirs, "SELECT content_hash FROM files ORDER BY id")]

    async def faces() -> None:
        db = await open_db(env_dirs)
        try:
            async with transaction(db):
                for i, content in enumerate(contents):
                    vec = [1.0, 0.01 * i] + [0.0] * 126
                    await faces_repo.insert_face(db, content, 0, (0.1, 0.1, 0.3, 0.3), 0.9, to_blob(vec),
                                                 "synthetic-128", utcnow())
                    await faces_repo.mark_scanned(db, content, "synthetic-128", 1, utcnow())
        finally:
            await db.close()

    asyncio.run(faces())
    e = {**env, "APOLLO_FACE_API_BASE_URL": standin.url, "FACE_CLUSTER_HOUR": "0"}
    first = finish(start(e, "--kinds", "faces", "--until-empty"))
    second = finish(start(e, "--kinds", "faces", "--until-empty"))
    assert [r["kinds"]["faces"]["nightly_clustering"] for r in (first, second)] == [1, 0]
    assert query(env_dirs, "SELECT p.name, COUNT(*) FROM faces f JOIN persons p ON p.id = f.person_id "
                           "GROUP BY p.id, p.name") == [(None, 3)]
    assert standin.total == 0   # nothing was left to detect


def test_a_long_item_keeps_its_lease(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    """A detect call longer than the lease time: the lease is renewed, so a second worker waits
    for it instead of taking the photo over."""
    library(env_dirs, 1, seed=250)
    with StandIn(delay=float(LEASE) * 3) as slow:
        e = {**env, "APOLLO_FACE_API_BASE_URL": slow.url}
        first = start(e, "--kinds", "faces", "--until-empty")
        wait_for(lambda: slow.total == 1)
        second = start(e, "--kinds", "faces", "--until-empty")
        reports = [finish(first), finish(second)]
    assert slow.total == 1
    assert [r["kinds"]["faces"]["done"] for r in reports] == [1, 0]
    assert query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(1,)]


def test_a_worker_whose_lease_was_taken_writes_nothing(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    library(env_dirs, 1, seed=200)
    (content_hash,) = query(env_dirs, "SELECT content_hash FROM files")[0]
    with StandIn(delay=3.0) as slow:
        e = {**env, "APOLLO_FACE_API_BASE_URL": slow.url}
        late = start(e, "--kinds", "faces", "--until-empty")
        wait_for(lambda: slow.total == 1)      # its call is in flight; the answer will be faces found
        late.send_signal(signal.SIGSTOP)       # paused past its lease: it cannot renew it
        try:
            slow.per_hash[content_hash] = "500"  # the next call fails: a transient failure is recorded
            slow.delay = 0.0
            taker = start(e, "--kinds", "faces", "--until-empty")
            taken = finish(taker)
            assert slow.requests[content_hash] == 2
        finally:
            late.send_signal(signal.SIGCONT)
        report = finish(late)
    assert taken["kinds"]["faces"]["done"] == 1 and taken["kinds"]["faces"]["transient_failures"] == 1
    assert report["kinds"]["faces"]["done"] == 0 and report["kinds"]["faces"]["dropped"] == 1
    # The late answer (faces found) was not stored over the failure the lease holder recorded.
    assert query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(0,)]
    assert query(env_dirs, "SELECT COUNT(*) FROM faces") == [(0,)]
    assert query(env_dirs, "SELECT attempts FROM face_failures") == [(1,)]


def test_two_workers_make_every_preview_once(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    from tests.test_video_support import make_video

    root = env_dirs["tmp"] / "Videos"
    names = [f"clip{i}.mp4" for i in range(4)]
    for i, name in enumerate(names):
        make_video(root / name, 2.0 + i, size="160x120", audio=None)

    index_videos(env_dirs, root, names)
    reports = [finish(w) for w in [start(env, "--kinds", "previews", "--until-empty") for _ in range(2)]]
    assert sum(r["kinds"]["previews"]["done"] for r in reports) == 4
    assert sum(r["kinds"]["previews"]["made"] for r in reports) == 4
    assert all(r["kinds"]["previews"]["dropped"] == 0 for r in reports)
    assert query(env_dirs, "SELECT DISTINCT preview_state FROM files") == [("done",)]
    assert all((env_dirs["data"] / "preview_clips" / "videos" / f"{name}.mp4").is_file() for name in names)
    assert all((env_dirs["data"] / "gifs" / "videos" / f"{name}.gif").is_file() for name in names)


def test_two_workers_make_every_hls_playlist_once_and_record_failures(env: dict[str, str],
                                                                     env_dirs: dict[str, Path]) -> None:
    from imageapi.core.config import load_config
    from imageapi.core.hls import cache_folder
    from tests.test_video_support import make_video

    root = env_dirs["tmp"] / "Videos"
    names = [f"clip{i}.mp4" for i in range(3)]
    for i, name in enumerate(names):
        make_video(root / name, 2.0 + i, size="160x120", audio=None)
    (root / "broken.mp4").write_bytes(b"not a video at all" * 100)

    index_videos(env_dirs, root, [*names, "broken.mp4"])
    # Not a default kind: playlists made ahead of time take room for every video.
    default = finish(start(env, "--until-empty"))
    assert "hls" not in default["kinds"]
    reports = [finish(w) for w in [start(env, "--kinds", "hls", "--until-empty") for _ in range(2)]]
    assert sum(r["kinds"]["hls"]["done"] for r in reports) == 4
    assert sum(r["kinds"]["hls"]["made"] for r in reports) == 3
    assert sum(r["kinds"]["hls"]["failed"] for r in reports) == 1
    assert all(r["kinds"]["hls"]["dropped"] == 0 for r in reports)
    config = load_config()
    for name in names:
        assert list(cache_folder(config, "videos", name).rglob("*.m3u8")), name
    rows = dict(query(env_dirs, "SELECT rel_path, hls_error FROM files"))
    assert rows["broken.mp4"] and all(rows[name] is None for name in names)
    # Every version has its outcome: nothing is due, nothing is made again.
    again = finish(start(env, "--kinds", "hls", "--until-empty"))
    assert again["kinds"]["hls"]["claimed"] == 0
    # A changed video is due again.
    make_video(root / names[0], 4.0, size="160x120", audio=None)
    st = (root / names[0]).stat()
    query(env_dirs, f"UPDATE files SET size = {st.st_size}, mtime_ns = {st.st_mtime_ns} WHERE rel_path = '{names[0]}'")
    again = finish(start(env, "--kinds", "hls", "--until-empty"))
    assert (again["kinds"]["hls"]["claimed"], again["kinds"]["hls"]["made"]) == (1, 1)


def test_sigterm_stops_and_gives_the_leases_back(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    library(env_dirs, 6, seed=300)
    with StandIn(delay=5.0) as slow:
        e = {**env, "APOLLO_FACE_API_BASE_URL": slow.url}
        proc = start(e, "--kinds", "faces")
        wait_for(lambda: slow.in_flight > 0 and holds(env_dirs, proc.pid, "faces"))
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        report = finish(proc, timeout=20)
        assert time.monotonic() - stopped_at < 4   # not waiting for the call in flight
    assert report["stopped"] is True and report["remaining"]["faces"] == 6
    assert query(env_dirs, "SELECT COUNT(*) FROM work_leases") == [(0,)]   # due again at once, for anyone
    assert query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(0,)]


def test_path_map_finds_a_library_mounted_elsewhere(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    ids = library(env_dirs, 4, seed=400, hashed=False)
    local = env_dirs["tmp"] / "Pictures"
    # The database says the library is where another host mounts it.
    query(env_dirs, "UPDATE libraries SET root = '/mnt/nas/photos'")
    res = subprocess.run([sys.executable, "-m", "imageapi", "worker", "--kinds", "thumbs,hash", "--until-empty",
                          "--json"], env={**env, "LIBRARY_PATH_MAP": f"/mnt/nas/photos={local}",
                                          "BASE_PATH": str(local)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["kinds"]["thumbs"]["made"] == 4 and report["kinds"]["hash"]["hashed"] == 4
    assert query(env_dirs, "SELECT COUNT(*) FROM files WHERE thumb_state = 'done' AND content_hash IS NOT NULL") \
        == [(len(ids),)]
    # This host's BASE_PATH does not move library `main` for every other host.
    assert query(env_dirs, "SELECT root FROM libraries") == [("/mnt/nas/photos",)]


@pytest.mark.parametrize(("value", "says"), [
    ("/mnt/nas/photos", "FROM=TO"),
    ("/mnt/nas/photos=relative/path", "absolute"),
    ("/mnt/nas/photos=/no/such/folder", "not a readable directory"),
])
def test_bad_path_map_is_exit_2_in_one_line(env: dict[str, str], env_dirs: dict[str, Path], value: str,
                                           says: str) -> None:
    res = subprocess.run([sys.executable, "-m", "imageapi", "worker", "--until-empty"],
                         env={**env, "LIBRARY_PATH_MAP": value}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "LIBRARY_PATH_MAP" in res.stderr and says in res.stderr and res.stderr.strip().count("\n") == 0


def test_bad_kinds_are_exit_2(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    for args, says in ((["--kinds", "thumbs,nope"], "nope"), (["--kinds", "faces"], "APOLLO_FACE_API_BASE_URL")):
        res = subprocess.run([sys.executable, "-m", "imageapi", "worker", *args], env={**env, "FACE_BACKEND": "off"},
                             capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 2 and says in res.stderr, res.stderr


def test_leases_claim_disjoint_items_and_fence_stale_results(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    """The claim and the fence, in one process: two holders never get one item; a holder whose
    lease expired and was taken over finds nothing to settle; one whose lease expired but was not
    taken still may (its result is the only one)."""
    ids = library(env_dirs, 6, seed=500)
    thumbs = leases.Backlog("thumbs", "f.thumb_state = 'pending'")

    async def go() -> None:
        db = await open_db(env_dirs)
        try:
            a = await leases.claim(db, thumbs, "a", 4, 60.0)
            b = await leases.claim(db, thumbs, "b", 4, 60.0)
            assert [c.file_id for c in a] == ids[:4] and [c.file_id for c in b] == ids[4:]
            assert await leases.claim(db, thumbs, "c", 4, 60.0) == []
            await write(db, "UPDATE work_leases SET expires_at = 0 WHERE holder = 'a'")
            c = await leases.claim(db, thumbs, "c", 2, 60.0)
            assert [x.key for x in c] == [str(i) for i in ids[:2]] and {x.token for x in c} == {2}
            fence_a = leases.Fence("thumbs", "a")
            fence_a.add(a)
            async with transaction(db):
                held = await fence_a.settle(db, [x.key for x in a])
                await db.executemany("UPDATE files SET thumb_state = 'done' WHERE id = ?", [(int(k),) for k in held])
            assert held == {str(i) for i in ids[2:4]}   # expired, not taken: still its own
            assert fence_a.kept == 2 and fence_a.dropped == 2
            # Written results are no longer due; an expired lease is claimed again.
            await write(db, "UPDATE files SET thumb_state = 'done' WHERE id = ?", (ids[4],))
            await write(db, "UPDATE work_leases SET expires_at = 0 WHERE holder = 'b'")
            d = await leases.claim(db, thumbs, "d", 4, 60.0)
            assert [x.file_id for x in d] == [ids[5]]
            assert await leases.renew(db, "c", 60.0) == 2
            assert await leases.release_all(db, "c") == 2
            # `--library`: only that library's rows, oldest first, and none of another's.
            (env_dirs["tmp"] / "Other").mkdir()
            other = await add_library(db, "other", env_dirs["tmp"] / "Other")
            await write(db, "UPDATE files SET library_id = ?, thumb_state = 'pending' WHERE id IN (?, ?)",
                        (other.id, ids[1], ids[3]))
            e = await leases.claim(db, thumbs, "e", 4, 60.0, library_ids=[other.id])
            assert [x.file_id for x in e] == [ids[1], ids[3]]
            async with db.execute("SELECT library_id FROM files WHERE id = ?", (ids[0],)) as cur:
                main_id = (await cur.fetchone())[0]
            f = await leases.claim(db, thumbs, "f", 4, 60.0, library_ids=[main_id])
            assert [x.file_id for x in f] == [ids[0]]   # ids[5] is still d's
        finally:
            await db.close()

    asyncio.run(go())


def test_path_map_rules(tmp_path: Path) -> None:
    from imageapi.core.config import WorkerSettings, parse_path_map

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    settings = WorkerSettings(path_map=parse_path_map(
        f"/mnt/nas={tmp_path}/a, /mnt/nas/photos/={tmp_path}/b, family={tmp_path}/c"))
    assert settings.local_root("main", "/mnt/nas/photos") == tmp_path / "b"             # the longest prefix
    assert settings.local_root("main", "/mnt/nas/photos/2020") == tmp_path / "b" / "2020"
    assert settings.local_root("main", "/mnt/nas/other") == tmp_path / "a" / "other"
    assert settings.local_root("main", "/mnt/nasty") == Path("/mnt/nasty")               # whole names only
    assert settings.local_root("family", "/mnt/nas/photos") == tmp_path / "c"          # a name wins
    assert WorkerSettings().local_root("main", "/srv/photos") == Path("/srv/photos")


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite's claim is one write transaction: no result can land inside it")
def test_a_result_committed_during_a_claim_is_not_claimed_again(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    """PostgreSQL reads each statement at its own snapshot: a late worker whose lease had expired
    may commit its result between a claimer's select and its lease. The claim's second look
    gives the item back instead of working it again."""
    from imageapi.core.drainer import backlog

    library(env_dirs, 1, seed=600)
    (content_hash,) = query(env_dirs, "SELECT content_hash FROM files")[0]

    class Interleaved:
        """The claimer's connection: `hook` runs just before its first lease is written."""

        def __init__(self, conn: Connection, hook: object) -> None:
            self._conn, self._hook, self.dialect = conn, hook, dialect(conn)

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

        def execute(self, sql: str, params: object = ()) -> object:
            if not sql.startswith("INSERT INTO work_leases") or self._hook is None:
                return self._conn.execute(sql, params)  # type: ignore[arg-type]
            hook, self._hook = self._hook, None
            conn = self._conn

            class Later:
                async def __aenter__(self) -> object:
                    await hook()  # type: ignore[operator]
                    self.inner = conn.execute(sql, params)  # type: ignore[arg-type]
                    return await self.inner.__aenter__()

                async def __aexit__(self, *exc: object) -> object:
                    return await self.inner.__aexit__(*exc)

            return Later()

    async def go() -> None:
        late_db, claimer_db = await open_db(env_dirs), await open_db(env_dirs)
        try:
            faces = backlog("faces", late_db)
            late = leases.Fence("faces", "late", locks_files=False)
            late.add(await leases.claim(late_db, faces, "late", 4, 60.0))
            await write(late_db, "UPDATE work_leases SET expires_at = 0")   # it took too long

            async def late_result_lands() -> None:
                async with transaction(late_db):
                    assert await late.hold(late_db, content_hash)
                    await late_db.execute("INSERT INTO face_scans (content_hash, model, face_count, scanned_at) "
                                          "VALUES (?, 'm', 0, ?)", (content_hash, utcnow()))

            claimer = Interleaved(claimer_db, late_result_lands)
            assert await leases.claim(claimer, backlog("faces", claimer_db), "claimer", 4, 60.0) == []  # type: ignore[arg-type]
            assert late.kept == 1
        finally:
            await late_db.close()
            await claimer_db.close()

    asyncio.run(go())
    assert query(env_dirs, "SELECT COUNT(*) FROM work_leases") == [(0,)]
