"""The libraries, kept in memory: every request names one, and they change rarely (a CLI
`library add` in another process shows up within `ttl` seconds)."""

from __future__ import annotations

import asyncio
import time

from imageapi.core.db import Connection
from imageapi.core.errors import NotFoundError, UsageError
from imageapi.core.libraries import Library, list_libraries


class LibraryCache:
    def __init__(self, db: Connection, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._libs: dict[str, Library] = {}
        self._loaded = float("-inf")
        self._loading: asyncio.Future[None] | None = None

    async def all(self) -> list[Library]:
        if time.monotonic() - self._loaded > self.ttl:
            await self.refresh()
        return list(self._libs.values())

    async def refresh(self) -> None:
        """Reload from the database. Callers that come while a reload is under way share it
        (when the cache goes stale under load, every request in flight would ask at once)."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._loaded_cb)
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        self._libs = {lib.name: lib for lib in await list_libraries(self.db)}
        self._loaded = time.monotonic()

    def _loaded_cb(self, task: asyncio.Future[None]) -> None:
        self._loading = None
        if not task.cancelled():
            task.exception()  # retrieved: each caller got it already

    def fresh(self, name: str | None) -> Library | None:
        """What `get` would return, when the cache is fresh and the answer is plain (no await:
        the per-request fast path); None otherwise."""
        if time.monotonic() - self._loaded > self.ttl:
            return None
        if name:
            return self._libs.get(name)
        main = self._libs.get("main")
        if main is None and len(self._libs) == 1:
            main = next(iter(self._libs.values()))
        return main

    async def get(self, name: str | None) -> Library:
        """The named library; with no name, `main` or the only one there is."""
        lib = self.fresh(name)
        if lib is not None:
            return lib
        libs = await self.all()
        if name:
            lib = self._libs.get(name)
            if lib is None:
                await self.refresh()  # added a moment ago by the CLI?
                lib = self._libs.get(name)
            if lib is None:
                known = ", ".join(sorted(self._libs)) or "none yet"
                raise NotFoundError(f"no library named {name!r} (known: {known})")
            return lib
        if "main" in self._libs:
            return self._libs["main"]
        if len(libs) == 1:
            return libs[0]
        if not libs:
            raise NotFoundError("no library configured yet (imageapi library add NAME PATH)")
        raise UsageError("parameter 'library' is required when there are several libraries "
                         f"(known: {', '.join(sorted(self._libs))})")
