"""`imageapi worker`: drain the backlogs beside other workers, on this host or others."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import typer

from imageapi.cli import common
from imageapi.core.db import connect
from imageapi.core.drainer import Drainer, WorkerReport, parse_kinds
from imageapi.core.errors import ImageapiError
from imageapi.core.libraries import get_library
from imageapi.core.pool import WorkerPool

LABELS = {"thumbs": "Thumbnails", "hash": "Hashing", "phash": "Perceptual hashes", "faces": "Detecting faces",
          "previews": "Previews", "hls": "HLS playlists", "places": "Places"}


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


def worker(
    kinds: str | None = typer.Option(
        None, "--kinds", help="Comma-separated: thumbs, hash, phash, faces, previews, hls, places (default: all "
        "but hls; faces when enabled)."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", min=1, help="Worker processes (default: WORKERS, one per core)."),
    library: list[str] = typer.Option([], "--library", "-l", help="Only this library (repeatable)."),
    until_empty: bool = typer.Option(
        False, "--until-empty", help="Exit when nothing is left to do, items other workers hold included."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Claim backlog items under leases in the database and work them, beside other workers on this
    host or others, until SIGTERM or Ctrl-C (or, with --until-empty, until the backlog is empty).

    A worker that dies loses its leases after WORKER_LEASE_SECONDS and its items go back; one
    whose lease was taken over writes nothing. LIBRARY_PATH_MAP says where this host sees the
    libraries when it mounts them elsewhere."""
    cfg = common.config_with_dirs()
    if concurrency:
        cfg = cfg.with_overrides(workers=concurrency)
    try:
        chosen = parse_kinds(kinds, cfg.faces.enabled, cfg.faces.disabled_message)
    except ImageapiError as exc:
        common.fail(exc.message, common.exit_code_for(exc))

    async def go() -> WorkerReport:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as opened:
            # Not common.open_store: a worker never changes the libraries (BASE_PATH as this host
            # sees it would move library `main` for every host); LIBRARY_PATH_MAP maps them here.
            db = await connect(cfg.database)
            opened.push_async_callback(db.close)
            pool = WorkerPool(cfg.workers)
            opened.callback(pool.close)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
                opened.callback(loop.remove_signal_handler, sig)
            library_ids = [(await get_library(db, name)).id for name in library]
            with common.ProgressBars(not json_out) as bars:
                drainer = Drainer(db, pool, cfg, chosen, library_ids=library_ids,
                                  progress=lambda kind, n, of: bars(LABELS[kind], n, of))
                opened.push_async_callback(drainer.aclose)
                report = await drainer.run(stop, until_empty=until_empty)
            if stop.is_set():
                pool.reset()  # work still running in the pool is not waited for
            return report

    report = common.run(go)
    if json_out:
        common.emit_json({
            "holder": report.holder,
            "kinds": {k: {"claimed": r.claimed, "done": r.done, "dropped": r.dropped, **r.detail}
                      for k, r in report.kinds.items()},
            "remaining": report.remaining, "service_down": report.service_down, "stopped": report.stopped,
            "seconds": round(report.seconds, 3),
        })
    else:
        parts = [f"{k} {r.done} done" + (f", {r.dropped} dropped (lease lost)" if r.dropped else "")
                 + "".join(f", {n} {name.replace('_', ' ')}" for name, n in r.detail.items() if n)
                 for k, r in report.kinds.items()]
        left = ", ".join(f"{k} {n}" for k, n in report.remaining.items())
        common.out_console.print(f"worker {report.holder}: {'; '.join(parts)}; remaining: {left} "
                                 f"in {report.seconds:.1f} s", highlight=False)
    if report.service_down and until_empty:
        common.fail(f"Apollo at {cfg.faces.base_url} stopped answering ({report.service_down}); "
                    f"{report.remaining.get('faces', 0)} photos remain", common.EXIT_SERVICE)
    if report.stopped and until_empty:
        raise typer.Exit(common.EXIT_INTERRUPTED)
