"""The watcher inside the server: the same loop as `imageapi watch` (imageapi.core.watch), run as a
task beside the requests and stopped between steps at shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger("imageapi.server")

STOP_TIMEOUT = 30.0  # seconds to let the current step finish before it is cancelled


class Watcher(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


class Background:
    def __init__(self, watcher: Watcher | None) -> None:
        self.watcher = watcher
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.crashed: str | None = None

    def start(self) -> None:
        if self.watcher is not None:
            self.task = asyncio.create_task(self._run(), name="imageapi-watcher")

    async def _run(self) -> None:
        assert self.watcher is not None
        try:
            await self.watcher.run(self.stop_event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server keeps serving; /status shows what happened
            log.exception("the watcher stopped with an error")
            self.crashed = f"{type(exc).__name__}: {exc}"

    async def stop(self) -> None:
        self.stop_event.set()
        task, self.task = self.task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("the watcher did not stop within %.0f s: cancelling its step", STOP_TIMEOUT)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def status(self) -> dict[str, Any]:
        if self.watcher is None:
            return {"running": False}
        out: dict[str, Any] = {"running": self.task is not None and not self.task.done(), "error": self.crashed}
        describe = getattr(self.watcher, "status", None)
        if callable(describe):
            out.update(describe())
        return out
