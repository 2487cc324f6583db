"""The detectors behind `imageapi faces serve`: N worker processes running the embedded detector,
one picture at a time each, with a bounded queue in front of them.

Each worker is a WorkerPool of one process, so a worker that dies (a `kill -9`, a decoder fault)
fails only the request it was running: that pool is reset and warmed again while the others go on.
A request waits for a free worker at most the call timeout, and runs at most what is left of it
(a worker past it is killed and replaced). When `workers * queue_per_worker` requests are already
waiting, the next is refused at once (DetectorBusy, with a Retry-After estimate) instead of piling
up: the client backs off and retries, or goes to another address.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from imageapi.core.errors import ServiceError
from imageapi.core.faces import embedded
from imageapi.core.faces.apollo import Detection
from imageapi.core.faces.serve_settings import ServeSettings
from imageapi.core.pool import WorkerPool

log = logging.getLogger("imageapi.core.faces.faceserve")

MAX_PIXELS = 40_000_000       # larger pictures are refused (415), not decoded

# Picture formats the detector reads (by their first bytes); anything else is refused at once.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


class DetectorBusy(ServiceError):
    """Every worker is taken and the queue is full (or no worker came free in time): try later."""

    code = "busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DetectorFailed(ServiceError):
    """The worker running this request died or ran past the timeout (it was replaced)."""

    code = "detector_failed"

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def looks_like_a_picture(data: bytes) -> bool:
    """By the first bytes: JPEG, PNG, GIF, BMP, TIFF or WebP."""
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _warm() -> int:
    """Load the models and run them once in this worker (so the first request does not pay for
    it); its pid."""
    import os

    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank, "JPEG")
    embedded.detect_jpeg(blank.getvalue())
    return os.getpid()


def _detect(data: bytes) -> Detection:
    from PIL import Image

    from imageapi.core.errors import UnsupportedMediaError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception as exc:  # any failure to read the header: not a picture
        raise UnsupportedMediaError(f"not a picture the face detector can read: {exc}") from None
    if width * height > MAX_PIXELS:
        raise UnsupportedMediaError(f"a picture of {width}x{height} pixels (at most {MAX_PIXELS} are read)")
    return embedded.detect_jpeg(data)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pool = WorkerPool(1)
        self.pid: int | None = None


class FaceDetectors:
    """The worker processes and the queue in front of them (use from one event loop)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.waiting = 0
        self.busy = 0
        self.detected = 0
        self.replaced = 0
        self.ready = 0
        self._seconds = 1.0  # running mean of one detection, for Retry-After

    async def start(self) -> None:
        """Start and warm every worker (they come free as they are ready)."""
        await asyncio.gather(*(self._warm(slot) for slot in self._slots))

    async def _warm(self, slot: _Slot) -> None:
        try:
            slot.pid = await asyncio.wait_for(slot.pool.run(_warm), self.settings.timeout + 60)
        except (BrokenProcessPool, TimeoutError, OSError) as exc:
            log.warning("face worker %d did not start (%s): retrying", slot.index, type(exc).__name__)
            slot.pool.reset()
            await asyncio.sleep(1.0)
            self._spawn(self._warm(slot))
            return
        self.ready += 1
        self._idle.put_nowait(slot)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_after(self) -> int:
        """Seconds until the queue has probably moved on: what is waiting, over the workers."""
        rounds = (self.waiting + self.busy) / max(1, len(self._slots))
        return max(1, math.ceil(rounds * self._seconds))

    async def detect(self, data: bytes) -> Detection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        if self._idle.empty() and self.waiting >= self.settings.queue_limit:
            raise DetectorBusy(f"all {len(self._slots)} face workers are busy and {self.waiting} requests "
                               "wait: try again later", self.retry_after())
        self.waiting += 1
        try:
            async with asyncio.timeout(self.settings.timeout):
                slot = await self._idle.get()
        except TimeoutError:
            raise DetectorBusy(f"no face worker came free within {self.settings.timeout:g} s",
                               self.retry_after()) from None
        finally:
            self.waiting -= 1
        self.busy += 1
        started = time.monotonic()
        healthy = False
        try:
            result = await asyncio.wait_for(slot.pool.run(_detect, data), max(0.0, deadline - loop.time()))
            healthy = True
            self.detected += 1
            self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - started)
            return result
        except BrokenProcessPool:
            raise DetectorFailed("the face worker process died while detecting: it was replaced") from None
        except TimeoutError:
            raise DetectorFailed(f"detection took longer than {self.settings.timeout:g} s: the worker was "
                                 "replaced", timed_out=True) from None
        except Exception:
            healthy = True  # an answer from the worker (a picture it cannot read): the worker is fine
            raise
        finally:
            self.busy -= 1
            if healthy:
                self._idle.put_nowait(slot)
            else:
                self._replace(slot)

    def _replace(self, slot: _Slot) -> None:
        log.warning("face worker %d (pid %s) died or hung: replacing it", slot.index, slot.pid)
        self.replaced += 1
        self.ready -= 1
        slot.pid = None
        slot.pool.reset()
        self._spawn(self._warm(slot))

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ready else "starting",
            "model": embedded.MODEL,
            "workers": len(self._slots),
            "ready": self.ready,
            "busy": self.busy,
            "queue": self.waiting,
            "queue_limit": self.settings.queue_limit,
            "detected": self.detected,
            "replaced": self.replaced,
            "pids": [s.pid for s in self._slots if s.pid is not None],
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self._slots:
            slot.pool.reset()  # kill: a request still running is not waited for
