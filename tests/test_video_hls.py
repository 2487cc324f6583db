"""imageapi.core.hls with the real ffmpeg: plans, playlists, copy and transcode runs decoded end
to end, one run for concurrent requests, the transcode limit, the growing playlist, killed and
abandoned runs leaving nothing servable, changed sources, failures recorded."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imageapi.core import ffmpeg_caps, hls
from imageapi.core.config import Config, load_config
from imageapi.core.errors import ImageapiError, MediaError, NotFoundError, ToolError, UnsupportedMediaError
from imageapi.core.ffmpeg import VideoInfo
from imageapi.core.hls import HlsManager, Playlist, complete_generation, parse_playlist, plan_for, render_playlist
from tests.test_video_support import (
    CountingRunner,
    decode,
    eventually,
    files_under,
    make_video,
    probe,
    processes_with,
)

LIB = "main"


@pytest.fixture()
def config(env_dirs: dict[str, Path]) -> Config:
    return load_config(environ={"IMAGEAPI_DATA_DIR": str(env_dirs["data"])}, cwd=env_dirs["tmp"])


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hls_videos")
    return {
        "h264": make_video(root / "h264.mp4", 10),
        "mpeg4": make_video(root / "mpeg4.avi", 10, vcodec="mpeg4", audio="mp3"),
        "silent": make_video(root / "silent.mp4", 5, audio=None),
        "long": make_video(root / "long.mp4", 16),
    }


def copy_to(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)
    return dest


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, ImageapiError]] = []

    async def __call__(self, library: str, rel: str, key: str, exc: ImageapiError) -> None:
        self.calls.append((library, rel, key, exc))


# --------------------------------------------------------------------------------------------
# Plans and playlists (no ffmpeg)


@pytest.mark.parametrize(("info", "hevc_ok", "want"), [
    (VideoInfo(video_codec="h264", pix_fmt="yuv420p", audio_codec="aac"), False, ("copy", "copy", "copy", "h264")),
    (VideoInfo(video_codec="h264", pix_fmt=None, audio_codec=None), False, ("copy", "copy", "none", "h264")),
    (VideoInfo(video_codec="h264", pix_fmt="yuvj420p", audio_codec="mp3"), False, ("copy", "copy", "encode", "h264")),
    (VideoInfo(video_codec="h264", pix_fmt="yuv420p10le", audio_codec="aac"), True, ("h264", "encode", "copy", "h264")),
    (VideoInfo(video_codec="h264", pix_fmt="yuv422p", audio_codec="pcm_s16le"), False,
     ("h264", "encode", "encode", "h264")),
    (VideoInfo(video_codec="hevc", pix_fmt="yuv420p10le", audio_codec="aac"), True, ("copy", "copy", "copy", "hevc")),
    (VideoInfo(video_codec="hevc", pix_fmt="yuv420p", audio_codec="aac"), False, ("h264", "encode", "copy", "h264")),
    (VideoInfo(video_codec="h264", pix_fmt="yuv420p", audio_codec="aac", rotation=90), False,
     ("h264", "encode", "copy", "h264")),
    (VideoInfo(video_codec="hevc", pix_fmt="yuv420p", audio_codec=None, rotation=270), True,
     ("h264", "encode", "none", "h264")),
    (VideoInfo(video_codec="mpeg4", pix_fmt="yuv420p", audio_codec="mp3"), True, ("h264", "encode", "encode", "h264")),
    (VideoInfo(video_codec=None), False, ("h264", "encode", "none", "h264")),
])
def test_plan(info: VideoInfo, hevc_ok: bool, want: tuple[str, str, str, str]) -> None:
    plan = plan_for(info, hevc_ok)
    assert (plan.variant, plan.video, plan.audio, plan.codec) == want
    cmd = hls.segment_command(Path("/x/a b%.mp4"), plan)
    assert "-i" in cmd and cmd[cmd.index("-i") + 1] == "file:/x/a b%.mp4"
    assert ("libx264" in cmd) == (plan.video == "encode")
    assert ("hvc1" in cmd) == (plan.codec == "hevc" and plan.video == "copy")
    assert cmd[-1] == hls.PLAYLIST and "seg%05d.m4s" in cmd  # relative names: the run's cwd is the folder


def test_run_timeout_grows_with_the_length() -> None:
    copy, enc = plan_for(VideoInfo(video_codec="h264")), plan_for(VideoInfo(video_codec="mpeg4"))
    assert hls.run_timeout(copy, 600) < hls.run_timeout(enc, 600)
    assert hls.run_timeout(enc, 600) > hls.run_timeout(enc, 10)
    assert hls.run_timeout(enc, None) == hls.run_timeout(enc, float("nan")) > hls.run_timeout(enc, 3600)


def test_parse_and_render_playlist() -> None:
    text = ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:0\n"
            '#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:4.000000,\nseg00000.m4s\n'
            "#EXTINF:5.500000,\nseg00001.m4s\n#EXT-X-ENDLIST\n")
    pl = parse_playlist(text)
    assert pl == Playlist("init.mp4", (("seg00000.m4s", 4.0), ("seg00001.m4s", 5.5)), True)
    assert pl.duration == 9.5
    assert parse_playlist(text.replace("#EXT-X-ENDLIST\n", "")).ended is False
    # A segment line without its EXTINF (a truncated write) is not a segment.
    assert parse_playlist("#EXTM3U\nseg00000.m4s\n").segments == ()

    def url(n: str) -> str:
        return f"segment?name={n}&mt=T"

    live = render_playlist(pl, False, url)
    assert "#EXT-X-ENDLIST" not in live and "#EXT-X-PLAYLIST-TYPE:EVENT" in live
    assert "#EXT-X-START:TIME-OFFSET=0" in live
    assert '#EXT-X-MAP:URI="segment?name=init.mp4&mt=T"' in live
    assert "#EXT-X-TARGETDURATION:6" in live  # covers the longest segment
    assert live.splitlines()[-1] == "segment?name=seg00001.m4s&mt=T"
    assert render_playlist(pl, True, url).endswith("#EXT-X-ENDLIST\n")


def test_segment_names() -> None:
    good = ("init.mp4", "seg00000.m4s", "seg123456.m4s")
    bad = ("../init.mp4", "seg0.m4s", "index.m3u8", "source.json", "seg00000.m4s/../x", "seg00000.m4s\n", "")
    assert all(hls.SEGMENT_RE.match(n) for n in good)
    assert not any(hls.SEGMENT_RE.match(n) for n in bad)


def test_max_transcodes_setting(env_dirs: dict[str, Path]) -> None:
    def cfg(value: str | None) -> Config:
        env = {"IMAGEAPI_DATA_DIR": str(env_dirs["data"])}
        if value is not None:
            env["VIDEO_MAX_TRANSCODES"] = value
        return load_config(environ=env, cwd=env_dirs["tmp"])

    assert cfg(None).video.max_transcodes == max(1, (os.cpu_count() or 1) // 2)
    assert cfg("3").video.max_transcodes == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ImageapiError, match="VIDEO_MAX_TRANSCODES"):
            cfg(bad)


# --------------------------------------------------------------------------------------------
# Runs


async def test_copy_mode_end_to_end(config: Config, videos: dict[str, Path], tmp_path: Path) -> None:
    src = copy_to(videos["h264"], tmp_path / "lib" / "a" / "clip.mp4")
    runner = CountingRunner()
    m = HlsManager(config, runner=runner)
    try:
        view = await m.open_stream(LIB, "a/clip.mp4", src)
        assert view.ready and view.variant == "copy"
        made = await m.prepare(LIB, "a/clip.mp4", src)
        assert made.variant == "copy" and made.segments >= 2 and abs(made.duration - 10) < 0.1
        view = await m.open_stream(LIB, "a/clip.mp4", src)
        assert view.complete and view.playlist.ended
    finally:
        await m.aclose()
    assert runner.segmenter_runs == 1
    folder = config.video_path / LIB / "a" / "clip.mp4"
    gen = complete_generation(folder, "copy", hls.stat_key(src))
    assert gen is not None and (folder / "copy").is_symlink()
    assert all(hls.SEGMENT_RE.match(n) or n in (hls.PLAYLIST, hls.MARKER) for n in os.listdir(gen))
    # A player reads it start to end: the whole length, the same stream as the source.
    out = await decode(str(gen / hls.PLAYLIST), "-allowed_extensions", "ALL")
    assert out.returncode == 0, out.stderr
    assert out.seconds is not None and abs(out.seconds - 10.0) <= hls.HLS_TIME
    info = await probe(str(gen / hls.PLAYLIST))
    assert (info.video_codec, info.width, info.height, info.audio_codec) == ("h264", 320, 240, "aac")
    # Reused by a new process (manager): no run at all.
    again = CountingRunner()
    m2 = HlsManager(config, runner=again)
    try:
        assert (await m2.open_stream(LIB, "a/clip.mp4", src)).complete
        assert (await m2.prepare(LIB, "a/clip.mp4", src)).made is False
    finally:
        await m2.aclose()
    assert again.segmenter_runs == 0


async def test_transcode_mode_and_rotation(config: Config, videos: dict[str, Path], corpus: Path,
                                           tmp_path: Path) -> None:
    mpeg4 = copy_to(videos["mpeg4"], tmp_path / "lib" / "old.avi")
    rotated = copy_to(corpus / "video" / "rotated.mov", tmp_path / "lib" / "rotated.mov")
    m = HlsManager(config)
    try:
        a = await m.prepare(LIB, "old.avi", mpeg4)
        b = await m.prepare(LIB, "rotated.mov", rotated)
    finally:
        await m.aclose()
    assert a.variant == b.variant == "h264" and a.made and b.made
    for rel, src, seconds, size in (("old.avi", mpeg4, 10.0, (320, 240)), ("rotated.mov", rotated, 5.0, (360, 640))):
        gen = complete_generation(config.video_path / LIB / rel, "h264", hls.stat_key(src))
        assert gen is not None
        info = await probe(str(gen / hls.PLAYLIST))
        # H.264 and AAC; the rotated source comes out upright (640x360 turned) with no matrix left.
        assert (info.video_codec, info.audio_codec, info.width, info.height, info.rotation) == (
            "h264", "aac" if rel == "old.avi" else None, *size, 0)
        out = await decode(str(gen / hls.PLAYLIST), "-allowed_extensions", "ALL")
        assert out.returncode == 0 and out.seconds is not None and abs(out.seconds - seconds) <= hls.HLS_TIME


async def test_concurrent_first_requests_start_one_ffmpeg(config: Config, videos: dict[str, Path],
                                                         tmp_path: Path) -> None:
    src = copy_to(videos["mpeg4"], tmp_path / "lib" / "v.avi")
    runner = CountingRunner()
    m = HlsManager(config, runner=runner)
    try:
        views = await asyncio.gather(*(m.open_stream(LIB, "v.avi", src) for _ in range(5)),
                                     m.prepare(LIB, "v.avi", src))
    finally:
        await m.aclose()
    assert runner.segmenter_runs == 1
    assert len([c for c in runner.calls if "hls" not in c]) == 1  # one probe too
    assert all(v.variant == "h264" for v in views)


async def test_transcodes_beyond_the_limit_wait(config: Config, videos: dict[str, Path], tmp_path: Path) -> None:
    srcs = [copy_to(videos["mpeg4"], tmp_path / "lib" / f"v{i}.avi") for i in range(3)]
    runner = CountingRunner()
    m = HlsManager(config, runner=runner, transcodes=1)
    try:
        await asyncio.gather(*(m.prepare(LIB, s.name, s) for s in srcs))
    finally:
        await m.aclose()
    assert runner.segmenter_runs == 3 and runner.max_active == 1


async def test_growing_playlist_serves_only_complete_segments(config: Config, videos: dict[str, Path],
                                                              tmp_path: Path) -> None:
    src = copy_to(videos["long"], tmp_path / "lib" / "long.mp4")
    runner = CountingRunner(readrate=4)  # 16 s of video read in ~4 s
    m = HlsManager(config, runner=runner)
    try:
        started = time.monotonic()
        view = await m.open_stream(LIB, "long.mp4", src)
        first_segment = time.monotonic() - started
        assert view.ready and not view.complete and not view.playlist.ended
        # Long before the run's ~4 s (ffmpeg before 5.0 has no -readrate: -re, and ~16 s).
        assert first_segment < (3.5 if ffmpeg_caps.current().has_option("readrate") else 12)
        text = render_playlist(view.playlist, view.complete, lambda n: n)
        assert "#EXT-X-ENDLIST" not in text
        listed = [n for n, _ in view.playlist.segments]
        for name in listed + ["init.mp4"]:
            assert hls.segment_file(view, name).is_file()
        unlisted = f"seg{len(listed):05d}.m4s"
        with pytest.raises(NotFoundError):
            hls.segment_file(view, unlisted)
        # The same view from a segment request, then the finished one.
        assert (await m.view(LIB, "long.mp4", src, "copy", view.key)) is not None
        assert await m.view(LIB, "long.mp4", src, "copy", "1-2") is None  # another source version
        assert complete_generation(config.video_path / LIB / "long.mp4", "copy", view.key) is None
        await m.prepare(LIB, "long.mp4", src)
        done = await m.view(LIB, "long.mp4", src, "copy", view.key)
        assert done is not None and done.complete and abs(done.playlist.duration - 16) < 0.1
    finally:
        await m.aclose()
    # A client that started on the growing playlist reads the same files to the end.
    assert runner.segmenter_runs == 1


async def test_stopped_run_leaves_nothing_servable(config: Config, videos: dict[str, Path], tmp_path: Path) -> None:
    src = copy_to(videos["long"], tmp_path / "lib" / "stop me.mp4")
    runner = CountingRunner(readrate=2)
    m = HlsManager(config, runner=runner)
    view = await m.open_stream(LIB, "stop me.mp4", src)
    assert view.ready and not view.complete and view.folder is not None
    assert processes_with(str(src))  # ffmpeg is running
    await m.aclose()  # what the server does at shutdown
    assert processes_with(str(src)) == []  # its process group was killed
    folder = config.video_path / LIB / "stop me.mp4"
    assert not view.folder.exists()
    assert files_under(folder) == [".lock-copy"]
    assert complete_generation(folder, "copy", view.key) is None


async def test_request_cancelled_before_the_first_segment_stops_the_run(config: Config, videos: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    src = copy_to(videos["long"], tmp_path / "lib" / "gone.mp4")
    runner = CountingRunner(readrate=0.5)
    m = HlsManager(config, runner=runner)
    try:
        task = asyncio.create_task(m.open_stream(LIB, "gone.mp4", src))
        # The segmenter, not the probe before it (ffprobe, when there is one, names the file too).
        assert await eventually(lambda: runner.segmenter_runs == 1 and bool(processes_with(str(src))))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: not processes_with(str(src)) and m.running() == 0)
        assert files_under(config.video_path / LIB / "gone.mp4") == [".lock-copy"]
    finally:
        await m.aclose()


async def test_abandoned_run_is_stopped(config: Config, videos: dict[str, Path], tmp_path: Path) -> None:
    src = copy_to(videos["long"], tmp_path / "lib" / "idle.mp4")
    m = HlsManager(config, runner=CountingRunner(readrate=2), idle_timeout=0.4)
    try:
        view = await m.open_stream(LIB, "idle.mp4", src)
        assert view.ready and not view.complete
        # A player that keeps asking keeps it alive ...
        for _ in range(4):
            await asyncio.sleep(0.25)
            assert await m.view(LIB, "idle.mp4", src, "copy", view.key) is not None
        assert m.running() == 1
        # ... and one that went away does not.
        assert await eventually(lambda: m.running() == 0, timeout=4)
        assert processes_with(str(src)) == []
        assert files_under(config.video_path / LIB / "idle.mp4") == [".lock-copy"]
    finally:
        await m.aclose()


async def test_first_segment_wait_runs_out(config: Config, videos: dict[str, Path], tmp_path: Path) -> None:
    src = copy_to(videos["mpeg4"], tmp_path / "lib" / "slow.avi")
    m = HlsManager(config, runner=CountingRunner(start_delay=1.0), first_segment_wait=0.2)
    try:
        view = await m.open_stream(LIB, "slow.avi", src)
        assert not view.ready and view.folder is None  # the route answers 503: ask again
        for _ in range(100):
            view = await m.open_stream(LIB, "slow.avi", src)
            if view.ready:
                break
        assert view.ready
    finally:
        await m.aclose()


async def test_changed_source_is_made_again(config: Config, videos: dict[str, Path], tmp_path: Path) -> None:
    src = copy_to(videos["h264"], tmp_path / "lib" / "c.mp4")
    runner = CountingRunner()
    m = HlsManager(config, runner=runner)
    try:
        first = await m.prepare(LIB, "c.mp4", src)
        old_key = hls.stat_key(src)
        folder = config.video_path / LIB / "c.mp4"
        old_gen = complete_generation(folder, "copy", old_key)
        shutil.copy(videos["silent"], src)
        os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
        view = await m.open_stream(LIB, "c.mp4", src)
        await m.prepare(LIB, "c.mp4", src)
        new_key = hls.stat_key(src)
        assert view.key == new_key != old_key
        new_gen = complete_generation(folder, "copy", new_key)
        assert new_gen is not None and old_gen is not None and new_gen != old_gen and not old_gen.exists()
        assert complete_generation(folder, "copy", old_key) is None
        assert await m.view(LIB, "c.mp4", src, "copy", old_key) is None  # old segment URLs are gone
        again = await m.view(LIB, "c.mp4", src, "copy", new_key)
        assert again is not None and abs(again.playlist.duration - 5.0) < 0.1 and first.duration > 9
    finally:
        await m.aclose()
    assert runner.segmenter_runs == 2


async def test_killed_process_leaves_nothing_servable(config: Config, videos: dict[str, Path], tmp_path: Path,
                                                      env_dirs: dict[str, Path]) -> None:
    """kill -9 of a process in the middle of a run: its folder is never served, the next run
    removes it and makes the whole video."""
    src = copy_to(videos["long"], tmp_path / "lib" / "killed.mp4")
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from imageapi.core.config import load_config\n"
        "from imageapi.core.hls import HlsManager\n"
        "from tests.test_video_support import CountingRunner\n"
        "async def main():\n"
        f"    m = HlsManager(load_config(environ={{'IMAGEAPI_DATA_DIR': {str(env_dirs['data'])!r}}}),\n"
        "                   runner=CountingRunner(readrate=2))\n"
        f"    await m.prepare('main', 'killed.mp4', Path({str(src)!r}))\n"
        "asyncio.run(main())\n"
    )
    folder = config.video_path / LIB / "killed.mp4"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent)
    try:
        for _ in range(200):
            gens = [p for p in folder.glob(".gen-copy-*") if (p / hls.PLAYLIST).exists()]
            if gens and parse_playlist((gens[0] / hls.PLAYLIST).read_text()).segments:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never produced a segment")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_with(str(src)):  # its ffmpeg, orphaned in its own process group
            os.killpg(pid, signal.SIGKILL)
    key = hls.stat_key(src)
    assert complete_generation(folder, "copy", key) is None and not (folder / "copy").exists()
    m = HlsManager(config)
    try:
        assert await m.view(LIB, "killed.mp4", src, "copy", key) is None
        made = await m.prepare(LIB, "killed.mp4", src)
    finally:
        await m.aclose()
    assert made.made and abs(made.duration - 16) < 0.1
    assert len(list(folder.glob(".gen-copy-*"))) == 1  # the killed run's folder was removed


async def test_failures_are_recorded_and_not_retried(config: Config, corpus: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    cases = {
        "truncated.mp4": copy_to(corpus / "bad" / "truncated.mp4", lib / "truncated.mp4"),
        "elf.mp4": copy_to(corpus / "bad" / "actually_elf.mp4", lib / "elf.mp4"),
        "photo.mp4": copy_to(corpus / "jpeg" / "Canon_40D.jpg", lib / "photo.mp4"),
    }
    # Seeded: some random bytes probe as an audio stream, which is another error.
    (lib / "noise.mp4").write_bytes(random.Random(0).randbytes(50_000))
    cases["noise.mp4"] = lib / "noise.mp4"
    runner, recorder = CountingRunner(), Recorder()
    m = HlsManager(config, runner=runner, recorder=recorder)
    try:
        for rel, src in cases.items():
            with pytest.raises(MediaError) as info:
                await m.open_stream(LIB, rel, src)
            if rel == "photo.mp4":
                assert isinstance(info.value, UnsupportedMediaError)
        calls = len(runner.calls)
        for rel, src in cases.items():  # answered again from memory, no ffmpeg
            with pytest.raises(MediaError):
                await m.open_stream(LIB, rel, src)
        assert len(runner.calls) == calls
    finally:
        await m.aclose()
    assert sorted(c[1] for c in recorder.calls) == sorted(cases)
    assert all(c[2] == hls.stat_key(cases[c[1]]) for c in recorder.calls)
    assert files_under(config.video_path) == []  # nothing was made, not even a folder


async def test_a_run_that_fails_midway_is_recorded_and_removed(config: Config, videos: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """A codec ffmpeg cannot decode (it probes, the run fails) and a run past its time limit: both
    recorded, neither leaves a folder. A file cut in the middle streams the part that is there."""
    whole = videos["mpeg4"].read_bytes()
    lib = tmp_path / "lib"
    lib.mkdir()
    unknown = lib / "unknown.avi"
    unknown.write_bytes(whole.replace(b"FMP4", b"ZZZZ"))  # the AVI's codec tag, now one nobody knows
    cut = lib / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2] + random.Random(1).randbytes(4096))
    slow = copy_to(videos["mpeg4"], lib / "slow.avi")
    recorder = Recorder()
    m = HlsManager(config, recorder=recorder)
    try:
        with pytest.raises(MediaError, match="(?i)decoder"):  # "Decoder (codec none) not found" in 5.1
            await m.prepare(LIB, "unknown.avi", unknown)
        assert [c[1] for c in recorder.calls] == ["unknown.avi"]
        made = await m.prepare(LIB, "cut.avi", cut)
        assert made.made and 2 < made.duration < 9
        m.runner = CountingRunner(readrate=1, timeout=0.8)
        with pytest.raises(ToolError, match="timed out"):
            await m.prepare(LIB, "slow.avi", slow)
    finally:
        await m.aclose()
    assert [c[1] for c in recorder.calls] == ["unknown.avi", "slow.avi"]
    assert isinstance(recorder.calls[1][3], ToolError)
    for rel, src in (("unknown.avi", unknown), ("slow.avi", slow)):
        folder = config.video_path / LIB / rel
        assert complete_generation(folder, "h264", hls.stat_key(src)) is None
        assert not list(folder.glob(".gen-*")) and not (folder / "h264").exists()


async def test_missing_source(config: Config, tmp_path: Path) -> None:
    m = HlsManager(config)
    try:
        with pytest.raises(NotFoundError):
            await m.open_stream(LIB, "gone.mp4", tmp_path / "gone.mp4")
    finally:
        await m.aclose()
