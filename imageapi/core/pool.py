"""A pool of worker processes for CPU- and disk-heavy work (decode, hash, resize, ffmpeg).

The event loop only submits batches and collects results, so a server using the same core is never
blocked by the work. A worker that crashes (a decoder fault on a crafted file) or hangs costs one
file, not the run: the batches that were in flight are retried one file at a time, serially, so the
file that kills a worker is the one recorded as failed.

No worker outlives the process that owns the pool, even a `kill -9` of it: each worker watches a
lifeline pipe from the owner and, on Linux, is killed by the kernel when the fork server dies, which
in turn dies with the owner when the owner's main thread started it (`imageapi.core.lifeline`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from imageapi.core import lifeline

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_ITEM_TIMEOUT = 600.0

# Imported once in the fork server, so each new worker starts with them (about 65 ms each, and
# numpy's 100 ms for the perceptual hashes and the places).
PRELOAD = ["imageapi.core.worker", "imageapi.core.exif", "imageapi.core.thumbs", "imageapi.core.phash",
           "imageapi.core.places"]

# Settings that worker processes read from the environment: passed to each worker as the parent
# has them when the pool starts, since the fork server (started once per process) may be older.
WORKER_ENV = ("IMAGEAPI_FFMPEG", "IMAGEAPI_FFPROBE")


def _init_worker(nice: int, owner: Connection | None = None, env: dict[str, str | None] | None = None) -> None:
    # The fork server (this worker's parent) forked it from its only thread.
    lifeline.die_with_parent()
    if owner is not None:
        lifeline.watch(owner)
    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    # Workers yield the CPU to the parent (the server's event loop, the database writer).
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass


def _start_forkserver(ctx: Any) -> None:
    """Start the fork server (one per process, shared by every pool) now, from this thread, unless
    it runs. Only when this is the main thread does it get the kernel's parent-death signal: the
    kernel sends that when the starting *thread* ends, which for another thread can be long before
    the process does."""
    on_main = threading.current_thread() is threading.main_thread()
    ctx.set_forkserver_preload(PRELOAD + (["imageapi.core.forkserver_hook"] if on_main else []))
    forkserver.ensure_running()


class WorkerPool:
    def __init__(self, workers: int, *, nice: int = 0) -> None:
        self.workers = max(1, workers)
        self.nice = nice
        # forkserver, not fork: forking a process that runs aiosqlite's thread can copy held locks.
        self._ctx = multiprocessing.get_context("forkserver")
        self._executor: ProcessPoolExecutor | None = None

    @property
    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            _start_forkserver(self._ctx)
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=self._ctx, initializer=_init_worker,
                initargs=(self.nice, lifeline.lifeline().reader,
                          {name: os.environ.get(name) for name in WORKER_ENV}),
            )
        return self._executor

    def reset(self) -> None:
        """Kill the worker processes (a crashed or hung one among them); the next call starts
        fresh ones. Work in flight fails with BrokenProcessPool."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        for proc in list(getattr(executor, "_processes", {}).values()):
            try:
                proc.kill()
            except Exception:
                pass
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """One call in a worker process."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def map_batches(
        self,
        fn: Callable[[list[T]], list[R]],
        batches: Iterable[list[T]],
        *,
        item_timeout: float = DEFAULT_ITEM_TIMEOUT,
        in_flight: int | None = None,
    ) -> AsyncIterator[tuple[list[T], list[R] | None, str | None]]:
        """Run fn over batches; yield (batch, results, None) or (batch, None, reason) for a batch
        that could not be run (a single item that crashed or hung its worker)."""
        loop = asyncio.get_running_loop()
        limit = in_flight or self.workers * 2
        source = iter(batches)
        retry: deque[list[T]] = deque()
        running: dict[asyncio.Future[list[R]], tuple[list[T], float, bool]] = {}
        exhausted = False
        while True:
            isolating = bool(retry) or any(isolated for _, _, isolated in running.values())
            while len(running) < (1 if isolating else limit):
                if retry:
                    batch, isolated = retry.popleft(), True
                elif not exhausted and not isolating:
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    batch, isolated = nxt, False
                else:
                    break
                fut = loop.run_in_executor(self.executor, fn, batch)
                running[fut] = (batch, loop.time(), isolated)
            if not running:
                if retry:
                    continue
                return
            done, _ = await asyncio.wait(running, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            broken = False
            for fut in done:
                batch, _, isolated = running.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    broken = True
                    if isolated:
                        yield batch, None, "the worker process died while reading this file"
                    else:
                        retry.extend([item] for item in batch)
                    continue
                except Exception as exc:
                    yield batch, None, f"{type(exc).__name__}: {exc}"
                    continue
                yield batch, results, None
            now = loop.time()
            overdue = [f for f, (b, t, _) in running.items() if now - t > item_timeout * len(b) * 2]
            if overdue:
                for fut in overdue:
                    batch, _, isolated = running.pop(fut)
                    if isolated:
                        yield batch, None, f"timed out after {item_timeout:.0f} s"
                    else:
                        retry.extend([item] for item in batch)
                broken = True
            if broken:
                # Every batch still in the dead pool is retried alone.
                for fut, (batch, _, _) in list(running.items()):
                    fut.cancel()
                    retry.extend([item] for item in batch)
                running.clear()
                self.reset()
