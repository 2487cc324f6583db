"""Thumbnails made on the fly and previews, rendered in a worker pool of their own.

Requests get their own small pool so that a preview is not queued behind a full scan's batches.
Concurrent requests for the same picture share one render. A worker that crashes or hangs on a
crafted file costs that request (and the pool is restarted), never the server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from imageapi.core.errors import MediaError
from imageapi.core.media import ThumbResult
from imageapi.core.pool import WorkerPool
from imageapi.core.thumbs import Rendered
from imageapi.server import workfns
from imageapi.server.cache import ByteCache, CachedBody, make_entry

T = TypeVar("T")

RENDER_TIMEOUT = 120.0    # ffmpeg and friends have their own shorter timeouts inside
PREVIEW_BOX = 2048


class Renderer:
    def __init__(self, pool: WorkerPool, preview_cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.pool = pool
        self.previews = ByteCache(preview_cache_bytes)
        self._inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def _once(self, key: tuple[str, str], make: Callable[[], Awaitable[T]]) -> T:
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.ensure_future(make())
        self._inflight[key] = fut
        fut.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(fut)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.wait_for(self.pool.run(fn, *args), RENDER_TIMEOUT)
        except BrokenProcessPool:
            self.pool.reset()
            raise MediaError("the worker process died while rendering this file") from None
        except TimeoutError:
            self.pool.reset()  # the hung worker must go, or it holds a slot forever
            raise MediaError(f"rendering took longer than {RENDER_TIMEOUT:.0f} s") from None

    async def thumbnail(self, src: str, kind: str, dest: str, box: int, duration: float | None) -> ThumbResult:
        return await self._once(("thumb", dest), lambda: self._run(workfns.thumbnail, src, kind, dest, box, duration))

    async def preview(self, src: str, kind: str, duration: float | None) -> CachedBody:
        """An upright JPEG fitting PREVIEW_BOX, cached while the source is unchanged."""
        st = await asyncio.to_thread(os.stat, src)
        ident = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = self.previews.get(src, ident)
        if hit is not None:
            return hit

        async def make() -> CachedBody:
            rendered: Rendered = await self._run(workfns.preview, src, kind, PREVIEW_BOX, duration)
            return self.previews.put(src, make_entry(ident, rendered.jpeg, st.st_mtime_ns, "p"))

        return await self._once(("preview", src), make)

    def close(self) -> None:
        self.pool.close()
