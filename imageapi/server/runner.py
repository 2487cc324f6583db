"""Running the application: one process, or several sharing the port (SO_REUSEPORT).

Thumbnail requests after a connection's first skip aiohttp's per-request machinery (fastpath.py),
so one process serves about half of nginx's rate on 2 cores (bench/bench_serve.py). Extra processes help mainly
while a full scan runs in the first one (its threads and workers take the first process's time);
they only serve requests: the watcher runs in the first one alone, so there is still one writer of
scans. Each process has its own token cache and thumbnail cache; the login throttle's counts, the
sessions and the users the caches re-check (every second) are in the database, shared by them all.
Extra processes take CPU from the scan, which is why the default stays one.

uvloop is used when it is installed (about 10-15% more requests per second here).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Callable
from multiprocessing.process import BaseProcess

from aiohttp import web

from imageapi.core.config import Config

log = logging.getLogger("imageapi.server")

SHUTDOWN_TIMEOUT = 30.0  # seconds in-flight requests get to finish after SIGTERM/SIGINT
PARENT_CHECK = 1.0       # seconds between checks that the first process is still there


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_server(
    app: web.Application,
    host: str,
    port: int,
    cfg: Config,
    *,
    reuse_port: bool = False,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: then stop accepting, let in-flight requests finish (up to
    SHUTDOWN_TIMEOUT), run the app's cleanup (watcher, pools, database) and return."""
    web.run_app(
        app, host=host, port=port, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=True,
        reuse_port=reuse_port or None, loop=new_loop(),
        access_log=logging.getLogger("aiohttp.access") if cfg.log_level in ("debug", "trace") else None,
        print=(lambda _: on_started()) if on_started else None,
    )


def serve(
    make_app: Callable[[bool], web.Application],
    host: str,
    port: int,
    cfg: Config,
    *,
    processes: int = 1,
    watch: bool = True,
) -> None:
    """The first process (with the watcher when `watch`) and processes - 1 helpers on the same port."""
    app = make_app(watch)
    helpers: list[BaseProcess] = []

    async def stop_helpers(_: web.Application) -> None:
        for p in helpers:  # they finish their own in-flight requests
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    app.on_shutdown.append(stop_helpers)
    if processes > 1:
        ctx = multiprocessing.get_context("spawn")
        for _ in range(processes - 1):
            helper = ctx.Process(target=_helper_main, args=(cfg, host, port, os.getpid()), daemon=False)
            helper.start()
            helpers.append(helper)

    def started() -> None:
        log.warning("imageapi serving on http://%s:%d (%d process%s, watcher %s, %d workers)", host, port,
                    processes, "es" if processes > 1 else "", "on" if watch else "off", cfg.workers)

    try:
        run_server(app, host, port, cfg, reuse_port=processes > 1, on_started=started)
    finally:
        for p in helpers:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
            p.join(SHUTDOWN_TIMEOUT + 10)
            if p.is_alive():
                p.kill()
                p.join(5)
    log.warning("imageapi server stopped")


def _helper_main(cfg: Config, host: str, port: int, parent: int) -> None:
    """A helper process: serves requests only, and leaves when the first process is gone."""
    from imageapi.cli.common import setup_logging
    from imageapi.server.app import create_app

    setup_logging(cfg.log_level)
    app = create_app(cfg, watch=False)

    async def orphan_guard(app: web.Application) -> AsyncIterator[None]:
        async def watch_parent() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(PARENT_CHECK)
            log.warning("the first server process is gone: stopping")
            os.kill(os.getpid(), signal.SIGTERM)

        task = asyncio.create_task(watch_parent())
        yield
        task.cancel()

    app.cleanup_ctx.append(orphan_guard)
    run_server(app, host, port, cfg, reuse_port=True)
