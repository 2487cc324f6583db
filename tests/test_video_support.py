"""Shared helpers of the video tests: videos made with the real ffmpeg (never committed), runners
that count or slow down ffmpeg runs, a real HLS client, and a look at the processes still alive."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageapi.core import ffmpeg, ffmpeg_caps

FFMPEG = ffmpeg.ffmpeg_path()


def ffmpeg_binaries() -> dict[str, str]:
    """Each distinct ffmpeg build here, by version: the one in use, Debian's (/usr/bin/ffmpeg), the
    imageio-ffmpeg package's, and any listed in IMAGEAPI_TEST_FFMPEGS (os.pathsep-separated, e.g.
    the binaries of older imageio-ffmpeg wheels, to run the tests against more versions)."""
    import imageio_ffmpeg

    candidates = [FFMPEG, "/usr/bin/ffmpeg", imageio_ffmpeg.get_ffmpeg_exe(),
                  *filter(None, os.environ.get("IMAGEAPI_TEST_FFMPEGS", "").split(os.pathsep))]
    found: dict[str, str] = {}
    for path in candidates:
        if os.access(path, os.X_OK):
            found.setdefault(ffmpeg_caps.version(path), path)
    return found


def make_video(
    path: Path,
    seconds: float = 10.0,
    *,
    size: str = "320x240",
    rate: int = 25,
    vcodec: str = "h264",
    audio: str | None = "aac",
    gop: int = 25,
    rotate_ccw: int | None = None,
    created: str | None = None,
) -> Path:
    """A test pattern (and a tone) of `seconds`: vcodec h264 or mpeg4, audio aac, mp3 or None.
    `rotate_ccw` adds a display matrix (ffmpeg's counter-clockwise degrees); `created` the
    container's creation_time (UTC ISO)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    if vcodec == "h264":
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-pix_fmt", "yuv420p"]
    else:
        cmd += ["-c:v", "mpeg4", "-q:v", "6", "-g", str(gop)]
    if audio == "aac":
        cmd += ["-c:a", "aac", "-b:a", "64k"]
    elif audio == "mp3":
        cmd += ["-c:a", "libmp3lame", "-b:a", "64k"]
    meta = ["-metadata", f"creation_time={created}"] if created else []
    cmd += meta
    tmp = path.with_name(path.name + ".gen" + path.suffix)
    subprocess.run([*cmd, "-shortest", str(tmp)], check=True, timeout=120)
    if rotate_ccw is not None:
        before, after = ffmpeg_caps.rotation_args(ffmpeg_caps.caps(FFMPEG), rotate_ccw)
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                        *before, "-i", str(tmp), "-c", "copy", *after, *meta, str(path)],
                       check=True, timeout=60)
        tmp.unlink()
    else:
        os.replace(tmp, path)
    return path


@dataclass
class Decoded:
    seconds: float | None       # the last "time=" ffmpeg reported while decoding
    returncode: int
    stderr: str


def decoded_seconds(stderr: str) -> float | None:
    times = re.findall(r"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr)
    if not times:
        return None
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def _player() -> str:
    """The tests' HLS player: the ffmpeg in use, or imageio-ffmpeg's where the one in use is older
    than 4.3, which cannot read a growing fMP4 HLS stream ("partial file"): a client's player is
    its own, not the server's ffmpeg."""
    import imageio_ffmpeg

    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    if ffmpeg_caps.caps(FFMPEG).at_least(4, 3) or not os.access(bundled, os.X_OK):
        return FFMPEG
    return bundled


async def decode(source: str, *extra: str, timeout: float = 120.0) -> Decoded:
    """Decode `source` (a file or an http URL) to nothing, as a player would read it: every frame.
    `extra` goes before -i (e.g. -live_start_index 0)."""
    cmd = [_player(), "-hide_banner", "-nostdin", "-stats", *extra, "-i", source, "-f", "null", "-"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = err.decode("utf-8", "replace")
    return Decoded(decoded_seconds(text.replace("\r", "\n")), proc.returncode or 0, text)


async def probe(source: str) -> ffmpeg.VideoInfo:
    """What ffmpeg reads from a file or an HLS playlist on disk."""
    playlist = ["-allowed_extensions", "ALL"] if source.endswith(".m3u8") else []
    out = await ffmpeg.run_async([FFMPEG, "-hide_banner", "-nostdin", *playlist, "-i", source], 60)
    return ffmpeg.parse_ffmpeg_banner(out.stderr.decode("utf-8", "replace"))


Runner = Callable[..., Awaitable[subprocess.CompletedProcess[bytes]]]


@dataclass
class CountingRunner:
    """Wraps run_async: counts runs (all, and HLS segmenter runs), how many ran at once, and can
    slow the segmenter down (-readrate: the input is read at N times real time) so that a run is
    still going when the test looks."""

    readrate: float | None = None
    start_delay: float = 0.0
    timeout: float | None = None
    calls: list[list[str]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    @property
    def segmenter_runs(self) -> int:
        return sum(1 for c in self.calls if "hls" in c)

    async def __call__(self, args: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        args = list(args)
        self.calls.append(args)
        segmenter = "hls" in args
        if segmenter and self.readrate is not None:
            # An input option: before the -i (ffmpeg before 5.0 has only -re, real time).
            args[1:1] = ffmpeg_caps.readrate_args(ffmpeg_caps.caps(args[0]), self.readrate)
        if segmenter:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if segmenter and self.start_delay:
                await asyncio.sleep(self.start_delay)
            return await ffmpeg.run_async(args, self.timeout if self.timeout is not None else timeout, **kw)
        finally:
            if segmenter:
                self.active -= 1


async def eventually(condition: Callable[[], bool], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Whether `condition` holds within `timeout` seconds (looked at every `step`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


def processes_with(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (zombies excluded)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(pid))
    return found


def files_under(folder: Path) -> list[str]:
    """Every entry under `folder` (relative, sorted), links included."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
