"""create_app(config): the single assembly point of the server (tests use it too).

Routes by area, the error and auth middlewares, and cleanup contexts that open and close, in this
order: the database (migrated), the worker pools, the watcher. Shutdown runs them backwards: the
watcher stops between steps, the pools shut down, the database closes last. They are entered as one
context, so that a failure while starting closes again what was already open (aiohttp runs no
cleanup when start-up fails, and an open database connection's thread would keep the process
alive, deaf to SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from imageapi.core.config import Config, ensure_dirs
from imageapi.core.db import connect
from imageapi.core.libraries import sync_base_path
from imageapi.core.pool import WorkerPool
from imageapi.core.tokens import TokenService, check_secret
from imageapi.server import (
    auth,
    openapi,
    routes_duplicates,
    routes_faces,
    routes_insights,
    routes_map,
    routes_media,
    routes_memories,
    routes_people,
    routes_photos,
    routes_places,
    routes_search,
    routes_status,
    routes_tags,
    routes_timeline,
    routes_video,
    sessions,
    webapp,
)
from imageapi.server.background import Background, Watcher
from imageapi.server.cache import ByteCache
from imageapi.server.fastpath import FastThumbs
from imageapi.server.keys import (
    BACKGROUND,
    CONFIG,
    DB,
    FAST_THUMBS,
    LIBRARIES,
    POOL,
    RENDERER,
    THUMB_CACHE,
    TOKENS,
)
from imageapi.server.libcache import LibraryCache
from imageapi.server.middlewares import error_middleware, shape_protocol_errors
from imageapi.server.render import Renderer

MAX_BODY = 1024 * 1024           # request bodies (JSON) larger than this get a 413
THUMB_CACHE_BYTES = 64 * 1024 * 1024
THUMB_RECHECK = 1.0              # seconds a cached thumbnail is served before its file is stat'ed again
WORKER_NICE = 10                 # the pool's processes yield the CPU to the event loop

# Builds the watcher once the database and the pool exist: (config, db, pool) -> Watcher.
WatcherFactory = Callable[..., Watcher]


def create_app(
    config: Config,
    *,
    watch: bool = False,
    watcher_factory: WatcherFactory | None = None,
) -> web.Application:
    """The application. Raises UsageError when SECRET_KEY is missing or shorter than 32 bytes."""
    secret = check_secret(config.secret_key)
    errors_and_auth = error_middleware(auth.AuthGate())
    app = web.Application(middlewares=[errors_and_auth], client_max_size=MAX_BODY)
    shape_protocol_errors(app)
    app[CONFIG] = config
    app[TOKENS] = TokenService(secret)
    app[THUMB_CACHE] = ByteCache(THUMB_CACHE_BYTES, THUMB_RECHECK)
    app[FAST_THUMBS] = FastThumbs(app, app[THUMB_CACHE], errors_and_auth)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_pools)
    app.cleanup_ctx.append(_background(watch, watcher_factory))
    for area in (auth, routes_status, routes_photos, routes_media, routes_tags, routes_memories,
                 routes_faces, routes_insights, routes_video, routes_search, routes_places,
                 routes_duplicates, routes_map, openapi,
                 sessions, routes_timeline, routes_people, webapp):  # browser sessions and the web client
        area.setup(app)
    contexts = list(app.cleanup_ctx)
    app.cleanup_ctx.clear()
    app.cleanup_ctx.append(_all_or_nothing(contexts))
    return app


def _all_or_nothing(contexts: Sequence[Callable[[web.Application], Any]]) -> Callable[
        [web.Application], AsyncIterator[None]]:
    """The cleanup contexts entered in order and left backwards; when one fails to start, those
    already entered are left before the error goes on."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for make in contexts:
                made = make(app)  # an async generator, or (as aiohttp allows) a context manager
                if not isinstance(made, contextlib.AbstractAsyncContextManager):
                    made = contextlib.asynccontextmanager(lambda gen=made: gen)()
                await stack.enter_async_context(made)
            yield

    return ctx


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    ensure_dirs(config)
    db = await connect(config.database)  # runs the migrations
    try:
        await sync_base_path(db, config)
        app[DB] = db
        app[LIBRARIES] = LibraryCache(db)
        yield
    finally:
        await db.close()


async def _pools(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pool = WorkerPool(config.workers, nice=WORKER_NICE)
    # Requests get a pool of their own, so a preview does not wait behind a full scan's batches.
    renderer = Renderer(WorkerPool(max(1, config.workers // 2), nice=WORKER_NICE // 2))
    app[POOL] = pool
    app[RENDERER] = renderer
    try:
        yield
    finally:
        await asyncio.to_thread(renderer.close)
        await asyncio.to_thread(pool.close)


def _background(watch: bool, factory: WatcherFactory | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        watcher: Watcher | None = None
        async with contextlib.AsyncExitStack() as stack:
            if watch:
                # The watcher writes in transactions of its own: it gets its own connection.
                wdb = await connect(config.database, migrate=False)
                stack.push_async_callback(wdb.close)
                if factory is not None:
                    watcher = factory(config, wdb, app[POOL])
                else:
                    from imageapi.server.watching import ServerWatcher

                    watcher = ServerWatcher(wdb, config, app[POOL], config.faces, job="imageapi serve")
                close = getattr(watcher, "aclose", None)
                if close is not None:
                    stack.push_async_callback(close)
            bg = Background(watcher)
            app[BACKGROUND] = bg
            bg.start()
            stack.push_async_callback(bg.stop)
            yield

    return ctx
