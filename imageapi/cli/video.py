"""`imageapi video hls|previews|status`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.markup import escape

from imageapi.cli import common
from imageapi.core import hls, previews
from imageapi.core.config import Config, ensure_dir
from imageapi.core.db import Connection, connect
from imageapi.core.errors import ImageapiError, NotFoundError
from imageapi.core.libraries import Library, get_library, list_libraries, locate, sync_base_path
from imageapi.core.lock import DRAINS
from imageapi.core.names import shown

app = typer.Typer(help="Videos: HLS playlists ahead of time, and the video wall's preview clips and GIFs.",
                  no_args_is_help=True)

T = TypeVar("T")


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: the work was stopped (every ffmpeg killed, nothing partial kept)."""


async def _until_signalled(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work`, cancelled by SIGTERM/SIGINT: the cancellation kills every ffmpeg it started."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        raise Interrupted() from None
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _run(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return common.run(lambda: _until_signalled(work))
    except Interrupted:
        common.err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(common.EXIT_INTERRUPTED) from None


@contextlib.asynccontextmanager
async def _db(cfg: Config) -> AsyncIterator[Connection]:
    db = await connect(cfg.database)
    try:
        await sync_base_path(db, cfg)
        yield db
    finally:
        await db.close()


async def _libraries(db: Connection, names: list[str]) -> list[Library]:
    if names:
        return [await get_library(db, n) for n in names]
    return await list_libraries(db)


def _errors_json(errors: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"path": p, "error": e} for p, e in errors]


def _print_errors(errors: list[tuple[str, str]]) -> None:
    for path, error in errors[:10]:
        # Names may hold control characters or '[': shown escaped, never as markup.
        common.err_console.print(f"  [yellow]{escape(shown(path))}[/]: {escape(shown(error))}", highlight=False)


@app.command("hls")
def hls_cmd(
    paths: list[Path] = typer.Argument(None, help="Videos or folders inside a library (default: every video)."),
    library: list[str] = typer.Option([], "--library", "-l", help="Only this library (repeatable)."),
    hevc: bool = typer.Option(False, "--hevc", help="For clients that play HEVC: HEVC videos are copied, "
                              "not transcoded."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again videos that failed before."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Videos at once (default: "
                                    "VIDEO_MAX_TRANSCODES, one per two cores)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Make HLS playlists ahead of time, so that playing starts at once. Cached ones are kept; a
    changed video is made again. Runs beside `imageapi serve` (one ffmpeg per video between them)."""
    cfg = common.config_with_dirs()
    try:
        ensure_dir("VIDEO_PATH", cfg.video_path)
    except ImageapiError as exc:  # ConfigError: said with the setting's name
        common.fail(exc.message, common.exit_code_for(exc))

    transcodes = cfg.video.max_transcodes

    async def go() -> hls.HlsReport:
        async with _db(cfg) as conn:
            libs = await _libraries(conn, library)
            targets: list[hls.VideoTarget] = []
            if paths:
                for p in paths:
                    lib, rel = locate(libs, p)
                    found = await hls.indexed_videos(conn, lib, rel)
                    if not found:
                        raise NotFoundError(f"no indexed video at {p} (run `imageapi scan` first?)")
                    targets += found
            else:
                for lib in libs:
                    targets += await hls.indexed_videos(conn, lib)

            async def record(lib_name: str, rel: str, key: str, exc: ImageapiError) -> None:
                await hls.record_failure(conn, lib_name, rel, key, exc)

            manager = hls.HlsManager(cfg, transcodes=transcodes, recorder=record)
            try:
                with common.ProgressBars(not json_out) as bars:
                    return await hls.prepare_all(manager, conn, targets, hevc_ok=hevc,
                                                 retry_failed=retry_failed or bool(paths),
                                                 jobs=jobs or transcodes, progress=bars)
            finally:
                await manager.aclose()

    report = _run(go)
    if json_out:
        common.emit_json({
            "videos": report.videos, "made": report.made, "cached": report.cached, "failed": report.failed,
            "skipped": report.skipped, "seconds": round(report.seconds, 3),
            "errors": _errors_json(report.errors),
        })
        return
    common.out_console.print(
        f"{report.videos} videos: {report.made} made, {report.cached} already there, {report.failed} failed, "
        f"{report.skipped} skipped (failed before; --retry-failed) in {report.seconds:.1f} s", highlight=False)
    _print_errors(report.errors)


@app.command("previews")
def previews_cmd(
    library: list[str] = typer.Option([], "--library", "-l", help="Only this library (repeatable)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again videos whose previews failed."),
    max_items: int | None = typer.Option(None, "--max", min=1, help="Stop after N videos."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Videos at once (default: "
                                    "VIDEO_MAX_TRANSCODES, one per two cores)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Make the preview clips and GIFs of the video wall for every video that has none or a stale
    one (what the watcher does a few at a time)."""
    cfg = common.config_with_dirs()
    try:
        ensure_dir("PREVIEW_CLIPS_DIRECTORY", cfg.preview_clips_directory)
        ensure_dir("GIFS_DIRECTORY", cfg.gifs_directory)
    except ImageapiError as exc:
        common.fail(exc.message, common.exit_code_for(exc))

    workers = jobs or cfg.video.max_transcodes

    async def go() -> tuple[int, previews.PreviewReport]:
        async with _db(cfg) as conn:
            ids = [lib.id for lib in await _libraries(conn, library)] if library else None
            requeued = await previews.retry_failed(conn, ids) if retry_failed else 0
            with common.ProgressBars(not json_out) as bars:
                rep = await previews.preview_pass(conn, cfg, max_items=max_items, library_ids=ids, jobs=workers,
                                                  progress=bars)
            return requeued, rep

    # What the watcher's preview pass does: the `drains` lease (scans of any library go on).
    with common.job_lock(cfg, "imageapi video previews", [DRAINS]):
        requeued, rep = _run(go)
    if json_out:
        common.emit_json({"made": rep.made, "failed": rep.failed, "remaining": rep.remaining, "requeued": requeued,
                          "seconds": round(rep.seconds, 3),
                          "errors": _errors_json(rep.errors)})
        return
    common.out_console.print(f"previews: {rep.made} made, {rep.failed} failed, {rep.remaining} remaining "
                             f"in {rep.seconds:.1f} s", highlight=False)
    _print_errors(rep.errors)


@app.command("status")
def status_cmd(
    library: list[str] = typer.Option([], "--library", "-l", help="Only this library (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Videos, and how many have their previews made, failed or still to make."""
    cfg = common.config_with_dirs()

    async def go() -> previews.PreviewStatus:
        async with _db(cfg) as conn:
            ids = [lib.id for lib in await _libraries(conn, library)] if library else None
            return await previews.preview_status(conn, ids)

    st = common.run(go)
    if json_out:
        common.emit_json({"videos": st.videos, "previews_done": st.done, "previews_failed": st.failed,
                          "previews_due": st.due})
        return
    common.out_console.print(f"videos {st.videos}: previews made {st.done}, failed {st.failed}, to make {st.due}",
                             highlight=False)
