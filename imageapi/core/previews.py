"""The video wall's previews: a short silent looping MP4 clip and a small animated GIF per video,
their backlog (videos whose previews are missing or stale), and the wall's listing.

Files mirror the library's tree, with the format's extension added to the video's name:
PREVIEW_CLIPS_DIRECTORY/<library>/<relative path>.mp4 and GIFS_DIRECTORY/<library>/<relative path>.gif.

The clip is SNIPPETS windows of SNIPPET_SECONDS taken evenly through the video (a video shorter
than SHORT_VIDEO is used whole), upright, CLIP_WIDTH pixels wide (never enlarged), CLIP_FPS, H.264
with `faststart`, no audio. The GIF is made from the clip: GIF_WIDTH wide, GIF_FPS, looping.
Both are written under temporary names and renamed into place only when both are complete and the
clip probes as a video of the stated width; the row is marked done afterwards, and the server
serves a clip only for a row marked done for the file's current version (size, mtime and path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imageapi.core import ffmpeg
from imageapi.core.config import Config, ensure_dir
from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.errors import ImageapiError, MediaError
from imageapi.core.ffmpeg import AsyncRunner
from imageapi.core.files import taken_at_iso
from imageapi.core.libraries import Library, resolve_in_library
from imageapi.core.listing import decode_cursor, encode_cursor
from imageapi.core.names import safe_text
from imageapi.core.repositories import previews as repo
from imageapi.core.repositories.leases import Fence

log = logging.getLogger(__name__)

CLIP_WIDTH = 320
CLIP_FPS = 24
SNIPPETS = 3
SNIPPET_SECONDS = 1.0
SHORT_VIDEO = 3.5
GIF_WIDTH = 240
GIF_FPS = 8
CLIP_TIMEOUT = 180.0     # three seeks and decodes of a 4K source on a slow CPU
GIF_TIMEOUT = 60.0
WALL_MAX_LIMIT = 1000

# (stage, done, total) progress callback, as the scan's.
Progress = Callable[[str, int, int | None], None]


def preview_key(size: int, mtime_ns: int, rel_path: str) -> str:
    """The version of a video its previews are made for: a video's previews are due when the one
    they were made (or failed) for is not the row's current one."""
    return f"{size}:{mtime_ns}:{rel_path}"


def clip_path(config: Config, library: str, rel: str) -> Path:
    return config.preview_clips_directory / library / f"{rel}.mp4"


def gif_path(config: Config, library: str, rel: str) -> Path:
    return config.gifs_directory / library / f"{rel}.gif"


# --------------------------------------------------------------------------------------------
# Making one video's previews


def sample_windows(duration: float | None) -> list[tuple[float, float]]:
    """(start, length) of each part of the clip, in seconds."""
    total = SNIPPETS * SNIPPET_SECONDS
    if duration is None or not math.isfinite(duration) or duration <= 0:
        return [(0.0, total)]  # unknown length: the start
    if duration <= SHORT_VIDEO:
        return [(0.0, duration)]
    windows = []
    for i in range(SNIPPETS):
        centre = duration * (i + 0.5) / SNIPPETS
        start = min(max(0.0, centre - SNIPPET_SECONDS / 2), duration - SNIPPET_SECONDS - 0.05)
        windows.append((round(max(0.0, start), 3), SNIPPET_SECONDS))
    return windows


def clip_command(src: Path, windows: list[tuple[float, float]], dest: Path) -> list[str]:
    cmd = [ffmpeg.ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    for start, length in windows:  # one input per window: a fast seek each, decoding only what is used
        cmd += ["-ss", f"{start:.3f}", "-t", f"{length:.3f}", *ffmpeg.input_args(src)]
    # ffmpeg turns each input upright before the filters (autorotate); pixels made square first.
    chain = (f"fps={CLIP_FPS},scale='trunc(if(gt(sar,0),iw*sar,iw))':'ih',setsar=1,"
             f"scale='trunc(min(iw,{CLIP_WIDTH})/2)*2':-2,setsar=1,format=yuv420p")
    parts = [f"[{i}:V:0]{chain}[v{i}]" for i in range(len(windows))]
    joined = "".join(f"[v{i}]" for i in range(len(windows)))
    graph = ";".join(parts) + f";{joined}concat=n={len(windows)}:v=1:a=0[out]"
    return cmd + ["-filter_complex", graph, "-map", "[out]", "-an", "-sn", "-dn", "-c:v", "libx264",
                  "-preset", "veryfast", "-crf", "28", "-profile:v", "high", "-movflags", "+faststart",
                  "-f", "mp4", "-y", str(dest)]


def gif_command(clip: Path, dest: Path) -> list[str]:
    graph = (f"fps={GIF_FPS},scale='min(iw,{GIF_WIDTH})':-1:flags=lanczos,split[a][b];"
             "[a]palettegen=max_colors=128:stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3")
    return [ffmpeg.ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", "error", *ffmpeg.input_args(clip),
            "-vf", graph, "-loop", "0", "-f", "gif", "-y", str(dest)]


@dataclass
class PreviewFiles:
    clip: Path
    gif: Path
    width: int
    height: int
    duration: float | None


def _tmp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")


def _drop_leftovers(dest: Path) -> None:
    """Temporary files of an earlier attempt at `dest` that was killed."""
    prefix = f".{dest.name}.tmp-"
    with contextlib.suppress(OSError):
        for name in os.listdir(dest.parent):
            if name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(dest.parent / name)


def remove_previews(config: Config, library: str, rel: str) -> None:
    for p in (clip_path(config, library, rel), gif_path(config, library, rel)):
        with contextlib.suppress(OSError):
            os.unlink(p)


async def make_previews(
    config: Config, library: str, rel: str, src: Path, duration: float | None, runner: AsyncRunner | None = None,
) -> PreviewFiles:
    """Write the clip and the GIF of one video. MediaError when ffmpeg cannot read it (nothing
    is left behind, and earlier previews of it are removed), ToolError on a timeout."""
    run = runner or ffmpeg.run_async
    clip, gif = clip_path(config, library, rel), gif_path(config, library, rel)
    for dest in (clip, gif):
        ensure_dir("PREVIEW_CLIPS_DIRECTORY" if dest is clip else "GIFS_DIRECTORY", dest.parent)
        _drop_leftovers(dest)
    tmp_clip, tmp_gif = _tmp_name(clip), _tmp_name(gif)
    try:
        out = await run(clip_command(src, sample_windows(duration), tmp_clip), CLIP_TIMEOUT)
        if out.returncode != 0 or not tmp_clip.is_file() or tmp_clip.stat().st_size == 0:
            raise MediaError(f"cannot make a preview clip of {rel!r}: {ffmpeg.error_reason(out.stderr)}")
        info = await ffmpeg.probe_async(tmp_clip, runner=run)
        if info.video_codec != "h264" or not info.width or not info.height or info.width > CLIP_WIDTH:
            raise MediaError(f"the preview clip of {rel!r} came out wrong "
                             f"({info.video_codec} {info.width}x{info.height})")
        out = await run(gif_command(tmp_clip, tmp_gif), GIF_TIMEOUT)
        if out.returncode != 0 or not _is_gif(tmp_gif):
            raise MediaError(f"cannot make a GIF of {rel!r}: {ffmpeg.error_reason(out.stderr)}")
        os.replace(tmp_clip, clip)
        os.replace(tmp_gif, gif)
    except BaseException as exc:
        for p in (tmp_clip, tmp_gif):
            with contextlib.suppress(OSError):
                os.unlink(p)
        if isinstance(exc, MediaError):
            remove_previews(config, library, rel)  # a clip of an older version would be wrong now
        raise
    return PreviewFiles(clip, gif, info.width, info.height, info.duration)


def _is_gif(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(6) in (b"GIF89a", b"GIF87a")
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# The backlog


@dataclass(frozen=True)
class Candidate:
    id: int
    library: Library
    rel: str
    size: int
    mtime_ns: int
    duration: float | None

    @property
    def key(self) -> str:
        return preview_key(self.size, self.mtime_ns, self.rel)


async def due_previews(
    db: Connection, *, library_ids: list[int] | None = None, after_id: int = 0, limit: int = 64,
) -> list[Candidate]:
    """Videos whose previews are missing or stale, by id, after `after_id`."""
    rows = await repo.due_videos(db, library_ids, after_id, limit)
    return [Candidate(r.id, Library(r.library_id, r.library, Path(r.root)), r.rel_path, r.size, r.mtime_ns,
                      r.duration) for r in rows]


@dataclass
class PreviewStatus:
    videos: int
    done: int
    failed: int
    due: int


async def preview_status(db: Connection, library_ids: list[int] | None = None) -> PreviewStatus:
    videos, done, failed = await repo.preview_counts(db, library_ids)
    return PreviewStatus(videos, done, failed, videos - done - failed)


async def record_done(db: Connection, c: Candidate) -> None:
    async with transaction(db):
        await repo.set_preview_done(db, c.id, c.key)


async def record_failed(db: Connection, c: Candidate, error: str) -> None:
    async with transaction(db):
        await repo.set_preview_failed(db, c.id, c.key, safe_text(error))  # may quote a name that is not UTF-8


async def mark_missing(db: Connection, file_id: int) -> None:
    """A clip marked done whose file is gone (deleted by hand): due again."""
    async with transaction(db):
        await repo.clear_preview(db, file_id)


async def retry_failed(db: Connection, library_ids: list[int] | None = None) -> int:
    """Put videos whose previews failed back in the backlog."""
    async with transaction(db):
        return await repo.clear_failed_previews(db, library_ids)


@dataclass
class PreviewReport:
    made: int = 0
    failed: int = 0
    remaining: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)   # (library/path, why), the first 100


async def preview_pass(
    db: Connection,
    config: Config,
    *,
    max_items: int | None = None,
    library_ids: list[int] | None = None,
    jobs: int = 1,
    runner: AsyncRunner | None = None,
    progress: Progress | None = None,
) -> PreviewReport:
    """Make the previews of due videos, oldest row first, `jobs` at a time, at most `max_items`.
    Failures are recorded on the rows (not tried again until the file changes or retry_failed).
    ToolError before any work when there is no ffmpeg."""
    ffmpeg.ffmpeg_path()
    started = time.monotonic()
    report = PreviewReport()
    status = await preview_status(db, library_ids)
    total = status.due if max_items is None else min(status.due, max_items)
    if progress:
        progress("previews", 0, total)
    after = 0

    while max_items is None or report.made + report.failed < max_items:
        room = 64 if max_items is None else min(64, max_items - report.made - report.failed)
        batch = await due_previews(db, library_ids=library_ids, after_id=after, limit=room)
        if not batch:
            break
        after = batch[-1].id
        await make_due(db, config, batch, report, jobs=jobs, runner=runner, progress=progress, total=total)
    report.remaining = (await preview_status(db, library_ids)).due
    report.seconds = time.monotonic() - started
    return report


async def make_due(
    db: Connection,
    config: Config,
    batch: list[Candidate],
    report: PreviewReport,
    *,
    jobs: int = 1,
    runner: AsyncRunner | None = None,
    progress: Progress | None = None,
    total: int | None = None,
    fence: Fence | None = None,
    local_root: Callable[[Library], Path] | None = None,
) -> None:
    """Make the previews of `batch`, `jobs` at a time, and record each outcome on its row; with a
    `fence`, only while the lease on the row is still held (imageapi.core.repositories.leases). `local_root`:
    where this host sees a library (LIBRARY_PATH_MAP)."""
    slots = asyncio.Semaphore(max(1, jobs))

    async def record(c: Candidate, error: str | None) -> bool:
        async with transaction(db):
            if fence is not None and not await fence.hold(db, c.id):
                return False
            if error is None:
                await record_done(db, c)
            else:
                await record_failed(db, c, error)
        return True

    async def one(c: Candidate) -> None:
        async with slots:
            lib = c.library if local_root is None else replace(c.library, root=local_root(c.library))
            try:
                src = resolve_in_library(lib, c.rel)
                await make_previews(config, c.library.name, c.rel, src, c.duration, runner)
            except ImageapiError as exc:
                if await record(c, exc.message):
                    report.failed += 1
                    if len(report.errors) < 100:
                        report.errors.append((f"{c.library.name}/{c.rel}", exc.message))
                log.info("preview of %s/%s failed: %s", c.library.name, c.rel, exc.message)
            else:
                if await record(c, None):
                    report.made += 1
            if progress:
                progress("previews", report.made + report.failed, total)

    await asyncio.gather(*(one(c) for c in batch))


# --------------------------------------------------------------------------------------------
# The wall


@dataclass
class WallPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


_WALL_SORT = "taken_desc"  # the cursor format of imageapi.core.listing


async def list_wall(
    db: Connection, lib: Library, *, folder: str = "", recursive: bool = True, limit: int = 100,
    cursor: str | None = None,
) -> WallPage:
    """Videos of a folder (or its subtree), newest first (taken-at, then id), by keyset cursor."""
    after = decode_cursor(cursor, _WALL_SORT) if cursor else None
    rows = await repo.wall_page(db, lib.id, folder=folder, recursive=recursive,
                                after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_wall_item(r) for r in rows]
    next_cursor = encode_cursor(_WALL_SORT, rows[-1]["sort_key"], rows[-1]["id"]) if more else None
    return WallPage(items, next_cursor)


def _wall_item(row: dict[str, Any]) -> dict[str, Any]:
    current = row["preview_source"] == row["current_key"]
    state = row["preview_state"] if current and row["preview_state"] else "pending"
    return {
        "path": row["rel_path"],
        "name": row["rel_path"].rpartition("/")[2],
        "size": row["size"],
        "duration": row["duration"],
        "taken_at": taken_at_iso(row["taken_at"], row["taken_at_offset"]),
        "width": row["width"],
        "height": row["height"],
        "rotation": row["rotation"],
        "video_codec": row["video_codec"],
        "audio_codec": row["audio_codec"],
        "preview": {"state": state, "error": row["preview_error"] if state == "failed" else None},
    }
