"""HLS streaming of videos: what to do with each (copy or transcode), one ffmpeg per video, a
playlist that grows while ffmpeg works, and the cache on disk.

Cache layout under VIDEO_PATH/<library>/<relative path>/ (a folder named like the video):

    .lock-<variant>          flock held by the process that is generating that variant
    .gen-<variant>-<hex>/    one generation: index.m3u8 (ffmpeg's own), init.mp4, seg00000.m4s, ...
                             and source.json, written only once the generation is complete
    <variant> -> .gen-...    a symlink, put in place (atomically) only when the generation is complete

A variant is `copy` (the video stream as it is, H.264 or HEVC) or `h264` (transcoded). A complete
generation is served when its source.json names the source's current size and mtime; a changed
source is made again. While ffmpeg runs, the playlist served is built from ffmpeg's playlist in the
generation folder, which lists a segment only once it is complete (ffmpeg writes segments and the
playlist under temporary names and renames them), and never carries #EXT-X-ENDLIST: only a
published generation does. A run that fails, times out, is abandoned or killed leaves a folder
without source.json and without the symlink: nothing serves it, and the next run for that video
removes it (under the lock, so never one that is still being written).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import re
import secrets
import shutil
import subprocess
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageapi.core import ffmpeg, ffmpeg_caps
from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.errors import (
    ImageapiError,
    MediaError,
    NotFoundError,
    ToolError,
    UnsupportedMediaError,
    UsageError,
)
from imageapi.core.ffmpeg import AsyncRunner, VideoInfo
from imageapi.core.libraries import Library, resolve_in_library
from imageapi.core.names import safe_text
from imageapi.core.repositories import previews as repo

log = logging.getLogger(__name__)

VARIANTS = ("copy", "h264")
HLS_TIME = 4                    # seconds per segment (transcodes force a keyframe every HLS_TIME)
PLAYLIST = "index.m3u8"
INIT = "init.mp4"
MARKER = "source.json"
FORMAT = 1                      # bump when the commands change: older caches are then made again
SEGMENT_RE = re.compile(r"\A(?:init\.mp4|seg\d{5,9}\.m4s)\Z")  # \Z: no trailing newline
MAX_HEIGHT, MAX_WIDTH = 1080, 1920  # the transcode cap (a portrait video: 1080 wide, 1920 high)
COPY_PIX_FMTS = (None, "yuv420p", "yuvj420p")  # H.264 that every player decodes (not High 10 or 4:2:2)

# Time limits of one run: a fixed part plus a multiple of the video's length (transcoding a 4K
# HEVC phone video on a NAS's CPU can run several times slower than real time).
PROBE_TIMEOUT = 30.0
COPY_TIMEOUT = (120.0, 1.0)
TRANSCODE_TIMEOUT = (300.0, 8.0)
UNKNOWN_DURATION = 3 * 3600.0

DEFAULT_FIRST_SEGMENT_WAIT = 45.0   # a playlist request waits this long for the first segment
DEFAULT_IDLE_TIMEOUT = 60.0         # a run nobody asked about for this long is stopped
DEFAULT_COPY_SLOTS = 4              # remuxes at once (disk-bound, but not without limit)
POLL = 0.1                          # seconds between looks at ffmpeg's playlist
LOCK_POLL = 0.25                    # ... at a lock another process holds

# (library, rel, source key, error) -> None: where failures are recorded (the file's row).
FailureRecorder = Callable[[str, str, str, ImageapiError], Awaitable[None]]


# --------------------------------------------------------------------------------------------
# Settings


# --------------------------------------------------------------------------------------------
# What to do with a video


@dataclass(frozen=True)
class Plan:
    variant: str   # copy | h264 (the cache folder)
    video: str     # copy | encode
    audio: str     # copy | encode | none
    codec: str     # of the video stream sent: h264 | hevc


def plan_for(info: VideoInfo, hevc_ok: bool = False) -> Plan:
    """Copy H.264 (8-bit 4:2:0) or, for clients that play it, HEVC, when no rotation has to be
    applied; transcode everything else to H.264. AAC audio is always copied, other audio encoded.

    A rotated video is transcoded (upright pixels) rather than copied with its display matrix:
    fMP4 segments can carry the matrix, but players do not all apply it (iOS WebKit plays such
    HLS streams sideways), so it would not be honoured everywhere.
    """
    codec = (info.video_codec or "").lower()
    audio_codec = (info.audio_codec or "").lower()
    audio = "none" if not audio_codec else "copy" if audio_codec == "aac" else "encode"
    upright = info.rotation % 360 == 0
    if upright and codec == "h264" and info.pix_fmt in COPY_PIX_FMTS:
        return Plan("copy", "copy", audio, "h264")
    if upright and codec == "hevc" and hevc_ok:
        return Plan("copy", "copy", audio, "hevc")
    return Plan("h264", "encode", audio, "h264")


def run_timeout(plan: Plan, duration: float | None) -> float:
    base, per_second = COPY_TIMEOUT if plan.video == "copy" else TRANSCODE_TIMEOUT
    length = duration if duration is not None and math.isfinite(duration) and duration > 0 else UNKNOWN_DURATION
    return base + per_second * length


# The transcode's picture: square pixels, at most 1920x1080 (1080x1920 upright portrait), never
# enlarged, even sides, 8-bit 4:2:0 (10-bit HDR sources included). ffmpeg has already rotated it.
# Even sides by a last scale rather than scale's force_divisible_by, which ffmpeg before 4.3 lacks
# (a scale to the size it already has passes frames through).
_SCALE = (
    "scale='trunc(if(gt(sar,0),iw*sar,iw))':'ih',setsar=1,"
    f"scale='if(gte(iw,ih),min(iw,{MAX_WIDTH}),min(iw,{MAX_HEIGHT}))'"
    f":'if(gte(iw,ih),min(ih,{MAX_HEIGHT}),min(ih,{MAX_WIDTH}))'"
    ":force_original_aspect_ratio=decrease,scale='trunc(iw/2)*2':'trunc(ih/2)*2',format=yuv420p"
)


async def warm_up() -> None:
    """Ask the ffmpeg in use what it supports (in a thread) before the first stream is asked for,
    so that the first playlist does not wait for it (a few tenths of a second, once per binary)."""
    try:
        await asyncio.to_thread(ffmpeg_caps.current)
    except ImageapiError as exc:
        log.warning("video streaming will fail: %s", exc.message)


def segment_command(src: Path, plan: Plan) -> list[str]:
    """The ffmpeg run that writes the generation (run with the generation folder as cwd, so that
    no part of the output names comes from the file's path). Asks the binary what it supports
    (once per binary): blocking the first time, so call it off the event loop."""
    caps = ffmpeg_caps.current()
    cmd = [caps.path, "-hide_banner", "-nostdin", "-loglevel", "error", *ffmpeg.input_args(src),
           "-map", "0:V:0", "-map", "0:a:0?", "-sn", "-dn", "-max_muxing_queue_size", "4096"]
    if plan.video == "copy":
        cmd += ["-c:v", "copy"]
        if plan.codec == "hevc":
            cmd += ["-tag:v", "hvc1"]  # what Apple's players want for HEVC in fMP4
    else:
        cmd += ["-vf", _SCALE, "-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-maxrate", "10M",
                "-bufsize", "20M", "-profile:v", "high",
                "-force_key_frames", f"expr:gte(t,n_forced*{HLS_TIME})"]
        if caps.has_option("fpsmax"):  # 4.4 on; older versions keep the source's rate
            cmd += ["-fpsmax", "60"]
    if plan.audio == "copy":
        cmd += ["-c:a", "copy"]
    elif plan.audio == "encode":
        cmd += ["-c:a", "aac", "-b:a", "160k", "-ac", "2"]
    cmd += ["-f", "hls", "-hls_time", str(HLS_TIME), "-hls_playlist_type", "event", "-hls_list_size", "0",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT,
            "-hls_segment_filename", "seg%05d.m4s", "-hls_flags", "temp_file+independent_segments", PLAYLIST]
    return cmd


# --------------------------------------------------------------------------------------------
# Playlists


@dataclass(frozen=True)
class Playlist:
    init: str | None
    segments: tuple[tuple[str, float], ...]   # (file name, seconds)
    ended: bool

    @property
    def duration(self) -> float:
        return sum(d for _, d in self.segments)


def parse_playlist(text: str) -> Playlist:
    """The parts of ffmpeg's media playlist that matter: init segment, segments, end."""
    init: str | None = None
    segments: list[tuple[str, float]] = []
    ended = False
    pending: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            m = re.search(r'URI="([^"]*)"', line)
            init = os.path.basename(m.group(1)) if m else None
        elif line.startswith("#EXTINF:"):
            try:
                pending = float(line[len("#EXTINF:"):].split(",", 1)[0])
            except ValueError:
                pending = None
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line and not line.startswith("#") and pending is not None:
            segments.append((os.path.basename(line), pending))
            pending = None
    return Playlist(init, tuple(segments), ended)


def render_playlist(playlist: Playlist, complete: bool, url: Callable[[str], str]) -> str:
    """Our playlist: `url(name)` for each file, always an EVENT playlist (so its type never changes
    between reloads), #EXT-X-ENDLIST only when `complete`, and a start at the beginning (players
    start a growing playlist near its end otherwise)."""
    target = max([HLS_TIME, *(math.ceil(d) for _, d in playlist.segments)])
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-START:TIME-OFFSET=0,PRECISE=YES"]
    if playlist.init:
        lines.append(f'#EXT-X-MAP:URI="{url(playlist.init)}"')
    for name, seconds in playlist.segments:
        lines += [f"#EXTINF:{seconds:.6f},", url(name)]
    if complete:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _read_playlist(folder: Path) -> Playlist | None:
    try:
        text = (folder / PLAYLIST).read_text("utf-8", "replace")
    except OSError:  # not written yet, or the folder is gone
        return None
    return parse_playlist(text)


# --------------------------------------------------------------------------------------------
# The cache on disk


def version_key(size: int, mtime_ns: int) -> str:
    """A source version: its size and mtime (what the cache marker, the segment URLs and the row's
    hls_source name)."""
    return f"{size}-{mtime_ns}"


def source_key(st: os.stat_result) -> str:
    return version_key(st.st_size, st.st_mtime_ns)


def stat_key(src: Path) -> str:
    try:
        st = os.stat(src)
    except FileNotFoundError:
        raise NotFoundError(f"{src.name!r} is indexed but no longer on disk") from None
    except OSError as exc:
        raise MediaError(f"cannot read {src.name!r}: {exc.strerror or exc}") from None
    return source_key(st)


def cache_folder(config: Config, library: str, rel: str) -> Path:
    """VIDEO_PATH/<library>/<relative path>/ (rel is a clean relative path)."""
    return config.video_path / library / rel


def _marker(key: str, plan: Plan, playlist: Playlist) -> dict[str, object]:
    return {"format": FORMAT, "source": key, "variant": plan.variant, "video": plan.video, "audio": plan.audio,
            "codec": plan.codec, "segments": len(playlist.segments), "duration": round(playlist.duration, 3)}


def complete_generation(folder: Path, variant: str, key: str) -> Path | None:
    """The published generation of `variant` if it was made from source version `key`."""
    link = folder / variant
    try:
        target = folder / os.readlink(link)
        marker = json.loads((target / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or marker.get("source") != key:
        return None
    return target


def _sweep(folder: Path, variant: str) -> None:
    """Remove generations of `variant` that are not published, and a published one that is stale
    (the caller holds the variant's lock and has found no current generation)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / variant)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(f".gen-{variant}-"):
            shutil.rmtree(folder / name, ignore_errors=True)


def _sweep_stale_variants(folder: Path, made: str, key: str) -> None:
    """After `made` was published for `key`: the other variants' generations of older source
    versions (a changed source may need another variant) are of no use any more. Those being
    written by another process (their lock is held) are left to it."""
    names = os.listdir(folder)
    for variant in VARIANTS:
        if variant == made or not any(n == variant or n.startswith(f".gen-{variant}-") for n in names):
            continue
        if complete_generation(folder, variant, key) is not None:
            continue
        fd = _try_lock(folder / f".lock-{variant}")
        if fd is not None:
            with _held(fd):
                _sweep(folder, variant)


def _publish(folder: Path, variant: str, gen: Path) -> None:
    tmp = folder / f".link-{variant}-{secrets.token_hex(4)}"
    os.symlink(gen.name, tmp)
    os.replace(tmp, folder / variant)  # atomic: a reader sees the old link or the new one


@contextlib.contextmanager
def _held(fd: int) -> Iterator[None]:
    try:
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


# --------------------------------------------------------------------------------------------
# Runs


@dataclass
class StreamView:
    """What a playlist request gets: where the files are and which of them are complete."""

    variant: str
    key: str
    folder: Path | None          # the generation folder; None while no segment is ready
    playlist: Playlist
    complete: bool               # published: the playlist ends

    @property
    def ready(self) -> bool:
        return self.folder is not None and bool(self.playlist.segments)


@dataclass
class Prepared:
    variant: str
    made: bool                   # False when the cache was already there
    segments: int
    duration: float
    seconds: float


@dataclass(eq=False)
class _Job:
    library: str
    rel: str
    src: Path
    key: str
    plan: Plan
    info: VideoInfo
    folder: Path
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    gen: Path | None = None
    published: Path | None = None
    error: ImageapiError | None = None
    record: bool = True          # whether a failure is the file's fault (recorded on its row)
    waiters: int = 0
    pins: int = 0                # runs made ahead of time: never stopped for lack of requests
    touched: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.library, self.rel, self.plan.variant)


class HlsManager:
    """Every HLS run of one process. One run per (library, path, variant) at a time; transcodes
    beyond `transcodes` at once wait for a slot. The server keeps one, the CLI one per command."""

    def __init__(
        self,
        config: Config,
        *,
        runner: AsyncRunner | None = None,
        transcodes: int | None = None,
        copies: int = DEFAULT_COPY_SLOTS,
        first_segment_wait: float = DEFAULT_FIRST_SEGMENT_WAIT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        recorder: FailureRecorder | None = None,
    ) -> None:
        self.config = config
        self.runner: AsyncRunner = runner or ffmpeg.run_async
        self.transcodes = transcodes if transcodes is not None else config.video.max_transcodes
        self._transcode_slots = asyncio.Semaphore(self.transcodes)
        self._copy_slots = asyncio.Semaphore(copies)
        self.first_segment_wait = first_segment_wait
        self.idle_timeout = idle_timeout
        self.recorder = recorder
        self._jobs: dict[tuple[str, str, str], _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every run not finished yet, stopped ones included
        self._probes: OrderedDict[tuple[str, str], VideoInfo] = OrderedDict()
        self._probing: dict[tuple[str, str], asyncio.Task[VideoInfo]] = {}
        self._failures: OrderedDict[tuple[str, str, str], ImageapiError] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # -- public -------------------------------------------------------------------------------

    async def open_stream(self, library: str, rel: str, src: Path, hevc_ok: bool = False) -> StreamView:
        """The playlist's state for a request: the published generation, or the running one once
        its first segment is complete (starting the run if there is none). A view that is not
        `ready` means the first segment did not come within `first_segment_wait` (the run goes on).
        Raises the run's MediaError/ToolError when it failed."""
        key = await asyncio.to_thread(stat_key, src)
        self._raise_known_failure(library, rel, key)
        info = await self._probe(library, rel, src, key)
        plan = plan_for(info, hevc_ok)
        folder = cache_folder(self.config, library, rel)
        done = complete_generation(folder, plan.variant, key)
        if done is not None:
            return self._published_view(plan.variant, key, done)
        job = self._job(library, rel, src, key, plan, info)
        job.touched = time.monotonic()
        job.waiters += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.first_segment_wait):
                    await job.ready.wait()
        except asyncio.CancelledError:
            job.waiters -= 1
            if job.waiters == 0 and job.pins == 0 and not job.ready.is_set():
                self._stop(job)  # the only request that wanted it went away before anything was ready
            raise
        job.waiters -= 1
        job.touched = time.monotonic()
        return self._view(job)

    async def view(self, library: str, rel: str, src: Path, variant: str, key: str) -> StreamView | None:
        """The current state of the generation of `variant` from source version `key` (published or
        running), for a segment request; None when there is none (a stale or unknown version)."""
        if variant not in VARIANTS:
            return None
        if await asyncio.to_thread(stat_key, src) != key:
            return None
        job = self._jobs.get((library, rel, variant))
        if job is not None and job.key == key:
            job.touched = time.monotonic()
            return self._view(job)
        done = complete_generation(cache_folder(self.config, library, rel), variant, key)
        return self._published_view(variant, key, done) if done is not None else None

    async def prepare(self, library: str, rel: str, src: Path, hevc_ok: bool = False) -> Prepared:
        """Make the playlist ahead of time (the CLI): run to the end, or return the cached one."""
        started = time.monotonic()
        key = await asyncio.to_thread(stat_key, src)
        info = await self._probe(library, rel, src, key)
        plan = plan_for(info, hevc_ok)
        folder = cache_folder(self.config, library, rel)
        done = complete_generation(folder, plan.variant, key)
        if done is not None:
            pl = _read_playlist(done) or Playlist(None, (), True)
            return Prepared(plan.variant, False, len(pl.segments), pl.duration, time.monotonic() - started)
        job = self._job(library, rel, src, key, plan, info)
        assert job.task is not None
        job.pins += 1
        try:
            await asyncio.wait({job.task})  # neither raises the run's outcome nor cancels the run
        except asyncio.CancelledError:
            job.pins -= 1
            if job.pins == 0 and job.waiters == 0:
                self._stop(job)
            raise
        job.pins -= 1
        if job.error is not None:
            raise job.error
        made = _read_playlist(job.published) if job.published else None
        pl = made or Playlist(None, (), True)
        return Prepared(plan.variant, True, len(pl.segments), pl.duration, time.monotonic() - started)

    def forget_failure(self, library: str, rel: str) -> None:
        for k in [k for k in self._failures if k[:2] == (library, rel)]:
            del self._failures[k]

    def running(self) -> int:
        """Runs not finished yet (a stopped one counts until its ffmpeg is dead and its folder gone)."""
        return len(self._tasks)

    async def aclose(self) -> None:
        """Stop every run (their ffmpeg process groups are killed, their folders removed)."""
        self._closed = True
        tasks: list[asyncio.Future[Any]] = []
        if self._reaper is not None:
            tasks.append(self._reaper)
        tasks += list(self._tasks)
        tasks += list(self._probing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals ----------------------------------------------------------------------------

    def _raise_known_failure(self, library: str, rel: str, key: str) -> None:
        err = self._failures.get((library, rel, key))
        if err is not None:
            raise err

    def _remember_failure(self, library: str, rel: str, key: str, err: ImageapiError) -> None:
        self._failures[(library, rel, key)] = err
        while len(self._failures) > 1024:
            self._failures.popitem(last=False)

    async def _probe(self, library: str, rel: str, src: Path, key: str) -> VideoInfo:
        ident = (str(src), key)
        info = self._probes.get(ident)
        if info is not None:
            return info
        task = self._probing.get(ident)
        if task is None:
            if self._closed:
                raise ToolError("the server is shutting down")
            task = asyncio.ensure_future(ffmpeg.probe_async(src, PROBE_TIMEOUT, self.runner))
            self._probing[ident] = task
            task.add_done_callback(lambda _t: self._probing.pop(ident, None))
        try:
            info = await asyncio.shield(task)
        except MediaError as exc:  # not a video, or not one ffmpeg can read (a timeout is not recorded)
            await self._failed(library, rel, key, exc)
            raise
        self._probes[ident] = info
        while len(self._probes) > 512:
            self._probes.popitem(last=False)
        return info

    async def _failed(self, library: str, rel: str, key: str, exc: ImageapiError) -> None:
        self._remember_failure(library, rel, key, exc)
        if self.recorder is not None:
            try:
                await self.recorder(library, rel, key, exc)
            except Exception:  # recording is a courtesy: the error still reaches the client
                log.exception("could not record the HLS failure of %s/%s", library, rel)

    def _job(self, library: str, rel: str, src: Path, key: str, plan: Plan, info: VideoInfo) -> _Job:
        """The run for this video and variant, started if there is none (no await in here: two
        requests arriving together get the same run)."""
        if self._closed:
            raise ToolError("the server is shutting down")
        ident = (library, rel, plan.variant)
        job = self._jobs.get(ident)
        if job is not None and job.key != key:
            self._stop(job)  # the source changed under a running generation
            job = None
        if job is None:
            job = _Job(library, rel, src, key, plan, info, cache_folder(self.config, library, rel))
            self._jobs[ident] = job
            job.task = asyncio.create_task(self._run(job), name=f"hls {library}/{rel} {plan.variant}")
            self._tasks.add(job.task)
            job.task.add_done_callback(self._finished_callback(job))
            if self._reaper is None:
                self._reaper = asyncio.create_task(self._reap(), name="hls reaper")
        return job

    def _finished_callback(self, job: _Job) -> Callable[[asyncio.Task[None]], None]:
        return lambda _task: self._finished(job)

    def _finished(self, job: _Job) -> None:
        if job.task is not None:
            self._tasks.discard(job.task)
        if self._jobs.get(job.ident) is job:
            del self._jobs[job.ident]
        job.ready.set()

    def _stop(self, job: _Job) -> None:
        if self._jobs.get(job.ident) is job:
            del self._jobs[job.ident]
        if job.task is not None and not job.task.done():
            log.info("stopping the HLS run of %s/%s (%s)", job.library, job.rel, job.plan.variant)
            job.task.cancel()

    async def _reap(self) -> None:
        """Stop runs that no request has asked about for `idle_timeout` (the player went away)."""
        while True:
            await asyncio.sleep(max(0.05, self.idle_timeout / 4))
            now = time.monotonic()
            for job in list(self._jobs.values()):
                if job.pins == 0 and job.waiters == 0 and now - job.touched > self.idle_timeout:
                    self._stop(job)

    def _slots(self, plan: Plan) -> asyncio.Semaphore:
        return self._copy_slots if plan.video == "copy" else self._transcode_slots

    async def _run(self, job: _Job) -> None:
        try:
            async with self._slots(job.plan):
                await self._generate(job)
        except asyncio.CancelledError:
            job.error = ToolError("the HLS run was stopped")
            job.record = False
            raise
        except ImageapiError as exc:
            job.error = exc
        except OSError as exc:  # the cache folder is not writable, the disk is full
            job.error = ToolError(f"cannot write the HLS cache: {exc.strerror or exc}")
            job.record = False
        finally:
            job.ready.set()
        if job.error is not None:
            log.warning("HLS of %s/%s failed: %s", job.library, job.rel, job.error.message)
            if job.record:  # the file's fault (or a run past its time limit): not tried again for this version
                await self._failed(job.library, job.rel, job.key, job.error)

    async def _lock(self, job: _Job) -> int:
        """The variant's lock; while another process holds it (it is making this variant), wait."""
        await asyncio.to_thread(job.folder.mkdir, parents=True, exist_ok=True)
        path = job.folder / f".lock-{job.plan.variant}"
        while True:
            fd = _try_lock(path)
            if fd is not None:
                return fd
            await asyncio.sleep(LOCK_POLL)

    async def _generate(self, job: _Job) -> None:
        fd = await self._lock(job)
        with _held(fd):
            done = complete_generation(job.folder, job.plan.variant, job.key)
            if done is not None:  # another process made it while we waited for the lock
                job.published = done
                return
            try:
                cmd = await asyncio.to_thread(segment_command, job.src, job.plan)
            except ToolError:
                job.record = False  # no ffmpeg here: not the file's fault
                raise
            await asyncio.to_thread(_sweep, job.folder, job.plan.variant)
            gen = job.folder / f".gen-{job.plan.variant}-{secrets.token_hex(4)}"
            gen.mkdir()
            job.gen = gen
            watcher = asyncio.create_task(self._watch_first_segment(job, gen))
            try:
                out = await self.runner(cmd, run_timeout(job.plan, job.info.duration), cwd=gen)
                self._check(job, gen, out)
                if await asyncio.to_thread(stat_key, job.src) != job.key:
                    job.record = False
                    raise MediaError(f"{job.rel!r} changed while it was being prepared: ask again")
                playlist = _read_playlist(gen)
                assert playlist is not None
                marker = gen / MARKER
                marker.with_suffix(".tmp").write_text(json.dumps(_marker(job.key, job.plan, playlist)))
                os.replace(marker.with_suffix(".tmp"), marker)
                _publish(job.folder, job.plan.variant, gen)
                job.published = gen
                await asyncio.to_thread(_sweep_stale_variants, job.folder, job.plan.variant, job.key)
                log.info("HLS of %s/%s (%s) made: %d segments, %.1f s of video in %.1f s", job.library,
                         job.rel, job.plan.variant, len(playlist.segments), playlist.duration,
                         time.monotonic() - job.started)
            except BaseException:
                job.gen = None
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, gen, True))
                raise
            finally:
                watcher.cancel()

    @staticmethod
    def _check(job: _Job, gen: Path, out: subprocess.CompletedProcess[bytes]) -> None:
        if out.returncode != 0:
            raise MediaError(f"cannot stream {job.rel!r}: {ffmpeg.error_reason(out.stderr)}")
        playlist = _read_playlist(gen)
        if playlist is None or not playlist.ended or not playlist.segments:
            raise MediaError(f"cannot stream {job.rel!r}: ffmpeg wrote no complete playlist")
        names = [n for n, _ in playlist.segments] + ([playlist.init] if playlist.init else [])
        if playlist.init is None or any(not SEGMENT_RE.match(n) or not (gen / n).is_file() for n in names):
            raise MediaError(f"cannot stream {job.rel!r}: ffmpeg's playlist names files it did not write")

    async def _watch_first_segment(self, job: _Job, gen: Path) -> None:
        while not job.ready.is_set():
            playlist = _read_playlist(gen)
            if playlist is not None and playlist.segments:
                job.ready.set()
                return
            await asyncio.sleep(POLL)

    def _view(self, job: _Job) -> StreamView:
        if job.error is not None:
            raise job.error
        if job.published is not None:
            return self._published_view(job.plan.variant, job.key, job.published)
        gen = job.gen
        playlist = _read_playlist(gen) if gen is not None else None
        if gen is None or playlist is None or not playlist.segments:
            return StreamView(job.plan.variant, job.key, None, Playlist(None, (), False), False)
        # ffmpeg ends its list before it exits; only the published generation ends ours.
        return StreamView(job.plan.variant, job.key, gen, Playlist(playlist.init, playlist.segments, False), False)

    @staticmethod
    def _published_view(variant: str, key: str, folder: Path) -> StreamView:
        playlist = _read_playlist(folder)
        if playlist is None:
            raise MediaError("the HLS cache is damaged: its playlist is missing")
        return StreamView(variant, key, folder, playlist, True)


def segment_file(view: StreamView, name: str) -> Path:
    """The path of a file of the view that is listed as complete; NotFoundError otherwise."""
    if not SEGMENT_RE.match(name):
        raise UsageError(f"{name!r} is not an HLS segment name")
    listed = {n for n, _ in view.playlist.segments}
    if view.playlist.init and view.playlist.segments:
        listed.add(view.playlist.init)
    if view.folder is None or name not in listed:
        raise NotFoundError(f"segment {name!r} is not (yet) part of this stream")
    return view.folder / name


# --------------------------------------------------------------------------------------------
# Failures, on the file's row


_FAILURE_TYPES: dict[str, type[ImageapiError]] = {
    UnsupportedMediaError.code: UnsupportedMediaError, MediaError.code: MediaError, ToolError.code: ToolError,
}


async def record_failure(db: Connection, library: str, rel: str, key: str, exc: ImageapiError) -> None:
    """Remember on the row that source version `key` cannot be streamed, and why."""
    async with transaction(db):
        # The message may quote a name that is not UTF-8.
        await repo.set_hls_failure(db, library, rel, key, safe_text(exc.message), exc.code)


def recorded_failure(row: Mapping[str, Any], key: str) -> ImageapiError | None:
    """The failure recorded on a files row (or a VideoTarget) for source version `key`, as the
    error to answer again."""
    if row["hls_source"] != key or not row["hls_error"]:
        return None
    return _FAILURE_TYPES.get(row["hls_error_code"] or "", MediaError)(row["hls_error"])


async def clear_failures(db: Connection, file_ids: list[int]) -> None:
    async with transaction(db):
        await repo.clear_hls_failures(db, file_ids)


# --------------------------------------------------------------------------------------------
# Many videos ahead of time (`imageapi video hls`)


@dataclass(frozen=True)
class VideoTarget:
    id: int
    library: Library
    rel: str
    hls_source: str | None
    hls_error: str | None
    hls_error_code: str | None

    @property
    def row(self) -> dict[str, Any]:
        """The failure columns, as recorded_failure reads them."""
        return {"hls_source": self.hls_source, "hls_error": self.hls_error, "hls_error_code": self.hls_error_code}


async def indexed_videos(db: Connection, library: Library, under: str = "") -> list[VideoTarget]:
    """The indexed videos of a library: all, one file, or a folder's subtree (by path)."""
    return [VideoTarget(r.id, library, r.rel_path, r.hls_source, r.hls_error, r.hls_error_code)
            for r in await repo.videos(db, library.id, under)]


@dataclass
class HlsReport:
    videos: int = 0
    made: int = 0
    cached: int = 0
    failed: int = 0
    skipped: int = 0                     # failed before for this version (not retried)
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)   # (library/path, why), the first 100


async def prepare_all(
    manager: HlsManager,
    db: Connection,
    targets: list[VideoTarget],
    *,
    hevc_ok: bool = False,
    retry_failed: bool = False,
    jobs: int = 1,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> HlsReport:
    """Make the playlists of `targets`, `jobs` videos at a time (the manager's transcode slots
    still apply). Failures are recorded on the rows; a failure recorded for the file's current
    version is not tried again unless `retry_failed`."""
    started = time.monotonic()
    report = HlsReport(videos=len(targets))
    queue: asyncio.Queue[VideoTarget] = asyncio.Queue()
    for t in targets:
        queue.put_nowait(t)
    done = 0
    if progress:
        progress("HLS playlists", 0, len(targets))

    def note(t: VideoTarget, err: ImageapiError) -> None:
        if len(report.errors) < 100:
            report.errors.append((f"{t.library.name}/{t.rel}", err.message))

    async def one(t: VideoTarget) -> None:
        src = resolve_in_library(t.library, t.rel)
        key = await asyncio.to_thread(stat_key, src)
        known = recorded_failure(t.row, key)
        if known is not None and not retry_failed:
            report.skipped += 1
            note(t, known)
            return
        if known is not None:
            await clear_failures(db, [t.id])
        made = await manager.prepare(t.library.name, t.rel, src, hevc_ok)
        if made.made:
            report.made += 1
        else:
            report.cached += 1

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            t = queue.get_nowait()
            try:
                await one(t)
            except ImageapiError as exc:  # recorded on the row by the manager when it is the file's fault
                report.failed += 1
                note(t, exc)
            done += 1
            if progress:
                progress("HLS playlists", done, len(targets))

    await asyncio.gather(*(worker() for _ in range(max(1, jobs))))
    report.seconds = time.monotonic() - started
    return report
