# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""GET /video/stream and /video/segment/{name} over real HTTP: ffmpeg as the HLS client reading the
served playlist start to end (copy, transcode, growing), media tokens in the segment URLs, one run
for concurrent first requests, failures in the one error shape and recorded on the row, the
shutdown killing a run."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from imageapi.core import hls
from imageapi.core.config import load_config
from imageapi.core.db import connect
from imageapi.core.libraries import get_library, sync_base_path
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import ScanTarget, run_scan
from imageapi.core.tokens import TokenService
from imageapi.core.users import add_user, get_user, hash_password
from imageapi.server.app import create_app
from imageapi.server.keys import LIBRARIES
from imageapi.server.routes_video import HLS
from tests.conftest import find_corpus
from tests.media_factory import make_jpeg
from tests.test_server_support import (
    PASSWORD,
    SECRET,
    USER,
    AiohttpClient,
    Server,
    Template,
    assert_error,
    environ,
    start_server,
)
from tests.test_video_support import (
    CountingRunner,
    decode,
    eventually,
    files_under,
    make_video,
    probe,
    processes_with,
)


def make_library(root: Path, outside: Path) -> None:
    make_video(root / "trip" / "beach.mp4", 10, created="2021-06-01T10:00:00Z")
    make_video(root / "trip" / "old.mov", 10, vcodec="mpeg4", audio="mp3", created="2019-05-01T08:00:00Z")
    make_video(root / "trip" / "sub" / "turned.mp4", 5, rotate_ccw=90, created="2020-01-01T12:00:00Z")
    make_video(root / "long.mp4", 12, created="2018-01-01T12:00:00Z")
    whole = (root / "trip" / "beach.mp4").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.mp4").write_bytes(whole[:20000])  # the moov (at the end) is gone
    # Seeded: some random bytes probe as an audio stream, which is another error.
    (root / "bad" / "noise.mp4").write_bytes(random.Random(0).randbytes(30000))
    make_jpeg(root / "photo.jpg")
    corpus = find_corpus()
    if corpus is not None:
        shutil.copy(corpus / "video" / "clip_6s.mp4", root / "camera.mp4")
    outside.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def video_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("video_template")
    tpl = Template(root=base / "library", data=base / "data", outside=base / "outside")
    make_library(tpl.root, tpl.outside)
    cfg = load_config(environ=environ(tpl, tpl.data), cwd=base)

    async def build() -> None:
        db = await connect(cfg.database_path)
        pool = WorkerPool(2)
        try:
            await sync_base_path(db, cfg)
            await run_scan(db, cfg, [ScanTarget(await get_library(db, "main"))], "full", pool)
            await add_user(db, USER, hash_password(PASSWORD))
        finally:
            pool.close()
            await db.close()

    asyncio.run(build())
    return tpl


@pytest.fixture()
async def vserver(aiohttp_client: AiohttpClient, video_template: Template,
                  env_dirs: dict[str, Path]) -> AsyncIterator[Server]:
    yield await start_server(aiohttp_client, video_template, env_dirs["tmp"])


async def media_token(server: Server, path: str) -> str:
    r = await server.client.post("/media-token", json={"path": path}, headers=server.auth)
    assert r.status == 200
    return str((await r.json())["token"])


def stream_path(path: str, **params: str) -> str:
    """The playlist's URL relative to the server (what the test client takes)."""
    return "/video/stream?" + urlencode({"library": "main", "path": path, **params})


def absolute(server: Server, relative: str) -> str:
    """The same URL for an outside client (ffmpeg)."""
    return str(server.client.make_url(relative))


def row(server: Server, path: str) -> Any:
    with server.db() as conn:
        return conn.execute("SELECT * FROM files WHERE rel_path = ?", (path,)).fetchone()


async def test_player_reads_the_playlist_start_to_end_copy_mode(vserver: Server) -> None:
    mt = await media_token(vserver, "trip/beach.mp4")
    rel = stream_path("trip/beach.mp4", mt=mt)
    url = absolute(vserver, rel)
    r = await vserver.client.get(rel)
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    text = await r.text()
    segments = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert segments and all(s.startswith("segment/seg") and f"mt={mt}" in s for s in segments)
    assert '#EXT-X-MAP:URI="segment/init.mp4?' in text
    out = await decode(url)  # ffmpeg as the player: playlist, init and every segment over HTTP
    assert out.returncode == 0, out.stderr
    assert out.seconds is not None and abs(out.seconds - 10.0) <= hls.HLS_TIME
    info = await probe(url)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 320, 240)


async def test_camera_file_and_transcode_with_a_bearer(vserver: Server) -> None:
    cases = [("trip/old.mov", 10.0, (320, 240)), ("trip/sub/turned.mp4", 5.0, (240, 320))]
    if (vserver.template.root / "camera.mp4").exists():
        cases.append(("camera.mp4", 6.0, (640, 360)))
    for path, seconds, size in cases:
        r = await vserver.client.get("/video/stream", params={"path": path}, headers=vserver.auth)
        assert r.status == 200, await r.text()
        # Asked with a Bearer: the segment URLs carry a media token made for this video.
        text = await r.text()
        seg = next(line for line in text.splitlines() if line.startswith("segment/"))
        mt = seg.split("mt=")[1]
        url = absolute(vserver, stream_path(path, mt=mt))  # the same token opens the playlist itself
        out = await decode(url)
        assert out.returncode == 0, out.stderr
        assert out.seconds is not None and abs(out.seconds - seconds) <= hls.HLS_TIME, (path, out.seconds)
        info = await probe(url)
        assert (info.video_codec, info.width, info.height, info.rotation) == ("h264", *size, 0), path
    # The media token of one video opens nothing else.
    r = await vserver.client.get("/video/stream", params={"path": "trip/beach.mp4", "mt": mt})
    assert r.status == 401
    assert_error(await r.json(), "unauthorized")


async def test_growing_playlist_is_read_to_the_end(vserver: Server) -> None:
    vserver.app[HLS].runner = CountingRunner(readrate=4)  # 12 s of video in ~3 s
    mt = await media_token(vserver, "long.mp4")
    rel = stream_path("long.mp4", mt=mt)
    url = absolute(vserver, rel)
    r = await vserver.client.get(rel)
    assert r.status == 200
    first = await r.text()
    assert "#EXT-X-ENDLIST" not in first and "#EXT-X-PLAYLIST-TYPE:EVENT" in first
    # A segment not listed yet is not served, even if ffmpeg is writing it.
    seg = next(line for line in first.splitlines() if line.startswith("segment/"))
    later = seg.replace("seg00000.m4s", "seg00099.m4s")
    r = await vserver.client.get("/video/" + later)
    assert r.status == 404
    assert_error(await r.json(), "not_found")
    out = await decode(url, "-live_start_index", "0")
    assert out.returncode == 0, out.stderr
    assert out.seconds is not None and abs(out.seconds - 12.0) <= hls.HLS_TIME
    final = await (await vserver.client.get(rel)).text()
    assert final.endswith("#EXT-X-ENDLIST\n")
    assert vserver.app[HLS].runner.segmenter_runs == 1  # type: ignore[attr-defined]


async def test_concurrent_first_requests_start_one_ffmpeg(vserver: Server) -> None:
    runner = CountingRunner()
    vserver.app[HLS].runner = runner
    rs = await asyncio.gather(*(vserver.client.get("/video/stream", params={"path": "trip/old.mov"},
                                                   headers=vserver.auth) for _ in range(4)))
    assert [r.status for r in rs] == [200] * 4
    assert runner.segmenter_runs == 1


async def test_segment_requests(vserver: Server) -> None:
    r = await vserver.client.get("/video/stream", params={"path": "trip/beach.mp4"}, headers=vserver.auth)
    seg = next(line for line in (await r.text()).splitlines() if line.startswith("segment/"))
    good = "/video/" + seg
    r = await vserver.client.get(good)
    assert r.status == 200 and r.headers["Content-Type"] == "video/iso.segment"
    body = await r.read()
    r = await vserver.client.get(good, headers={"Range": "bytes=0-99"})
    assert r.status == 206 and await r.read() == body[:100]
    for bad, status, code in (
        (good.replace("seg00000.m4s", "index.m3u8"), 400, "bad_parameter"),
        (good.replace("seg00000.m4s", "source.json"), 400, "bad_parameter"),
        (good.replace("v=copy", "v=other"), 400, "bad_parameter"),
        (good.replace("k=", "k=1-"), 404, "stream_gone"),
        (good.split("&mt=")[0], 401, "unauthorized"),
        (good.replace("path=trip%2Fbeach.mp4", "path=trip%2Fold.mov"), 401, "unauthorized"),
    ):
        r = await vserver.client.get(bad)
        assert r.status == status, (bad, await r.text())
        assert_error(await r.json(), code)


async def test_changed_source_gets_a_new_stream(vserver: Server) -> None:
    # The module's library is shared: this test points library `main` at a copy it may change.
    root = vserver.config.data_dir.parent / "library_copy"
    shutil.copytree(vserver.template.root, root)
    with vserver.db() as conn:
        conn.execute("UPDATE libraries SET root = ? WHERE name = 'main'", (str(root),))
    await vserver.app[LIBRARIES].refresh()
    r = await vserver.client.get("/video/stream", params={"path": "long.mp4"}, headers=vserver.auth)
    old_seg = next(line for line in (await r.text()).splitlines() if line.startswith("segment/"))
    assert (await vserver.client.get("/video/" + old_seg)).status == 200
    shutil.copy(vserver.template.root / "trip" / "sub" / "turned.mp4", root / "long.mp4")
    r = await vserver.client.get("/video/" + old_seg)
    assert r.status == 404
    assert_error(await r.json(), "stream_gone")
    r = await vserver.client.get("/video/stream", params={"path": "long.mp4"}, headers=vserver.auth)
    assert r.status == 200
    new_seg = next(line for line in (await r.text()).splitlines() if line.startswith("segment/"))
    assert new_seg != old_seg
    url = absolute(vserver, stream_path("long.mp4", mt=new_seg.split("mt=")[1]))
    out = await decode(url)
    assert out.returncode == 0 and out.seconds is not None and abs(out.seconds - 5.0) <= hls.HLS_TIME
    folder = vserver.config.video_path / "main" / "long.mp4"
    assert len(list(folder.glob(".gen-*"))) == 1  # the old generation is gone


async def test_failures_answer_in_the_error_shape_and_are_recorded(vserver: Server) -> None:
    runner = CountingRunner()
    vserver.app[HLS].runner = runner
    for path, status, code in (("bad/truncated.mp4", 422, "media_error"), ("bad/noise.mp4", 422, "media_error")):
        r = await vserver.client.get("/video/stream", params={"path": path}, headers=vserver.auth)
        assert r.status == status, await r.text()
        assert_error(await r.json(), code)
        rec = row(vserver, path)
        assert rec["hls_error"] and rec["hls_error_code"] == code
        assert rec["hls_source"] == hls.stat_key(vserver.template.root / path)
    calls = len(runner.calls)
    # Without the manager's memory (a restarted server) the answer comes from the row, no ffmpeg.
    vserver.app[HLS].forget_failure("main", "bad/truncated.mp4")
    r = await vserver.client.get("/video/stream", params={"path": "bad/truncated.mp4"}, headers=vserver.auth)
    assert r.status == 422
    assert_error(await r.json(), "media_error")
    assert len(runner.calls) == calls
    assert files_under(vserver.config.video_path) == []
    for params, status, code in (
        ({"path": "photo.jpg"}, 400, "bad_request"),
        ({"path": "nothere.mp4"}, 404, "not_found"),
        ({"path": "../x.mp4"}, 400, "bad_path"),
        ({"path": "trip/beach.mp4", "hevc": "maybe"}, 400, "bad_parameter"),
        ({}, 400, "missing_parameter"),
    ):
        r = await vserver.client.get("/video/stream", params=params, headers=vserver.auth)
        assert r.status == status, (params, await r.text())
        assert_error(await r.json(), code)
    r = await vserver.client.get("/video/stream", params={"path": "trip/beach.mp4"})
    assert r.status == 401


async def test_not_ready_in_time_is_503_then_ready(vserver: Server) -> None:
    manager = vserver.app[HLS]
    manager.runner = CountingRunner(start_delay=1.0)
    manager.first_segment_wait = 0.1
    r = await vserver.client.get("/video/stream", params={"path": "trip/old.mov"}, headers=vserver.auth)
    assert r.status == 503 and r.headers["Retry-After"].isdigit()
    assert_error(await r.json(), "stream_preparing")
    manager.first_segment_wait = 30
    r = await vserver.client.get("/video/stream", params={"path": "trip/old.mov"}, headers=vserver.auth)
    assert r.status == 200


async def test_shutdown_kills_the_run(aiohttp_client: AiohttpClient, video_template: Template,
                                      env_dirs: dict[str, Path]) -> None:
    server = await start_server(aiohttp_client, video_template, env_dirs["tmp"])
    server.app[HLS].runner = CountingRunner(readrate=2)
    r = await server.client.get("/video/stream", params={"path": "long.mp4"}, headers=server.auth)
    assert r.status == 200 and "#EXT-X-ENDLIST" not in await r.text()
    src = str(video_template.root / "long.mp4")
    assert processes_with(src)
    await server.client.close()  # the application's cleanup: what SIGTERM does to `imageapi serve`
    assert processes_with(src) == []
    assert files_under(server.config.video_path / "main" / "long.mp4") == [".lock-copy"]


async def test_client_gone_before_the_first_segment_stops_the_run(video_template: Template,
                                                                   env_dirs: dict[str, Path]) -> None:
    """As `imageapi serve` runs it (aiohttp does not cancel a handler when its client leaves):
    the playlist request notices and the run it started is stopped."""
    data = env_dirs["tmp"] / "data"
    shutil.copytree(video_template.data, data, symlinks=True)
    config = load_config(environ=environ(video_template, data), cwd=env_dirs["tmp"])
    app = create_app(config)
    runner = web.AppRunner(app)  # handler_cancellation off, as in web.run_app
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        manager = app[HLS]
        manager.runner = CountingRunner(readrate=0.3)  # the first segment would take ~12 s
        src = str(video_template.root / "long.mp4")
        async with aiohttp.ClientSession() as session:
            db = await connect(config.database_path)
            try:
                user = await get_user(db, USER)
            finally:
                await db.close()
            assert user is not None
            token = TokenService(SECRET).issue(user, 60).token
            with pytest.raises(asyncio.TimeoutError):
                await session.get(f"http://127.0.0.1:{port}/video/stream", params={"path": "long.mp4"},
                                  headers={"Authorization": f"Bearer {token}"},
                                  timeout=aiohttp.ClientTimeout(total=1.5))
        assert manager.runner.segmenter_runs == 1  # type: ignore[attr-defined]
        assert await eventually(lambda: manager.running() == 0 and not processes_with(src), timeout=5)
        assert files_under(config.video_path / "main" / "long.mp4") == [".lock-copy"]
    finally:
        await runner.cleanup()
