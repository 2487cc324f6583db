"""The two face passes of a tick, fed straight from the database (no filesystem walk):

1. backfill_unhashed_backlog: rows with no content hash, in id order, at most
   FACE_HASH_BACKFILL_MAX_PER_TICK (imageapi.core.maintenance.backfill_hashes does the work);
2. process_face_backlog: hashed image content that has no detection yet, one detect call per
   distinct hash, at most FACE_BACKLOG_MAX_PER_TICK a tick and FACE_DETECT_CONCURRENCY in flight.

Both backends implement one detect interface (imageapi.core.faces.detectors): the upright JPEG
sent to Apollo is made in the worker pool (never in the event loop), and the embedded detector runs
there too on that same picture; each hash's
faces are stored together with its scan mark in one transaction, so a kill -9 at any moment loses
at most the calls in flight and never stores a hash twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.errors import MediaError, ToolError, UnsupportedMediaError
from imageapi.core.faces.apollo import ApolloClient, ApolloError, Detection
from imageapi.core.faces.cluster import cluster_new_faces
from imageapi.core.faces.detectors import Detector, make_detector
from imageapi.core.faces.people import MeanCache, autobind_photo
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.faces.store import Candidate, insert_detection, list_unscanned_candidates, record_failure
from imageapi.core.maintenance import HashBackfillCounts, Progress, backfill_hashes
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import libraries
from imageapi.core.repositories.leases import Fence

log = logging.getLogger(__name__)

FACES_STAGE = "Detecting faces"  # the progress stage of a drain
DETECT_BOX = 1600           # long edge of the image sent to Apollo
DOWN_AFTER = 3              # connection failures in a row that mean "the service is down"
RENDER_TIMEOUT = 120.0      # per image in the worker pool
READ_WHOLE_MAX = 256 * 1024 * 1024


# -- the worker side ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    """What the worker made of one candidate: the JPEG (or, for the embedded backend, the faces
    found in it), or why not (permanent or not)."""

    jpeg: bytes | None
    width: int = 0
    height: int = 0
    error: str | None = None
    permanent: bool = False
    detection: Detection | None = None

    @property
    def made(self) -> bool:
        return self.jpeg is not None or self.detection is not None


def prepare_for_detection(path: str, kind: str, content_hash: str) -> Prepared:
    """Read the file, check it still has the content it was queued for, render it. Never raises."""
    from imageapi.core.hashing import hash_bytes, hash_file
    from imageapi.core.thumbs import render

    try:
        size = os.stat(path).st_size
        data: bytes | None = None
        if size <= READ_WHOLE_MAX:
            with open(path, "rb") as f:
                data = f.read()
        actual = hash_bytes(data) if data is not None else hash_file(path)
        if actual != content_hash:
            return Prepared(None, error=f"{path} changed since it was hashed (the next scan rehashes it)")
        rendered = render(Path(path), kind, DETECT_BOX, data=data)
    except UnsupportedMediaError as exc:
        return Prepared(None, error=exc.message, permanent=True)
    except (MediaError, ToolError) as exc:
        return Prepared(None, error=exc.message)
    except OSError as exc:
        return Prepared(None, error=f"cannot read {path}: {exc.strerror or exc}")
    except MemoryError:
        return Prepared(None, error="out of memory while rendering")
    except Exception as exc:  # a decoder bug costs this file a retry later, not the tick
        return Prepared(None, error=f"{type(exc).__name__}: {exc}")
    return Prepared(rendered.jpeg, rendered.width, rendered.height)


def prepare_batch(items: list[tuple[str, str, str]]) -> list[Prepared]:
    return [prepare_for_detection(*item) for item in items]


# -- the passes -----------------------------------------------------------------------------------

async def backfill_unhashed_backlog(db: Connection, pool: WorkerPool, settings: FaceSettings,
                                    progress: Progress | None = None) -> HashBackfillCounts:
    """Pass 1: hash rows that have none, in id order, at most FACE_HASH_BACKFILL_MAX_PER_TICK."""
    return await backfill_hashes(db, pool, settings.hash_backfill_max_per_tick, progress)


@dataclass
class ServiceState:
    """Whether Apollo answered lately; kept across ticks so a down service costs one health probe
    per tick instead of failing candidates. Not yet known (`checked` False): the first tick probes
    too, so a service still starting when imageapi starts does not fail a batch of photos."""

    down: bool = False
    reason: str | None = None
    checked: bool = False


@dataclass
class FaceTickReport:
    candidates: int = 0
    sent: int = 0
    detected: int = 0            # hashes stored with their faces (zero faces included)
    faces_found: int = 0
    bound: int = 0
    transient_failures: int = 0
    permanent_failures: int = 0
    not_sent: int = 0            # candidates left for a later tick because the service is down
    service_down: bool = False
    down_reason: str | None = None
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (hash, reason), a sample

    def add(self, other: FaceTickReport) -> None:
        for name in ("candidates", "sent", "detected", "faces_found", "bound", "transient_failures",
                     "permanent_failures", "not_sent", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.service_down, self.down_reason = other.service_down, other.down_reason
        self.errors = (self.errors + other.errors)[-20:]


async def process_face_backlog(
    db: Connection,
    pool: WorkerPool,
    client: ApolloClient | Detector,
    settings: FaceSettings,
    *,
    library_ids: list[int] | None = None,
    limit: int | None = None,
    state: ServiceState | None = None,
    now: datetime | None = None,
    on_done: Callable[[int], None] | None = None,
) -> FaceTickReport:
    """Pass 2: detect faces in at most FACE_BACKLOG_MAX_PER_TICK (or `limit`, if smaller) distinct
    unscanned hashes, FACE_DETECT_CONCURRENCY calls in flight. `on_done(n)` after each candidate."""
    return await _Tick(db, pool, make_detector(settings, client), settings, state or ServiceState(), on_done).run(
        library_ids, limit, now)


async def detect_candidates(
    db: Connection,
    pool: WorkerPool,
    client: ApolloClient | Detector,
    settings: FaceSettings,
    candidates: list[Candidate],
    fence: Fence,
    *,
    state: ServiceState | None = None,
    on_done: Callable[[int], None] | None = None,
) -> FaceTickReport:
    """Pass 2 over candidates claimed with leases (imageapi.core.repositories.leases): each result (faces or a
    failure) is stored only while the lease on its hash is still held, else dropped."""
    tick = _Tick(db, pool, make_detector(settings, client), settings, state or ServiceState(), on_done, fence)
    started = time.monotonic()
    try:
        await tick.work(candidates)
    finally:
        tick.report.seconds = time.monotonic() - started
    return tick.report


class _Tick:
    def __init__(self, db: Connection, pool: WorkerPool, client: Detector, settings: FaceSettings,
                 state: ServiceState, on_done: Callable[[int], None] | None, fence: Fence | None = None) -> None:
        self.db, self.pool, self.client, self.settings, self.state = db, pool, client, settings, state
        self.on_done = on_done
        self.fence = fence
        self.report = FaceTickReport()
        self.means = MeanCache(db)
        self.connection_failures = 0       # in a row
        self.stopped = False
        self.finished = 0
        self.stored: list[str] = []        # content hashes whose faces this tick stored

    async def run(self, library_ids: list[int] | None, limit: int | None, now: datetime | None) -> FaceTickReport:
        started = time.monotonic()
        try:
            await self._run(library_ids, limit, now)
        finally:
            self.report.seconds = time.monotonic() - started
        return self.report

    async def _run(self, library_ids: list[int] | None, limit: int | None, now: datetime | None) -> None:
        cap = self.settings.backlog_max_per_tick if limit is None else min(limit, self.settings.backlog_max_per_tick)
        await self.work(await self._candidates(library_ids, cap, now))

    async def work(self, candidates: list[Candidate]) -> None:
        self.report.candidates = len(candidates)
        if not candidates:
            return
        if (self.state.down or not self.state.checked) and not await self._service_back():
            self._stop(self.state.reason or "unreachable")
            self.report.not_sent = len(candidates)
            return
        sem = asyncio.Semaphore(self.settings.detect_concurrency)
        tasks: set[asyncio.Task[None]] = set()
        batches = [[(c.path, c.kind, c.content_hash)] for c in candidates]
        by_hash = {c.content_hash: c for c in candidates}
        try:
            prepared = self.pool.map_batches(self.client.worker_fn, batches, item_timeout=RENDER_TIMEOUT)
            try:
                async for batch, results, failure in prepared:
                    cand = by_hash[batch[0][2]]
                    prep = results[0] if results else Prepared(None, error=failure or "the worker failed")
                    if not prep.made:
                        await self._failed(cand, prep.error or "no image", permanent=prep.permanent)
                        continue
                    await sem.acquire()  # back-pressure: no more JPEGs made than can be sent
                    if self.stopped:
                        sem.release()
                        break  # the service is down: render nothing more
                    task = asyncio.create_task(self._send(cand, prep, sem))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                # Leaving early (service down, cancelled): stop the generator's pool work now.
                aclose = getattr(prepared, "aclose", None)
                if aclose is not None:
                    await aclose()
            if tasks:
                await asyncio.gather(*list(tasks))
            # The batch's new faces join persons (or start unnamed ones): imageapi.core.faces.cluster.
            self.report.bound += (await cluster_new_faces(self.db, self.settings, self.stored)).bound
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
            # What was neither stored nor recorded as failed waits for a later tick.
            self.report.not_sent = self.report.candidates - self.finished

    async def _candidates(self, library_ids: list[int] | None, cap: int, now: datetime | None) -> list[Candidate]:
        if library_ids is None:
            library_ids = await libraries.all_ids(self.db)
        out: list[Candidate] = []
        seen: set[str] = set()
        for lib_id in library_ids:
            if len(out) >= cap:
                break
            # Ask for a little more than needed: content shared with an earlier library is skipped.
            for c in await list_unscanned_candidates(self.db, lib_id, cap - len(out) + len(seen), now):
                if c.content_hash not in seen and len(out) < cap:
                    seen.add(c.content_hash)
                    out.append(c)
        return out

    async def _service_back(self) -> bool:
        was_down = self.state.down
        self.state.checked = True
        try:
            await self.client.health()
        except ApolloError as exc:
            self.state.reason = exc.message
            return False
        self.state.down, self.state.reason = False, None
        if was_down:
            log.info("%s answers again", self.client.description)
        return True

    def _stop(self, reason: str) -> None:
        if not self.stopped:  # said once per tick
            self.stopped = True
            self.state.down, self.state.reason = True, reason
            self.report.service_down, self.report.down_reason = True, reason
            log.warning("%s is unreachable (%s): no more detect calls this tick", self.client.description, reason)

    async def _send(self, cand: Candidate, prep: Prepared, sem: asyncio.Semaphore) -> None:
        try:
            if self.stopped:
                return
            self.report.sent += 1
            try:
                detection = await self.client.detect(prep, cand.content_hash)
            except ApolloError as exc:
                if exc.connection:
                    self.connection_failures += 1
                    if self.connection_failures >= DOWN_AFTER:
                        self._stop(exc.message)
                else:
                    self.connection_failures = 0
                await self._failed(cand, exc.message, permanent=exc.permanent)
                return
            self.connection_failures = 0
            async with transaction(self.db):
                if not await self._holds(cand):
                    self._finished()
                    return
                stored = await insert_detection(self.db, cand.content_hash, detection, utcnow())
                bound = await autobind_photo(self.db, cand.content_hash, self.settings.autobind_min_cos,
                                             self.means) if stored else []
            if stored:
                self.stored.append(cand.content_hash)
                self.report.detected += 1
                self.report.faces_found += len(detection.faces)
                self.report.bound += len(bound)
            self._finished()
        finally:
            sem.release()

    async def _holds(self, cand: Candidate) -> bool:
        """Inside the result's transaction: whether this worker may still write it (always, unless
        it works under leases and lost this one)."""
        return self.fence is None or await self.fence.hold(self.db, cand.content_hash)

    async def _failed(self, cand: Candidate, error: str, *, permanent: bool) -> None:
        async with transaction(self.db):
            if not await self._holds(cand):
                self._finished()
                return
            await record_failure(self.db, cand.content_hash, error, permanent=permanent)
        if permanent:
            self.report.permanent_failures += 1
        else:
            self.report.transient_failures += 1
        if len(self.report.errors) < 20:
            self.report.errors.append((cand.content_hash, error))
        self._finished()

    def _finished(self) -> None:
        self.finished += 1
        if self.on_done is not None:
            self.on_done(self.finished)


# -- ticks: both passes, as the watcher and `imageapi faces drain` run them ----------------------------

@dataclass
class PassesReport:
    """One tick of both passes."""

    hashing: HashBackfillCounts
    faces: FaceTickReport
    swept_bound: int = 0     # faces bound by the tag sweep (tags added after detection)

    @property
    def did_something(self) -> bool:
        return bool(self.hashing.hashed or self.faces.candidates)


class FacePasses:
    """The face passes with what they keep between ticks: the detector (for Apollo, its
    connection pool) and whether the service was down at the last tick."""

    def __init__(self, db: Connection, pool: WorkerPool, settings: FaceSettings,
                 client: ApolloClient | Detector | None = None) -> None:
        if not settings.enabled and client is None:
            raise ValueError("FacePasses needs faces enabled")
        self.db, self.pool, self.settings = db, pool, settings
        self.client: Detector = make_detector(settings, client)
        self.state = ServiceState()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> FacePasses:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def check_reachable(self) -> None:
        """Raise ApolloError when the service cannot be reached at all (any HTTP answer will do)."""
        self.state.checked = True
        try:
            await self.client.health()
        except ApolloError as exc:
            self.state.down, self.state.reason = True, exc.message
            raise
        self.state.down, self.state.reason = False, None

    async def tick(self, *, library_ids: list[int] | None = None, limit: int | None = None,
                   on_done: Callable[[int], None] | None = None, sweep: str | None = "incremental",
                   hash_progress: Progress | None = None) -> PassesReport:
        """Pass 1, pass 2, then the autobind sweep ('incremental', 'full' or None)."""
        from imageapi.core.faces.people import MeanCache, autobind_sweep

        hashing = await backfill_unhashed_backlog(self.db, self.pool, self.settings, hash_progress)
        faces = await process_face_backlog(self.db, self.pool, self.client, self.settings,
                                           library_ids=library_ids, limit=limit, state=self.state,
                                           on_done=on_done)
        swept = 0
        if sweep is not None:
            swept = await autobind_sweep(self.db, self.settings.autobind_min_cos,
                                         incremental=sweep == "incremental", means=MeanCache(self.db))
        return PassesReport(hashing, faces, swept)


@dataclass
class DrainReport:
    hashed: int = 0
    hash_failures: int = 0
    detected: int = 0
    faces_found: int = 0
    bound: int = 0
    transient_failures: int = 0
    permanent_failures: int = 0
    remaining: int = 0        # not yet scanned: due, backing off, or not hashed yet
    backing_off: int = 0
    ticks: int = 0
    service_down: bool = False
    down_reason: str | None = None
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)


async def drain(passes: FacePasses, *, library_ids: list[int] | None = None, max_items: int | None = None,
                progress: Progress | None = None) -> DrainReport:
    """Run ticks until no candidate is left (or `max_items` candidates are done), then sweep every
    tagged photo for autobind. Raises ApolloError up front when the service cannot be reached."""
    from imageapi.core.faces.people import MeanCache, autobind_sweep
    from imageapi.core.faces.store import count_pending, count_unhashed_images, face_status

    started = time.monotonic()
    await passes.check_reachable()
    db = passes.db

    async def backlog_size() -> int:
        if library_ids is None:
            return await count_pending(db) + await count_unhashed_images(db)
        return sum([await count_pending(db, i) + await count_unhashed_images(db, i) for i in library_ids])

    total = await backlog_size()
    if max_items is not None:
        total = min(total, max_items)
    report = DrainReport()
    done = 0

    def hash_progress(stage: str, n: int, of: int | None) -> None:
        if progress and of:  # no "Hashing 0/0" bar when everything has its hash
            progress(stage, n, of)
    if progress:
        progress(FACES_STAGE, 0, total)
    while max_items is None or done < max_items:
        base = done

        def on_done(n: int, base: int = base) -> None:
            if progress:
                progress(FACES_STAGE, base + n, max(total, base + n))

        tick = await passes.tick(library_ids=library_ids, on_done=on_done, sweep=None, hash_progress=hash_progress,
                                 limit=None if max_items is None else max_items - done)
        report.ticks += 1
        f = tick.faces
        report.hashed += tick.hashing.hashed
        report.hash_failures += tick.hashing.failed
        report.detected += f.detected
        report.faces_found += f.faces_found
        report.bound += f.bound
        report.transient_failures += f.transient_failures
        report.permanent_failures += f.permanent_failures
        report.errors = (report.errors + f.errors)[-20:]
        done += f.candidates - f.not_sent
        if f.service_down:
            report.service_down, report.down_reason = True, f.down_reason
            break
        if not tick.did_something:
            break
    report.bound += await autobind_sweep(db, passes.settings.autobind_min_cos, incremental=False,
                                         means=MeanCache(db))
    status = await face_status(db) if library_ids is None else None
    if status is not None:
        report.backing_off = status.backing_off
        report.remaining = status.pending + status.backing_off + status.unhashed_images
    else:
        for lib_id in library_ids or []:
            st = await face_status(db, lib_id)
            report.backing_off += st.backing_off
            report.remaining += st.pending + st.backing_off + st.unhashed_images
    report.seconds = time.monotonic() - started
    return report
