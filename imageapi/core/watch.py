"""The watcher: the long-running loop of `imageapi watch` (and, later, of `imageapi serve`).

Every WATCH_QUICK_INTERVAL_SECONDS: a quick scan, then both face passes (when faces are enabled),
then the video previews of at most VIDEO_PREVIEWS_MAX_PER_TICK new or changed videos; every
WATCH_FULL_INTERVAL_SECONDS the scan is a full one instead. The face passes work straight
from the database, so a backlog left by a restart drains on every tick whatever the scan saw; while
a backlog remains and Apollo answers, further face-only ticks follow until the next scan is due.
One log line per tick says what it did.

Several watchers may share one database (`imageapi serve` on several hosts): each library's scan
runs under that library's scan lease and the passes under the `drains` lease (imageapi.core.lock),
taken per tick. A library whose lease another run holds is skipped for that tick (said once at info
per holder, and in the tick's `skipped`), as are the passes, so the libraries spread over the hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from imageapi.core import place_fill, search
from imageapi.core.config import Config
from imageapi.core.db import Connection
from imageapi.core.errors import ImageapiError, LeaseHeldError
from imageapi.core.faces.backlog import FacePasses, PassesReport
from imageapi.core.faces.cluster import run_nightly
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.faces.store import count_pending
from imageapi.core.lock import DRAINS, LeaseName, holding, scan_lease
from imageapi.core.places import cache_file
from imageapi.core.pool import WorkerPool
from imageapi.core.previews import PreviewReport, preview_pass
from imageapi.core.scan import ScanCounts, ScanReport, resolve_targets, run_scan

log = logging.getLogger(__name__)
T = TypeVar("T")
PLACES_PER_TICK = 20_000  # rows: about a second of the pool's time


@dataclass
class TickResult:
    number: int
    kind: str                              # quick, full or faces
    line: str                              # what was logged
    scan: ScanCounts | None = None
    reports: list[ScanReport] | None = None  # one per library scanned (failed ones say why)
    faces: PassesReport | None = None
    pending: int | None = None             # face candidates due after the tick
    more_face_work: bool = False           # worth another face-only tick now
    previews: PreviewReport | None = None  # video previews made in the tick
    # Libraries not scanned because another run (another host) held their scan lease: name -> holder.
    skipped: dict[str, LeaseHeldError] | None = None
    drains_busy: LeaseHeldError | None = None  # the passes skipped: another run holds `drains`


class Watcher:
    def __init__(
        self,
        db: Connection,
        config: Config,
        pool: WorkerPool,
        faces: FaceSettings | None = None,
        *,
        library_names: list[str] | None = None,
        passes: FacePasses | None = None,
        clock: Callable[[], float] = time.monotonic,
        job: str = "imageapi watch",
    ) -> None:
        self.db, self.config, self.pool = db, config, pool
        self.job = job
        self.busy_seen: dict[str, tuple[str, int]] = {}  # lease name -> holder last logged
        self.library_names = library_names or []
        self.clock = clock
        self.ticks = 0
        self.passes = passes
        if self.passes is None and faces is not None and faces.enabled:
            self.passes = FacePasses(db, pool, faces)
        self.previews_per_tick = config.video.previews_max_per_tick
        self.places_checked = False   # rows of another places dataset made due again (once per run)

    async def aclose(self) -> None:
        if self.passes is not None:
            await self.passes.aclose()

    # -- ticks, callable one by one ---------------------------------------------------------------

    async def scan_tick(self, mode: str) -> TickResult:
        """A quick or full scan of every library (each under its scan lease), then the face passes."""
        self.ticks += 1
        parts: list[str] = []
        counts = None
        reports: list[ScanReport] | None = None
        skipped: dict[str, LeaseHeldError] = {}
        try:
            targets = await resolve_targets(self.db, self.library_names, None)
            # Each library on its own: one that fails (an unmounted share) is reported, one that
            # another run is scanning is skipped, the others are scanned.
            reports = []
            for target in targets:
                lib = target.library
                try:
                    async with self._holding(scan_lease(lib.id, lib.name)):
                        reports.extend(await run_scan(self.db, self.config, [target], mode, self.pool))
                except LeaseHeldError as exc:
                    skipped[lib.name] = exc
                except ImageapiError as exc:  # the lease lost mid-scan (LeaseLostError), the database
                    reports.append(ScanReport(library=lib.name, mode=mode, subtree=target.subtree, failed=exc.message))
            counts = ScanCounts()
            for r in reports:
                counts.add(r.counts)
            seconds = sum(r.seconds for r in reports)
            parts.append(
                f"{mode} scan of {len(reports)} librar{'y' if len(reports) == 1 else 'ies'}: "
                f"{counts.scanned} files, +{counts.added} ~{counts.changed} -{counts.removed} "
                f"moved {counts.moved}, {counts.errors} errors ({seconds:.1f} s)"
            )
            parts.extend(f"library {r.library} failed: {r.failed}" for r in reports if r.failed)
            parts.extend(f"library {name} skipped: busy ({exc.job}, pid {exc.pid} on {exc.host})"
                         for name, exc in skipped.items())
            parts.extend(w for r in reports for w in r.warnings)
            # What the scan changed is indexed for search now, not by the first search after it.
            indexed = await search.refresh(self.db)
            if indexed:
                parts.append(f"search: {indexed} files indexed")
        except ImageapiError as exc:
            parts.append(f"{mode} scan skipped: {exc.message}")
        result = TickResult(self.ticks, mode, "", scan=counts, reports=reports, skipped=skipped)
        await self._places_part(parts)
        await self._drains(result, parts, sweep="full" if mode == "full" else "incremental", videos=True)
        return self._log(result, parts)

    @contextlib.asynccontextmanager
    async def _holding(self, lease: LeaseName) -> AsyncIterator[None]:
        """The lease for the body; LeaseHeldError (said once at info per holder) when another run has it."""
        name, what = lease
        try:
            async with holding(self.config.database, self.job, [lease], lease=self.config.job_lease):
                self.busy_seen.pop(name, None)
                yield
        except LeaseHeldError as exc:
            if self.busy_seen.get(name) != (exc.host, exc.pid):
                self.busy_seen[name] = (exc.host, exc.pid)
                log.info("skipping %s while another run works on it: %s, pid %d on %s", what, exc.job, exc.pid,
                         exc.host)
            raise

    async def _drains(self, result: TickResult, parts: list[str], sweep: str, videos: bool) -> None:
        """The face passes (and the video previews) under the `drains` lease; skipped when another
        run holds it, and not run at all with WATCH_DRAINS=false (workers drain them)."""
        if not self.config.watch_drains:
            parts.append("face passes and video previews left to workers (WATCH_DRAINS=false)")
            return
        if self.passes is None and (not videos or self.previews_per_tick == 0):
            parts.append("faces disabled")
            return
        try:
            async with self._holding(DRAINS):
                await self._face_part(result, parts, sweep=sweep)
                if videos:
                    await self._video_part(result, parts)
        except LeaseHeldError as exc:
            result.drains_busy = exc
            result.more_face_work = False
            parts.append(f"face passes and video previews skipped: busy ({exc.job}, pid {exc.pid} on {exc.host})")
        except ImageapiError as exc:  # the lease lost mid-pass
            result.more_face_work = False
            parts.append(f"face passes and video previews stopped: {exc.message}")

    async def _places_part(self, parts: list[str]) -> None:
        """Places of rows indexed before places existed, at most PLACES_PER_TICK per tick, under
        the `drains` lease (left to workers with WATCH_DRAINS=false). The first pass also makes the
        rows computed with another dataset version due again."""
        if not self.config.watch_drains:
            return
        try:
            async with self._holding(DRAINS):
                rep = await place_fill.backfill(self.db, self.pool, PLACES_PER_TICK,
                                                cache=cache_file(self.config.data_dir),
                                                forget_stale=not self.places_checked)
        except LeaseHeldError:
            return  # the face passes' line says who holds it
        except ImageapiError as exc:
            parts.append(f"places skipped: {exc.message}")
            return
        self.places_checked = True
        if rep.placed or rep.no_place or rep.failed or rep.remaining:
            parts.append(f"places: {rep.placed} placed, {rep.no_place} without a place, {rep.remaining} due")

    async def face_tick(self) -> TickResult:
        """Both face passes alone."""
        self.ticks += 1
        parts: list[str] = []
        result = TickResult(self.ticks, "faces", "")
        await self._drains(result, parts, sweep="incremental", videos=False)
        return self._log(result, parts)

    async def _face_part(self, result: TickResult, parts: list[str], sweep: str) -> None:
        if self.passes is None:
            parts.append("faces disabled")
            return
        try:
            rep = await self.passes.tick(sweep=sweep)
        except ImageapiError as exc:
            parts.append(f"face passes failed: {exc.message}")
            return
        result.faces = rep
        h, f = rep.hashing, rep.faces
        result.pending = await count_pending(self.db)
        parts.append(f"hashed {h.hashed}" + (f" ({h.failed} failed)" if h.failed else "")
                     + f", {h.remaining} unhashed left")
        if f.service_down:
            parts.append(f"faces: Apollo unreachable ({f.down_reason}); {f.not_sent} not sent, "
                         f"{result.pending} pending")
        else:
            parts.append(
                f"faces: {f.candidates} candidates, {f.detected} stored ({f.faces_found} faces), "
                f"{f.bound + rep.swept_bound} bound, {f.transient_failures} transient and "
                f"{f.permanent_failures} permanent failures, {result.pending} pending"
            )
        with contextlib.suppress(ImageapiError):  # a failed pass waits for tomorrow (marked done first)
            clustered = await run_nightly(self.db, self.passes.settings)  # FACE_CLUSTER_HOUR, once a day
            if clustered is not None:
                parts.append(f"nightly clustering: {clustered.bound} bound, {clustered.new_persons} new persons")
        # Another face-only tick is worth it when this one worked and work is left.
        result.more_face_work = (not f.service_down and (result.pending > 0 or h.remaining > 0)
                                 and rep.did_something)

    async def _video_part(self, result: TickResult, parts: list[str]) -> None:
        """Preview clips and GIFs of videos that have none (or a stale one), capped per tick."""
        if self.previews_per_tick == 0:
            return
        try:
            ids = None
            if self.library_names:
                ids = [t.library.id for t in await resolve_targets(self.db, self.library_names, None)]
            rep = await preview_pass(self.db, self.config, max_items=self.previews_per_tick, library_ids=ids)
        except ImageapiError as exc:
            parts.append(f"video previews skipped: {exc.message}")
            return
        result.previews = rep
        if rep.made or rep.failed or rep.remaining:
            parts.append(f"video previews: {rep.made} made, {rep.failed} failed, {rep.remaining} due")

    def _log(self, result: TickResult, parts: list[str]) -> TickResult:
        result.line = f"tick {result.number} ({result.kind}): " + "; ".join(parts)
        log.info("%s", result.line)
        return result

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a tick in progress is cancelled (everything it wrote is
        transactional, so the next run picks up where it stopped)."""
        quick_every, full_every = self.config.watch_quick_interval, self.config.watch_full_interval
        next_full = self.clock() + full_every
        log.info("watching: quick scan every %.0f s, full scan every %.0f s, faces %s",
                 quick_every, full_every, "enabled" if self.passes is not None else "disabled")
        while not stop.is_set():
            started = self.clock()
            mode = "full" if started >= next_full else "quick"
            if mode == "full":
                next_full = started + full_every
            next_quick = started + quick_every
            result = await self._until_stopped(self._guarded(self.scan_tick(mode)), stop)
            while result is not None and result.more_face_work and self.clock() < next_quick:
                result = await self._until_stopped(self._guarded(self.face_tick()), stop)
            delay = max(0.0, next_quick - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        log.info("watcher stopped after %d ticks", self.ticks)

    async def _guarded(self, tick: Awaitable[TickResult]) -> TickResult | None:
        """A tick that fails (database locked, a bug) is logged; the loop goes on."""
        try:
            return await tick
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("tick failed: %s", exc)
            return None

    @staticmethod
    async def _until_stopped(coro: Awaitable[T], stop: asyncio.Event) -> T | None:
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stopper.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
