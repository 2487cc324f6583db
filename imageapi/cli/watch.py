"""`imageapi watch`: scans and the face backlog, on a timer, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import typer

from imageapi.cli import common
from imageapi.core.db import connect
from imageapi.core.libraries import sync_base_path
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import resolve_targets
from imageapi.core.watch import Watcher


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    library: list[str] = typer.Option([], "--library", "-l", help="Watch only this library (repeatable)."),
    once: bool = typer.Option(False, "--once", help="Run one tick (a quick scan and the face passes) and exit."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
) -> None:
    """Scan and drain the face backlog on a timer, until SIGTERM or Ctrl-C.

    Every WATCH_QUICK_INTERVAL_SECONDS a quick scan and the face passes, every
    WATCH_FULL_INTERVAL_SECONDS a full scan; one log line per tick."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)
    if cfg.log_level in ("info", "debug", "trace"):
        # The tick lines are this command's output, also on a terminal.
        logging.getLogger("imageapi.core.watch").setLevel(logging.INFO)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        # Whatever fails on the way in, what was opened is closed again: an open database
        # connection's thread would otherwise keep the process alive after the error.
        async with contextlib.AsyncExitStack() as opened:
            db = await connect(cfg.database)
            opened.push_async_callback(db.close)
            pool = WorkerPool(cfg.workers, nice=5)
            opened.callback(pool.close)
            watcher = Watcher(db, cfg, pool, cfg.faces, library_names=library)
            opened.push_async_callback(watcher.aclose)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
                opened.callback(loop.remove_signal_handler, sig)
            await sync_base_path(db, cfg)
            await resolve_targets(db, library, None)  # nothing to watch is an error, said at once
            if once:
                await watcher.scan_tick("quick")
            else:
                await watcher.run(stop)

    # No lock for the watcher's life: it takes a library's scan lease per scan and the `drains`
    # lease per pass, skipping what another run (a server's watcher, a cron scan) holds.
    common.run(go)
