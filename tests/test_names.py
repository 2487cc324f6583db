"""File names as a real archive holds them: bytes that are not UTF-8, control characters,
backslashes, 255-byte names, paths too long for the thumbnail folder. Each is indexed exactly once,
stored losslessly, shown escaped, served by the path the listing gives, and left alone by a
re-scan. Names are made with bytes paths (os.* accepts them), never through str."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from imageapi.core.config import Config, load_config
from imageapi.core.database import transaction
from imageapi.core.db import apply_migrations, connect
from imageapi.core.errors import PathOutsideLibraryError
from imageapi.core.kinds import IgnoreRules
from imageapi.core.libraries import add_library, get_library
from imageapi.core.migrations import MIGRATIONS
from imageapi.core.names import ESC, on_disk, shown, stored
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import ScanReport, ScanTarget, run_scan
from imageapi.core.tokens import TokenService
from imageapi.core.users import add_user, get_user, hash_password
from imageapi.server.app import create_app
from imageapi.server.watching import ServerWatcher
from tests.test_server_support import SECRET, AiohttpClient, assert_error

# Any byte but '/' and NUL, 1..255 of them: every name a POSIX filesystem holds.
NAME_BYTES = st.lists(st.sampled_from([b for b in range(1, 256) if b != 0x2F]), min_size=1, max_size=255).map(bytes)


def tiny_jpeg(n: int) -> bytes:
    """A valid 16x16 JPEG whose bytes differ per n (a trailer after EOI, which decoders ignore)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (n * 37 % 256, n * 11 % 256, 90)).save(buf, "JPEG")
    return buf.getvalue() + b"\0" + str(n).encode()


def put(root: Path, rel: bytes, data: bytes) -> bytes:
    """Write a file at root/rel, rel as raw bytes."""
    path = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return rel


def listed(rel: bytes) -> str:
    """The path the index and the API give for a relative path on disk."""
    return stored(os.fsdecode(rel))


def old_enough(root: Path) -> None:
    """Folders just written are not trusted by a quick scan (walk.RACY_SECONDS): backdate them."""
    for d, _, _ in os.walk(os.fsencode(root)):
        os.utime(d, (1_600_000_000, 1_600_000_000))


# -- the stored form ------------------------------------------------------------------------------


@given(NAME_BYTES)
@settings(max_examples=500)
def test_stored_form_is_text_and_leads_back_to_the_bytes(raw: bytes) -> None:
    name = os.fsdecode(raw)
    text = stored(name)
    text.encode("utf-8")  # SQLite TEXT and JSON can hold it: no lone surrogates
    assert os.fsencode(on_disk(text)) == raw
    try:
        utf8 = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    if ESC not in utf8:
        assert text == utf8  # valid UTF-8 names are stored as they are


@given(st.text(alphabet=st.sampled_from(["a", "/", ESC, "F", "E", "8", "0", "C", "3", "A", "9", "\udcff"]),
               max_size=12))
@settings(max_examples=500)
def test_a_text_names_at_most_one_file(text: str) -> None:
    """Any client text is refused or is exactly the stored form of the name it leads to."""
    try:
        name = on_disk(text)
    except PathOutsideLibraryError:
        return
    assert stored(name) == text


def test_shown_escapes_what_a_terminal_would_act_on() -> None:
    assert shown("a\nb\tc\x1b[31md\x7fe\u202ef.jpg") == "a\\nb\\tc\\x1b[31md\\x7fe\\u202ef.jpg"
    assert shown(stored(os.fsdecode(b"x\xff.jpg"))) == "x\ufffdFF.jpg"
    assert shown("plain é.jpg") == "plain é.jpg"


# -- the scan ---------------------------------------------------------------------------------------


@dataclass
class Indexed:
    cfg: Config
    db: aiosqlite.Connection
    pool: WorkerPool
    root: Path

    async def scan(self, mode: str = "full", name: str = "main") -> ScanReport:
        [report] = await run_scan(self.db, self.cfg, [ScanTarget(await get_library(self.db, name))], mode, self.pool)
        return report

    async def rows(self) -> dict[str, tuple[Any, ...]]:
        async with self.db.execute("SELECT rel_path, id, size, mtime_ns, content_hash, thumb_state, error "
                                   "FROM files") as cur:
            return {r[0]: tuple(r[1:]) for r in await cur.fetchall()}


@pytest.fixture()
async def indexed(env_dirs: dict[str, Path]) -> AsyncIterator[Indexed]:
    root = env_dirs["tmp"] / "photos"
    root.mkdir()
    cfg = load_config(workers=1)
    db = await connect(cfg.database_path)
    await add_library(db, "main", root)
    pool = WorkerPool(1)
    try:
        yield Indexed(cfg, db, pool, root)
    finally:
        pool.close()
        await db.close()


ODD_NAMES = [
    b"bad\xff\xfe.jpg",                      # not UTF-8 (a ZIP made on Windows, an old NAS share)
    b"caf\xe9/photo.jpg",                    # a Latin-1 folder name
    "real\ufffd.jpg".encode(),               # U+FFFD really in the name
    "bad\ufffdFF\ufffdFE.jpg".encode(),      # literally what the first one is listed as
]


async def test_names_that_are_not_utf8_are_indexed_once_each_and_kept_by_rescans(indexed: Indexed) -> None:
    for i, rel in enumerate(ODD_NAMES):
        put(indexed.root, rel, tiny_jpeg(i))
    old_enough(indexed.root)
    report = await indexed.scan()
    assert (report.counts.added, report.counts.errors) == (4, 0)
    rows = await indexed.rows()
    assert set(rows) == {listed(r) for r in ODD_NAMES} == {
        "bad\ufffdFF\ufffdFE.jpg", "caf\ufffdE9/photo.jpg", "real\ufffd\ufffd.jpg",
        "bad\ufffd\ufffdFF\ufffd\ufffdFE.jpg"}
    for rel in ODD_NAMES:
        assert rows[listed(rel)][4] == "done"
        # The thumbnail mirror holds the real bytes of the name.
        assert os.path.isfile(os.path.join(os.fsencode(indexed.cfg.thumbnails / "main"), rel))
    for mode in ("full", "quick"):
        c = (await indexed.scan(mode)).counts
        assert (c.added, c.changed, c.removed, c.moved, c.errors) == (0, 0, 0, 0, 0), mode
    assert await indexed.rows() == rows

    # A rename keeps the row (and what hangs off its content).
    os.rename(os.path.join(os.fsencode(indexed.root), ODD_NAMES[0]),
              os.path.join(os.fsencode(indexed.root), b"moved\xfe.jpg"))
    c = (await indexed.scan()).counts
    assert (c.moved, c.added, c.removed) == (1, 0, 0)
    after = await indexed.rows()
    assert after["moved\ufffdFE.jpg"][0] == rows[listed(ODD_NAMES[0])][0]
    assert listed(ODD_NAMES[0]) not in after
    thumbs = os.fsencode(indexed.cfg.thumbnails / "main")
    assert os.path.isfile(os.path.join(thumbs, b"moved\xfe.jpg"))
    assert not os.path.exists(os.path.join(thumbs, ODD_NAMES[0]))


async def test_names_near_the_limits_are_recorded_not_fatal(indexed: Indexed, env_dirs: dict[str, Path]) -> None:
    long_name = b"L" * 251 + b".jpg"                       # 255 bytes: gets its thumbnail
    put(indexed.root, long_name, tiny_jpeg(1))
    put(indexed.root, b"ok.jpg", tiny_jpeg(2))
    # A tree deeper than PATH_MAX (made relative to a folder fd: no absolute path can reach it).
    fd = os.open(indexed.root, os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir(b"D" * 250, dir_fd=fd)
            new = os.open(b"D" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
        with open(os.open(b"deep.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
            fh.write(tiny_jpeg(3))
    finally:
        os.close(fd)
    report = await indexed.scan()
    rows = await indexed.rows()
    assert rows[long_name.decode()][4] == "done" and rows["ok.jpg"][4] == "done"
    assert report.failed is None and report.counts.errors >= 1
    assert any("too long" in e for _, e in report.errors)
    # With a thumbnail folder that leaves no room for the name: an error on the row, the scan goes on.
    deep_thumbs = env_dirs["tmp"] / "t" / (("T" * 200 + "/") * 19)
    deep_thumbs.mkdir(parents=True)
    cfg = load_config(workers=1, thumbnails=deep_thumbs)
    [again] = await run_scan(indexed.db, cfg, [ScanTarget(await get_library(indexed.db, "main"))], "full",
                             indexed.pool)
    assert again.failed is None
    async with transaction(indexed.db):
        await indexed.db.execute("DELETE FROM files")
        await indexed.db.execute("DELETE FROM dirs")
    [fresh] = await run_scan(indexed.db, cfg, [ScanTarget(await get_library(indexed.db, "main"))], "full",
                             indexed.pool)
    rows = await indexed.rows()
    assert fresh.failed is None and rows["ok.jpg"][4] == "done"
    assert rows[long_name.decode()][4] == "failed" and "too long" in rows[long_name.decode()][5]


async def test_migration_10_doubles_a_real_replacement_character(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, [m for m in MIGRATIONS if m.version < 10])
    conn.execute("INSERT INTO libraries (name, root, created_at) VALUES ('main', '/x', 'now')")
    conn.execute("INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, first_seen, last_seen) "
                 "VALUES (1, 'a\ufffd/b\ufffd.jpg', 'a\ufffd', 'image', 1, 1, 'now', 'now')")
    conn.execute("INSERT INTO dirs (library_id, rel_path, mtime_ns) VALUES (1, 'a\ufffd', 1)")
    apply_migrations(conn)
    assert conn.execute("SELECT rel_path, dir FROM files").fetchone() == ("a\ufffd\ufffd/b\ufffd\ufffd.jpg",
                                                                         "a\ufffd\ufffd")
    assert conn.execute("SELECT rel_path FROM dirs").fetchone() == ("a\ufffd\ufffd",)
    assert on_disk("a\ufffd\ufffd/b\ufffd\ufffd.jpg") == "a\ufffd/b\ufffd.jpg"
    conn.close()


# -- one library's trouble never stops another's -----------------------------------------------------


async def test_a_missing_root_does_not_stop_the_other_libraries(indexed: Indexed, env_dirs: dict[str, Path]) -> None:
    gone = env_dirs["tmp"] / "nas"
    put(gone, b"x.jpg", tiny_jpeg(1))
    await add_library(indexed.db, "aaa", gone)   # scanned first (by name)
    shutil.rmtree(gone)                           # the share is not mounted
    put(indexed.root, b"a.jpg", tiny_jpeg(2))
    other = env_dirs["tmp"] / "other"
    put(other, b"b.jpg", tiny_jpeg(3))
    await add_library(indexed.db, "zzz", other)
    targets = [ScanTarget(await get_library(indexed.db, n)) for n in ("aaa", "main", "zzz")]
    reports = await run_scan(indexed.db, indexed.cfg, targets, "full", indexed.pool)
    by_lib = {r.library: r for r in reports}
    assert by_lib["aaa"].failed and str(gone) in by_lib["aaa"].failed
    assert by_lib["main"].counts.added == 1 and by_lib["zzz"].counts.added == 1
    assert by_lib["main"].failed is None and by_lib["zzz"].failed is None
    async with indexed.db.execute("SELECT l.name, s.status, s.error FROM scans s JOIN libraries l "
                                  "ON l.id = s.library_id") as cur:
        scans = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    assert scans["aaa"][0] == "failed" and "cannot read" in scans["aaa"][1]
    assert scans["main"][0] == scans["zzz"][0] == "done"

    # The watcher: the tick goes on, and its status says which library failed, why and when.
    watcher = ServerWatcher(indexed.db, indexed.cfg, indexed.pool)
    result = await watcher.scan_tick("quick")
    assert "library aaa failed" in result.line
    libs = watcher.status()["libraries"]
    assert libs["aaa"]["ok"] is False and "cannot read" in libs["aaa"]["last_error"] and libs["aaa"]["last_error_at"]
    assert libs["main"]["ok"] is True and libs["main"]["last_error"] is None


def imageapi(*args: str | bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, env=env, timeout=120)


def test_cli_scan_and_info_with_odd_names(env_dirs: dict[str, Path]) -> None:
    env = dict(os.environ)
    root = env_dirs["tmp"] / "Pictures"
    put(root, b"bad\xff\xfe.jpg", tiny_jpeg(1))
    put(root, b"ctl\nname\x1b[31m.jpg", tiny_jpeg(2))
    put(root, b"[bold]x[/].jpg", tiny_jpeg(3))
    put(root, b"[/]broken\x1b.jpg", b"not a JPEG")   # its error line quotes the name
    res = imageapi("scan", "--full", str(root), env=env)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert b"Traceback" not in res.stderr and b"4 added" in res.stdout
    assert b"[/]broken\\x1b.jpg" in res.stderr and b"\x1b" not in res.stderr
    res = imageapi("info", os.path.join(os.fsencode(root), b"bad\xff\xfe.jpg"), env=env)
    assert res.returncode == 0 and "bad\ufffdFF\ufffdFE.jpg".encode() in res.stdout
    # By the path the listing gives, too.
    res = imageapi("info", "--library", "main", "--json", "bad\ufffdFF\ufffdFE.jpg", env=env)
    assert res.returncode == 0 and b'"path": "bad\\ufffdFF\\ufffdFE.jpg"' in res.stdout
    res = imageapi("info", os.path.join(os.fsencode(root), b"ctl\nname\x1b[31m.jpg"), env=env)
    assert res.returncode == 0 and b"\x1b" not in res.stdout and b"ctl\\nname\\x1b[31m.jpg" in res.stdout
    res = imageapi("info", "--library", "main", "[bold]x[/].jpg", env=env)
    assert res.returncode == 0 and b"[bold]x[/].jpg" in res.stdout


def test_cli_scan_goes_on_past_a_missing_root_and_says_so(env_dirs: dict[str, Path]) -> None:
    env = dict(os.environ)
    gone, root = env_dirs["tmp"] / "nas", env_dirs["tmp"] / "Pictures"
    put(gone, b"x.jpg", tiny_jpeg(1))
    put(root, b"a.jpg", tiny_jpeg(2))
    assert imageapi("library", "add", "aaa", str(gone), env=env).returncode == 0
    assert imageapi("library", "add", "main", str(root), env=env).returncode == 0
    shutil.rmtree(gone)
    res = imageapi("scan", env=env)
    assert res.returncode == 8, res.stderr
    assert b"aaa" in res.stderr and b"scan failed" in res.stderr and b"Traceback" not in res.stderr
    assert b"main: 1 files, 1 added" in res.stdout
    res = imageapi("scan", "--json", env=env)
    assert res.returncode == 8 and b'"failed": "library \'aaa\': cannot read' in res.stdout


# -- the server -------------------------------------------------------------------------------------


@dataclass
class Live:
    client: TestClient[Any, Any]
    cfg: Config
    db: aiosqlite.Connection
    pool: WorkerPool
    root: Path
    auth: dict[str, str]

    async def scan(self, mode: str = "full", subtree: str = "") -> ScanReport:
        [report] = await run_scan(self.db, self.cfg, [ScanTarget(await get_library(self.db, "main"), subtree)],
                                  mode, self.pool)
        return report

    async def listing(self, path: str = "") -> list[dict[str, Any]]:
        r = await self.client.get("/photos", params={"path": path, "recursive": "true", "limit": "1000",
                                                      "sort": "name_asc"}, headers=self.auth)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert body["next_cursor"] is None
        return list(body["items"])

    async def fetch(self, path: str, size: str) -> tuple[int, bytes]:
        r = await self.client.get("/image", params={"path": path, "size": size}, headers=self.auth)
        return r.status, await r.read()


async def start_live(base: Path, extra: dict[str, str] | None = None) -> Live:
    root = base / "library"
    root.mkdir(parents=True, exist_ok=True)
    env = {"IMAGEAPI_DATA_DIR": str(base / "data"), "BASE_PATH": str(root), "SECRET_KEY": SECRET,
           "WORKERS": "1", **(extra or {})}
    cfg = load_config(environ=env, cwd=base)
    client = TestClient(TestServer(create_app(cfg)))
    await client.start_server()
    db = await connect(cfg.database_path)
    await add_user(db, "alice", hash_password("correct horse battery"))
    db.row_factory = aiosqlite.Row
    user = await get_user(db, "alice")
    token = TokenService(SECRET).issue(user, 3600).token
    return Live(client, cfg, db, WorkerPool(1), root, {"Authorization": f"Bearer {token}"})


async def stop_live(live: Live) -> None:
    live.pool.close()
    await live.db.close()
    await live.client.close()


@pytest.fixture()
async def live(env_dirs: dict[str, Path]) -> AsyncIterator[Live]:
    srv = await start_live(env_dirs["tmp"])
    try:
        yield srv
    finally:
        await stop_live(srv)


async def check_served(live: Live, files: dict[bytes, bytes], folder: str = "") -> None:
    """Every file is listed once, and its original, preview and thumbnail come back by that path."""
    items = await live.listing(folder)
    prefix = os.fsencode(on_disk(folder)) + b"/" if folder else b""
    assert sorted(i["path"] for i in items) == sorted(listed(prefix + rel) for rel in files)
    for item in items:
        raw = os.fsencode(on_disk(item["path"]))[len(prefix):]
        status, body = await live.fetch(item["path"], "full")
        assert (status, body) == (200, files[raw]), item["path"]
        for size in ("thumb", "preview"):
            status, body = await live.fetch(item["path"], size)
            assert status == 200 and body[:2] == b"\xff\xd8", (item["path"], size, body[:200])
        r = await live.client.get("/image/metadata", params={"path": item["path"]}, headers=live.auth)
        assert r.status == 200 and (await r.json())["path"] == item["path"]


async def test_server_serves_names_that_are_not_utf8(live: Live) -> None:
    files = {rel: put(live.root, rel, tiny_jpeg(i)) and tiny_jpeg(i) for i, rel in enumerate(ODD_NAMES)}
    report = await live.scan()
    assert report.counts.added == 4 and report.counts.errors == 0
    await check_served(live, files)
    # A text that is the stored form of no name is a 400, not a 500 or another file.
    for bad in ("bad\ufffdff.jpg", "bad\ufffdC3\ufffdA9.jpg", "bad\ufffd"):
        for size in ("thumb", "full"):
            r = await live.client.get("/image", params={"path": bad, "size": size}, headers=live.auth)
            assert r.status in (400, 404), (bad, size, r.status)
            assert_error(await r.json())


CONTROL_NAMES = [
    b"ctl\nname.jpg", b"tab\there.jpg", b"esc\x1b[31m.jpg", b"del\x7f.jpg", b"cr\r.jpg",
    b"back\\slash.jpg", b"C:drive.jpg", b"pct%41%2e%2f.jpg", b"[x] & ?#=+.jpg", b"L" * 251 + b".jpg",
]


async def test_server_serves_names_with_control_characters_and_backslashes(live: Live) -> None:
    files = {rel: put(live.root, rel, tiny_jpeg(i)) and tiny_jpeg(i) for i, rel in enumerate(CONTROL_NAMES)}
    report = await live.scan()
    assert report.counts.added == len(CONTROL_NAMES) and report.counts.errors == 0, report.errors
    await check_served(live, files)


async def test_over_long_paths_are_a_4xx(live: Live) -> None:
    put(live.root, b"ok.jpg", tiny_jpeg(1))
    await live.scan()
    for path in ("a" * 300 + ".jpg", "/".join(["d" * 250] * 20) + "/x.jpg", "\u00e9" * 200 + ".jpg"):
        for size in ("thumb", "full", "preview"):
            r = await live.client.get("/image", params={"path": path, "size": size}, headers=live.auth)
            assert r.status == 400, (path[:20], size, r.status)
            assert_error(await r.json())
        for endpoint in ("/image/metadata", "/video", "/photos"):
            r = await live.client.get(endpoint, params={"path": path}, headers=live.auth)
            assert r.status == 400, (endpoint, r.status)


async def test_thumbnail_folder_too_deep_for_a_name_is_a_4xx(env_dirs: dict[str, Path]) -> None:
    deep = env_dirs["tmp"] / "t" / (("T" * 200 + "/") * 19)
    deep.mkdir(parents=True)
    srv = await start_live(env_dirs["tmp"], {"THUMBNAILS": str(deep)})
    try:
        name = b"L" * 251 + b".jpg"
        put(srv.root, name, tiny_jpeg(1))
        report = await srv.scan()
        assert report.counts.added == 1
        status, body = await srv.fetch(name.decode(), "thumb")
        assert 400 <= status < 500, (status, body[:300])
        status, body = await srv.fetch(name.decode(), "full")
        assert status == 200 and body == tiny_jpeg(1)
    finally:
        await stop_live(srv)


async def test_status_shows_a_missing_root_while_the_others_are_watched(
    aiohttp_client: AiohttpClient, env_dirs: dict[str, Path]
) -> None:
    base = env_dirs["tmp"]
    gone = base / "nas"
    put(gone, b"x.jpg", tiny_jpeg(1))
    root = base / "library"
    put(root, b"a.jpg", tiny_jpeg(2))
    put(base / "zzz", b"b.jpg", tiny_jpeg(3))
    cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(base / "data"), "SECRET_KEY": SECRET, "WORKERS": "1"},
                      cwd=base)
    db = await connect(cfg.database_path)
    for name, path in (("aaa", gone), ("main", root), ("zzz", base / "zzz")):
        await add_library(db, name, path)
    await add_user(db, "alice", hash_password("correct horse battery"))
    db.row_factory = aiosqlite.Row
    token = TokenService(SECRET).issue(await get_user(db, "alice"), 3600).token
    await db.close()
    shutil.rmtree(gone)
    client = await aiohttp_client(create_app(cfg, watch=True))
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(200):
        r = await client.get("/status", headers=auth)
        status = await r.json()
        if "full" in status["watcher"].get("last", {}) or "quick" in status["watcher"].get("last", {}):
            break
        await asyncio.sleep(0.1)
    libs = status["watcher"]["libraries"]
    assert libs["aaa"]["ok"] is False and "cannot read" in libs["aaa"]["last_error"]
    assert libs["main"]["ok"] is True and libs["zzz"]["ok"] is True
    r = await client.get("/libraries", headers=auth)
    files = {lib["name"]: lib["files"] for lib in (await r.json())["libraries"]}
    assert files == {"aaa": 0, "main": 1, "zzz": 1}


# -- any name a filesystem holds ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, Live]]:
    loop = asyncio.new_event_loop()
    live = loop.run_until_complete(start_live(tmp_path_factory.mktemp("names_fuzz")))
    try:
        yield loop, live
    finally:
        loop.run_until_complete(stop_live(live))
        loop.close()


COUNTER = iter(range(10**9))


def indexable(name: bytes, ignore: IgnoreRules) -> bool:
    return not ignore(os.fsdecode(name))


@given(st.lists(st.tuples(st.one_of(st.none(), NAME_BYTES), NAME_BYTES.map(lambda b: b[:251]),
                          st.sampled_from([b".jpg", b".JPG", b".jpeg"])),
                min_size=1, max_size=6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_name_is_indexed_once_served_and_left_alone(
    live_loop: tuple[asyncio.AbstractEventLoop, Live], entries: list[tuple[bytes | None, bytes, bytes]]
) -> None:
    loop, live = live_loop
    ignore = IgnoreRules(live.cfg.ignore_patterns)
    files: dict[bytes, bytes] = {}
    for folder, stem, ext in entries:
        name = stem + ext
        assume(indexable(name, ignore) and (folder is None or indexable(folder, ignore)))
        files[name if folder is None else folder + b"/" + name] = b""
    # A top-level file and a folder cannot share a name.
    assume(not {r for r in files if b"/" not in r} & {r.split(b"/")[0] for r in files if b"/" in r})
    folder = f"case{next(COUNTER)}"
    for i, rel in enumerate(files):
        files[rel] = tiny_jpeg(i)
        put(live.root / folder, rel, files[rel])

    async def run() -> None:
        report = await live.scan("full", folder)
        assert report.failed is None and report.counts.errors == 0, report.errors
        assert report.counts.added == len(files)
        await check_served(live, files, folder)
        async with live.db.execute("SELECT * FROM files WHERE dir = ? OR dir LIKE ?",
                                   (folder, folder + "/%")) as cur:
            before = sorted(tuple(r) for r in await cur.fetchall())
        assert len(before) == len(files)
        for mode in ("full", "quick"):
            c = (await live.scan(mode, folder)).counts
            assert (c.added, c.changed, c.removed, c.moved, c.errors) == (0, 0, 0, 0, 0), mode
        async with live.db.execute("SELECT * FROM files WHERE dir = ? OR dir LIKE ?",
                                   (folder, folder + "/%")) as cur:
            after = sorted(tuple(r) for r in await cur.fetchall())
        assert after == before

    loop.run_until_complete(run())


async def test_a_video_that_fails_records_its_error_whatever_its_name(indexed: Indexed) -> None:
    """ffmpeg's message quotes the file's path: a name that is not UTF-8 must not stop the preview
    pass (or HLS) from recording it."""
    from imageapi.core.errors import ToolError
    from imageapi.core.hls import record_failure
    from imageapi.core.previews import preview_pass

    put(indexed.root, b"clip\xff.mp4", b"not a video at all" * 100)
    await indexed.scan()
    report = await preview_pass(indexed.db, indexed.cfg, max_items=5)
    assert report.failed == 1
    async with indexed.db.execute("SELECT rel_path, preview_error FROM files") as cur:
        [(rel, error)] = await cur.fetchall()
    assert rel == "clip\ufffdFF.mp4" and error
    await record_failure(indexed.db, "main", rel, "1-1", ToolError(f"ffmpeg failed on {indexed.root}/clip\udcff.mp4"))
    async with indexed.db.execute("SELECT hls_error FROM files") as cur:
        [(hls_error,)] = await cur.fetchall()
    assert hls_error.endswith("clip\ufffdFF.mp4")


def test_cli_video_errors_show_names_escaped(env_dirs: dict[str, Path]) -> None:
    env = dict(os.environ)
    root = env_dirs["tmp"] / "Pictures"
    put(root, b"[/]clip\x1b\xff.mp4", b"not a video at all" * 100)
    assert imageapi("scan", "--full", str(root), env=env).returncode == 0
    res = imageapi("--log-level", "error", "video", "previews", env=env)
    assert b"Traceback" not in res.stderr and b"MarkupError" not in res.stderr, res.stderr
    assert "main/[/]clip\\x1b\ufffdFF.mp4".encode() in res.stderr and b"\x1b" not in res.stderr
