# ruff: noqa: F811  (pytest fixtures imported from tests.test_video_server are parameters here)
"""Preview clips and GIFs: made with the real ffmpeg at the stated size (probed), upright, silent,
faststart; failures recorded and nothing partial left; the backlog query, the pass, the watcher's
capped share per tick; GET /video/preview, /video/gif and /video/wall."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from imageapi.core.config import Config, load_config
from imageapi.core.database import transaction
from imageapi.core.db import connect
from imageapi.core.errors import ImageapiError, MediaError
from imageapi.core.ffmpeg_caps import caps, readrate_args
from imageapi.core.libraries import add_library
from imageapi.core.pool import WorkerPool
from imageapi.core.previews import (
    CLIP_WIDTH,
    GIF_WIDTH,
    clip_path,
    due_previews,
    gif_path,
    make_previews,
    preview_pass,
    preview_status,
    retry_failed,
    sample_windows,
)
from imageapi.core.scan import ScanTarget, run_scan
from imageapi.core.watch import Watcher
from tests.media_factory import make_jpeg
from tests.test_server_support import Server, assert_error
from tests.test_video_server import video_template, vserver  # noqa: F401  (fixtures)
from tests.test_video_support import (
    CountingRunner,
    decode,
    eventually,
    files_under,
    make_video,
    probe,
    processes_with,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preview_videos")
    return {
        "wide": make_video(root / "wide.mp4", 10, size="640x360"),
        "turned": make_video(root / "turned.mp4", 6, size="640x360", rotate_ccw=90),
        "short": make_video(root / "short.mp4", 1.5),
        "mpeg4": make_video(root / "old.avi", 8, vcodec="mpeg4", audio="mp3"),
    }


@pytest.fixture()
def config(env_dirs: dict[str, Path]) -> Config:
    return load_config(environ={"IMAGEAPI_DATA_DIR": str(env_dirs["data"])}, cwd=env_dirs["tmp"])


def moov_before_mdat(path: Path) -> bool:
    """faststart: the index (moov) comes before the media data, so a player starts at once."""
    data = path.read_bytes()
    return 0 < data.find(b"moov") < data.find(b"mdat")


# --------------------------------------------------------------------------------------------
# One video


def test_sample_windows() -> None:
    assert sample_windows(None) == [(0.0, 3.0)]
    assert sample_windows(float("nan")) == [(0.0, 3.0)]
    assert sample_windows(2.0) == [(0.0, 2.0)]
    wins = sample_windows(600.0)
    assert len(wins) == 3 and all(length == 1.0 for _, length in wins)
    assert [round(s) for s, _ in wins] == [100, 300, 500]
    for duration in (3.6, 4.0, 10.0, 7200.0):
        wins = sample_windows(duration)
        assert all(0 <= s and s + n <= duration for s, n in wins)
        assert [s for s, _ in wins] == sorted(s for s, _ in wins)


@pytest.mark.parametrize(("name", "size", "seconds"), [
    ("wide", (320, 180), 3.0), ("turned", (320, 568), 3.0), ("short", (320, 240), 1.5), ("mpeg4", (320, 240), 3.0),
])
async def test_clip_and_gif(config: Config, clips: dict[str, Path], name: str, size: tuple[int, int],
                            seconds: float) -> None:
    src = clips[name]
    made = await make_previews(config, "main", f"a/{src.name}", src, (await probe(str(src))).duration)
    clip, gif = clip_path(config, "main", f"a/{src.name}"), gif_path(config, "main", f"a/{src.name}")
    assert made.clip == clip and made.gif == gif and clip.name == f"{src.name}.mp4"
    info = await probe(str(clip))
    # Upright (the turned one is portrait), CLIP_WIDTH wide, H.264, silent, faststart.
    assert (info.video_codec, info.width, info.height, info.rotation, info.audio_codec) == ("h264", *size, 0, None)
    assert size[0] == CLIP_WIDTH and moov_before_mdat(clip)
    assert info.duration is not None and abs(info.duration - seconds) < 0.25
    played = await decode(str(clip))
    assert played.returncode == 0 and played.seconds is not None and abs(played.seconds - seconds) < 0.25
    ginfo = await probe(str(gif))
    assert ginfo.video_codec == "gif" and ginfo.width == GIF_WIDTH and ginfo.height is not None
    assert abs(ginfo.height - GIF_WIDTH * size[1] / size[0]) <= 1
    assert gif.read_bytes()[:6] == b"GIF89a" and b"NETSCAPE2.0" in gif.read_bytes()  # loops
    assert files_under(config.preview_clips_directory) == ["main", "main/a", f"main/a/{src.name}.mp4"]


async def test_unreadable_videos_leave_nothing(config: Config, clips: dict[str, Path], corpus: Path,
                                               tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(corpus / "bad" / "truncated.mp4", bad / "truncated.mp4")
    shutil.copy(corpus / "bad" / "actually_elf.mp4", bad / "elf.mp4")
    (bad / "unknown.avi").write_bytes(clips["mpeg4"].read_bytes().replace(b"FMP4", b"ZZZZ"))
    for name in ("truncated.mp4", "elf.mp4", "unknown.avi"):
        rel = f"bad/{name}"
        # An older, good preview under the same name is removed too: it would be of another file.
        old = clip_path(config, "main", rel)
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_bytes(b"old clip")
        with pytest.raises(MediaError):
            await make_previews(config, "main", rel, bad / name, 5.0)
        assert not old.exists() and not gif_path(config, "main", rel).exists()
    assert [p for p in files_under(config.preview_clips_directory) if "." in Path(p).name] == []
    assert [p for p in files_under(config.gifs_directory) if "." in Path(p).name] == []


async def test_killed_run_leaves_nothing(config: Config, clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "slow.mp4"
    shutil.copy(clips["wide"], src)
    rel = "slow.mp4"
    dest = clip_path(config, "main", rel)
    # What a killed process left: a temporary file, never served (and removed by the next run).
    dest.parent.mkdir(parents=True)
    (dest.parent / f".{dest.name}.tmp-dead").write_bytes(b"partial")

    async def slow(args: list[str], timeout: float, **kw: Any) -> Any:
        return await CountingRunner()([args[0], *readrate_args(caps(args[0]), 0.1), *args[1:]], timeout, **kw)

    task = asyncio.create_task(make_previews(config, "main", rel, src, 10.0, slow))
    assert await eventually(lambda: bool(processes_with(str(src))))
    assert not (dest.parent / f".{dest.name}.tmp-dead").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with(str(src)) == []
    assert os.listdir(dest.parent) == [] and not gif_path(config, "main", rel).exists()


# --------------------------------------------------------------------------------------------
# The backlog and the pass


@pytest.fixture()
async def library(config: Config, clips: dict[str, Path],
                  tmp_path: Path) -> AsyncIterator[tuple[aiosqlite.Connection, Path]]:
    root = tmp_path / "videos"
    (root / "2021").mkdir(parents=True)
    shutil.copy(clips["wide"], root / "2021" / "wide.mp4")
    shutil.copy(clips["short"], root / "2021" / "short.mp4")
    shutil.copy(clips["turned"], root / "turned.mp4")
    (root / "broken.mp4").write_bytes(clips["wide"].read_bytes()[:30000])
    make_jpeg(root / "photo.jpg")
    db = await connect(config.database_path)
    pool = WorkerPool(1)
    try:
        lib = await add_library(db, "main", root)
        await run_scan(db, config, [ScanTarget(lib)], "full", pool)
        yield db, root
    finally:
        pool.close()
        await db.close()


def rows(config: Config) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(config.database_path)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT rel_path, preview_state, preview_source, preview_error FROM files WHERE kind = 'video'")}
    finally:
        conn.close()


async def test_pass_records_and_does_not_retry(config: Config, library: tuple[aiosqlite.Connection, Path]) -> None:
    db, root = library
    st = await preview_status(db)
    assert (st.videos, st.done, st.failed, st.due) == (4, 0, 0, 4)
    seen: list[tuple[str, int, int | None]] = []
    rep = await preview_pass(db, config, jobs=2, progress=lambda *a: seen.append(a))
    assert (rep.made, rep.failed, rep.remaining) == (3, 1, 0)
    assert rep.errors[0][0] == "main/broken.mp4" and seen[-1] == ("previews", 4, 4)
    state = rows(config)
    assert state["broken.mp4"][0] == "failed" and state["broken.mp4"][2]
    assert {k: v[0] for k, v in state.items() if k != "broken.mp4"} == {
        "2021/wide.mp4": "done", "2021/short.mp4": "done", "turned.mp4": "done"}
    assert not clip_path(config, "main", "broken.mp4").exists()
    # Nothing is due: a failure is not tried again, done ones are not made again.
    runner = CountingRunner()
    again = await preview_pass(db, config, runner=runner)
    assert (again.made, again.failed, again.remaining) == (0, 0, 0) and runner.calls == []
    # retry-failed puts it back; it fails again and is recorded again.
    assert await retry_failed(db) == 1
    assert [c.rel for c in await due_previews(db)] == ["broken.mp4"]
    rep = await preview_pass(db, config)
    assert (rep.made, rep.failed) == (0, 1)
    # A changed file (as the scan records it) is due again; so is a moved one.
    async with transaction(db):
        await db.execute("UPDATE files SET mtime_ns = mtime_ns + 1 WHERE rel_path = '2021/wide.mp4'")
        await db.execute("UPDATE files SET rel_path = 'moved.mp4', dir = '' WHERE rel_path = 'turned.mp4'")
    assert sorted(c.rel for c in await due_previews(db)) == ["2021/wide.mp4", "moved.mp4"]
    shutil.move(root / "turned.mp4", root / "moved.mp4")
    rep = await preview_pass(db, config, max_items=1)
    assert (rep.made, rep.remaining) == (1, 1)
    rep = await preview_pass(db, config)
    assert (rep.made, rep.remaining) == (1, 0) and clip_path(config, "main", "moved.mp4").is_file()


async def test_due_query_filters(config: Config, library: tuple[aiosqlite.Connection, Path]) -> None:
    db, _root = library
    all_due = await due_previews(db)
    assert len(all_due) == 4 and [c.id for c in all_due] == sorted(c.id for c in all_due)
    assert [c.rel for c in await due_previews(db, after_id=all_due[1].id)] == [c.rel for c in all_due[2:]]
    assert len(await due_previews(db, limit=2)) == 2
    assert await due_previews(db, library_ids=[999]) == []
    assert len(await due_previews(db, library_ids=[all_due[0].library.id])) == 4


async def test_watcher_makes_a_capped_number_per_tick(env_dirs: dict[str, Path], clips: dict[str, Path]) -> None:
    root = env_dirs["tmp"] / "lib"
    for i in range(3):
        make_video(root / f"v{i}.mp4", 2)
    env = {"IMAGEAPI_DATA_DIR": str(env_dirs["data"]), "BASE_PATH": str(root), "VIDEO_PREVIEWS_MAX_PER_TICK": "2"}
    config = load_config(environ=env, cwd=env_dirs["tmp"])
    db = await connect(config.database_path)
    pool = WorkerPool(1)
    try:
        from imageapi.core.libraries import sync_base_path

        await sync_base_path(db, config)
        watcher = Watcher(db, config, pool)
        first = await watcher.scan_tick("quick")
        assert first.previews is not None and (first.previews.made, first.previews.remaining) == (2, 1)
        assert "video previews: 2 made, 0 failed, 1 due" in first.line
        second = await watcher.scan_tick("quick")
        assert second.previews is not None and (second.previews.made, second.previews.remaining) == (1, 0)
        third = await watcher.scan_tick("quick")
        assert third.previews is not None and third.previews.made == 0 and "video previews" not in third.line
        off = Watcher(db, load_config(environ={**env, "VIDEO_PREVIEWS_MAX_PER_TICK": "0"}, cwd=env_dirs["tmp"]), pool)
        assert (await off.scan_tick("quick")).previews is None
    finally:
        pool.close()
        await db.close()
    with pytest.raises(ImageapiError, match="VIDEO_PREVIEWS_MAX_PER_TICK"):
        load_config(environ={**env, "VIDEO_PREVIEWS_MAX_PER_TICK": "-1"}, cwd=env_dirs["tmp"])


# --------------------------------------------------------------------------------------------
# The endpoints


async def make_all(server: Server) -> None:
    db = await connect(server.config.database_path)
    try:
        await preview_pass(db, server.config, jobs=2)
    finally:
        await db.close()


async def test_preview_and_gif_endpoints(vserver: Server) -> None:
    params = {"path": "trip/beach.mp4"}
    for url in ("/video/preview", "/video/gif"):
        r = await vserver.client.get(url, params=params, headers=vserver.auth)
        assert r.status == 404
        assert_error(await r.json(), "preview_pending")
    await make_all(vserver)
    r = await vserver.client.get("/video/preview", params=params, headers=vserver.auth)
    assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
    body = await r.read()
    assert body == clip_path(vserver.config, "main", "trip/beach.mp4").read_bytes()
    etag = r.headers["ETag"]
    r = await vserver.client.get("/video/preview", params=params, headers={**vserver.auth, "If-None-Match": etag})
    assert r.status == 304
    r = await vserver.client.get("/video/preview", params=params, headers={**vserver.auth, "Range": "bytes=10-19"})
    assert r.status == 206 and await r.read() == body[10:20]
    r = await vserver.client.get("/video/gif", params=params, headers=vserver.auth)
    assert r.status == 200 and r.headers["Content-Type"] == "image/gif" and (await r.read())[:6] == b"GIF89a"
    # Failed ones say why; a photo is not a video; a clip deleted by hand is due again.
    r = await vserver.client.get("/video/preview", params={"path": "bad/truncated.mp4"}, headers=vserver.auth)
    assert r.status == 422
    assert_error(await r.json(), "preview_failed")
    r = await vserver.client.get("/video/gif", params={"path": "photo.jpg"}, headers=vserver.auth)
    assert r.status == 400
    clip_path(vserver.config, "main", "trip/beach.mp4").unlink()
    r = await vserver.client.get("/video/preview", params=params, headers=vserver.auth)
    assert r.status == 404
    assert_error(await r.json(), "preview_pending")
    db = await connect(vserver.config.database_path)
    try:
        assert "trip/beach.mp4" in [c.rel for c in await due_previews(db)]
    finally:
        await db.close()
    r = await vserver.client.get("/video/preview", params=params)
    assert r.status == 401


async def test_wall(vserver: Server) -> None:
    await make_all(vserver)
    r = await vserver.client.get("/video/wall", headers=vserver.auth)
    assert r.status == 200
    body = await r.json()
    paths = [i["path"] for i in body["items"]]
    # Newest first by when they were taken (the videos' creation times); bad ones have mtimes.
    dated = [p for p in paths if not p.startswith("bad/") and p != "camera.mp4"]
    assert dated == ["trip/beach.mp4", "trip/sub/turned.mp4", "trip/old.mov", "long.mp4"]
    assert "photo.jpg" not in paths and body["recursive"] is True and body["next_cursor"] is None
    beach = body["items"][paths.index("trip/beach.mp4")]
    # 10.02 s where ffmpeg 4.2 muxed the fixture's AAC
    assert beach["duration"] == pytest.approx(10.0, abs=0.05)
    assert beach["size"] > 0 and beach["taken_at"].startswith("2021-06-01")
    assert beach["preview"] == {"state": "done", "error": None}
    broken = body["items"][paths.index("bad/truncated.mp4")]
    assert broken["preview"]["state"] == "failed" and broken["preview"]["error"]
    assert broken["urls"]["clip"] is None and broken["urls"]["gif"] is None
    # Every URL carries a media token that works without the Authorization header.
    for key in ("clip", "gif", "thumbnail", "stream", "original"):
        r = await vserver.client.get(beach["urls"][key])
        assert r.status == 200, (key, await r.text())
    # Pages by cursor cover the same list; a folder alone; its subtree.
    got: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await vserver.client.get("/video/wall", params=params, headers=vserver.auth)).json()
        got += [i["path"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert got == paths
    page = await (await vserver.client.get("/video/wall", params={"path": "trip", "recursive": "false"},
                                           headers=vserver.auth)).json()
    assert [i["path"] for i in page["items"]] == ["trip/beach.mp4", "trip/old.mov"]
    page = await (await vserver.client.get("/video/wall", params={"path": "trip"}, headers=vserver.auth)).json()
    assert [i["path"] for i in page["items"]] == ["trip/beach.mp4", "trip/sub/turned.mp4", "trip/old.mov"]
    for params, code in (({"cursor": "garbage"}, "bad_request"), ({"limit": "0"}, "bad_parameter"),
                         ({"path": "../x"}, "bad_path"), ({"recursive": "maybe"}, "bad_parameter")):
        r = await vserver.client.get("/video/wall", params=params, headers=vserver.auth)
        assert r.status == 400
        assert_error(await r.json(), code)
    r = await vserver.client.get("/video/wall", params={"library": "nope"}, headers=vserver.auth)
    assert r.status == 404
    r = await vserver.client.get("/video/wall", params={"mt": "x.y"})
    assert r.status == 401
