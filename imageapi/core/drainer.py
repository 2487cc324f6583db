"""`imageapi worker`: drain the backlogs (thumbnails, hashes, face scans, previews, places) from any host
that sees the libraries and the database, beside other workers, under leases (imageapi.core.repositories.leases).

Each round claims a batch of one kind, runs it through the same code as the one-shot commands and
the watcher (maintenance.make_thumbnails, maintenance.hash_rows, faces.backlog.detect_candidates,
previews.make_due) with the claim's Fence guarding every result write, then gives back the leases
of whatever it did not finish. Leases are renewed in the background while the worker lives.

What is guaranteed: every item's result is written at most once, by a worker holding its lease,
and a worker that lost its lease (killed, paused, cut off longer than WORKER_LEASE_SECONDS) writes
nothing for it. The work itself (a thumbnail made, a detect call sent) is repeated only for items
that a worker held when it died or lost its lease and had not yet recorded: at most the batch it
had claimed, and for faces at most the detect calls it had in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageapi.core import duplicates, hls
from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection, DriverError, database_error
from imageapi.core.errors import ImageapiError, UsageError
from imageapi.core.faces.apollo import ApolloClient
from imageapi.core.faces.backlog import ServiceState, detect_candidates
from imageapi.core.faces.cluster import run_nightly
from imageapi.core.faces.detectors import Detector, make_detector
from imageapi.core.faces.store import DETECT_KINDS, Candidate, now_utc, stamp
from imageapi.core.libraries import Library, resolve_in_library, thumbnail_path
from imageapi.core.maintenance import ThumbCounts, hash_rows, make_thumbnails
from imageapi.core.names import safe_text
from imageapi.core.place_fill import PlaceCounts, fill_rows
from imageapi.core.places import cache_file
from imageapi.core.pool import WorkerPool
from imageapi.core.previews import Candidate as PreviewCandidate
from imageapi.core.previews import PreviewReport, make_due
from imageapi.core.repositories import leases
from imageapi.core.repositories import places as places_repo
from imageapi.core.repositories import work as work_repo
from imageapi.core.store import abs_path
from imageapi.core.worker import ThumbTask

log = logging.getLogger(__name__)

KINDS = ("thumbs", "hash", "phash", "faces", "previews", "hls", "places")
# What each kind counts as it works (the summary shows every one, zeros included).
DETAIL = {
    "thumbs": ("made", "unsupported", "failed"),
    "hash": ("hashed", "failed"),
    "phash": ("hashed", "failed"),
    "faces": ("detected", "faces_found", "bound", "transient_failures", "permanent_failures", "nightly_clustering"),
    "previews": ("made", "failed"),
    "hls": ("made", "cached", "failed"),
    "places": ("placed", "no_place", "failed"),
}
PLACES_CLAIM = 512       # a place costs microseconds: claims of a few rows would be all overhead
IDLE_POLL = 2.0          # seconds between looks at an empty backlog
NIGHTLY_POLL = 60.0      # seconds between looks at whether the nightly face clustering is due
Progress = Callable[[str, int, int | None], None]


def parse_kinds(raw: str | None, faces_enabled: bool, faces_off: str | None = None) -> tuple[str, ...]:
    """`--kinds thumbs,hash,...`; by default every kind (faces only when enabled) but hls: playlists
    made ahead of time take disk space for every video, so they are asked for, as with
    `imageapi video hls`."""
    if raw is None:
        return tuple(k for k in KINDS if k != "hls" and (k != "faces" or faces_enabled))
    kinds = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise UsageError(f"--kinds: unknown kind {unknown[0] if unknown else raw!r} (kinds: {', '.join(KINDS)})")
    if "faces" in kinds and not faces_enabled:
        raise UsageError("--kinds faces: " + (faces_off or "face detection is disabled: set APOLLO_FACE_API_BASE_URL "
                                              "(or APOLLO_API_BASE_URL) to Apollo's address"))
    return kinds


def backlog(kind: str, db: Connection) -> leases.Backlog:
    """Which rows are due, per kind: the same rules as the one-shot commands (a pending thumbnail;
    no hash and no failed hashing yet; hashed image content with no face scan and no failure
    waiting; previews missing or stale)."""
    if kind not in KINDS:
        raise ValueError(kind)
    where = work_repo.due_where(db, kind, DETECT_KINDS)
    if kind == "faces":
        return leases.Backlog(kind, where, (stamp(now_utc()),), key="f.content_hash", locks_files=False)
    if kind == "phash":  # perceptual hashes are kept per content, as faces
        return leases.Backlog(kind, where, key="f.content_hash", locks_files=False)
    return leases.Backlog(kind, where)


@dataclass
class KindReport:
    claimed: int = 0
    done: int = 0            # results written under their lease (failures recorded on the row included)
    dropped: int = 0         # results not written: the lease had been lost to another worker
    detail: dict[str, int] = field(default_factory=dict)   # made, failed, detected, ... as worked


@dataclass
class WorkerReport:
    holder: str
    kinds: dict[str, KindReport]
    remaining: dict[str, int] = field(default_factory=dict)
    service_down: str | None = None
    stopped: bool = False         # by a signal, before the backlog was empty
    seconds: float = 0.0


class Drainer:
    def __init__(self, db: Connection, pool: WorkerPool, config: Config, kinds: Sequence[str], *,
                 library_ids: Sequence[int] | None = None, batch: int | None = None,
                 progress: Progress | None = None, client: ApolloClient | Detector | None = None) -> None:
        self.db, self.pool, self.config = db, pool, config
        self.kinds = tuple(kinds)
        self.library_ids = list(library_ids) if library_ids else None
        self.lease_seconds = config.worker.lease_seconds
        self.batch = batch or max(4, pool.workers * 4)
        self.progress = progress
        self.holder = leases.new_holder()
        self.report = WorkerReport(self.holder, {
            k: KindReport(detail=dict.fromkeys(DETAIL[k], 0)) for k in self.kinds})
        self.totals: dict[str, int] = {}
        self.client: Detector | None = None
        if "faces" in self.kinds and (client is not None or config.faces.enabled):
            self.client = make_detector(config.faces, client)
        self.face_state = ServiceState()
        # HLS playlists ahead of time, as `imageapi video hls` makes them (H.264 for every client).
        self.hls = hls.HlsManager(config, transcodes=config.video.max_transcodes) if "hls" in self.kinds else None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.hls is not None:
            await self.hls.aclose()

    def local_root(self, lib: Library) -> Path:
        return self.config.worker.local_root(lib.name, lib.root)

    async def run(self, stop: asyncio.Event, *, until_empty: bool = False) -> WorkerReport:
        """Claim and work until `stop` is set, or with `until_empty` until no item of the kinds is
        due any more (items others hold are waited for: they come back if their holder dies)."""
        started = time.monotonic()
        renewer = asyncio.create_task(self._renew_until(stop))
        try:
            for kind in self.kinds:
                self.totals[kind] = await leases.backlog_left(self.db, backlog(kind, self.db), self.library_ids)
                self._show(kind)
            nightly_at = 0.0
            while not stop.is_set():
                worked = False
                for kind in self.kinds:
                    if stop.is_set():
                        break
                    worked = await self._round_or_stop(kind, stop) or worked
                if "faces" in self.kinds and time.monotonic() >= nightly_at and not stop.is_set():
                    nightly_at = time.monotonic() + NIGHTLY_POLL
                    await self._until_stop(self._nightly(), stop)
                if self.report.service_down and until_empty:
                    break
                if not worked:
                    if until_empty and await self._all_done():
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), IDLE_POLL)
            self.report.stopped = stop.is_set()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await leases.release_all(self.db, self.holder)
            for kind in self.kinds:
                self.report.remaining[kind] = await leases.backlog_left(
                    self.db, backlog(kind, self.db), self.library_ids)
            self.report.seconds = time.monotonic() - started
        return self.report

    async def _all_done(self) -> bool:
        for kind in self.kinds:
            if kind == "faces" and self.report.service_down:
                continue
            if await leases.backlog_left(self.db, backlog(kind, self.db), self.library_ids):
                return False
        return True

    async def _renew_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_seconds / 3)
            try:
                await leases.renew(self.db, self.holder, self.lease_seconds)
            except Exception as exc:  # a busy database: the next renewal, well before the expiry
                log.warning("could not renew the leases of %s: %s", self.holder, exc)

    def _show(self, kind: str) -> None:
        if self.progress is not None:
            r = self.report.kinds[kind]
            n = r.done
            self.progress(kind, n, max(self.totals.get(kind, 0), n))

    async def _round_or_stop(self, kind: str, stop: asyncio.Event) -> bool:
        """One round, cancelled when `stop` is set meanwhile (its leases are then given back)."""
        return await self._until_stop(self._round(kind), stop) or False

    async def _nightly(self) -> bool:
        """The day's full face clustering when it is due and no other process (the watcher, another
        worker) has claimed it: without a watcher (WATCH_DRAINS=false, or workers only) nothing
        else would run it. A failed pass waits for the next day, as in the watcher."""
        try:
            report = await run_nightly(self.db, self.config.faces)
        except ImageapiError as exc:
            log.warning("nightly face clustering failed: %s", exc)
            return False
        if report is not None:
            self._detail("faces", nightly_clustering=1)
        return report is not None

    async def _until_stop(self, coro: Coroutine[Any, Any, bool], stop: asyncio.Event) -> bool | None:
        """`coro`'s result, or None when `stop` was set first (it is then cancelled)."""
        work = asyncio.create_task(coro)
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        return work.result() if not work.cancelled() else None

    async def _round(self, kind: str) -> bool:
        """Claim one batch of `kind` and work it; False when nothing could be claimed."""
        if kind == "faces" and self.face_state.down and not await self._apollo_back():
            return False
        # A batch is what keeps this worker busy for a while: more would only wait, leased.
        size = {"faces": self.config.faces.detect_concurrency * 4, "previews": self.pool.workers,
                "hls": self.config.video.max_transcodes, "places": PLACES_CLAIM}.get(kind, self.batch)
        try:
            claimed = await leases.claim(self.db, backlog(kind, self.db), self.holder, size, self.lease_seconds,
                                         library_ids=self.library_ids)
        except DriverError as exc:
            if database_error(exc) is not None:
                raise  # a full disk, a damaged file: the command's error
            # A deadlock detected by PostgreSQL (a claim and another worker's renewal), a busy
            # SQLite: nothing was claimed, the next round tries again.
            log.warning("claiming %s failed, trying again: %s", kind, exc)
            return False
        if not claimed:
            return False
        report = self.report.kinds[kind]
        report.claimed += len(claimed)
        fence = leases.Fence(kind, self.holder, locks_files=kind not in ("faces", "phash"))  # keyed on content
        fence.add(claimed)
        try:
            work = {"thumbs": self._thumbs, "hash": self._hash, "phash": self._phash, "faces": self._faces,
                    "previews": self._previews, "hls": self._hls, "places": self._places}[kind]
            await work([c.file_id for c in claimed], fence)
        finally:
            # Whatever was not finished (stopped, the service went down) is due again at once.
            await fence.release_rest(self.db)
            report.done += fence.kept
            report.dropped += fence.dropped
            self._show(kind)
        return True

    def _detail(self, kind: str, **counts: int) -> None:
        detail = self.report.kinds[kind].detail
        for name, n in counts.items():
            detail[name] = detail.get(name, 0) + n

    async def _rows(self, kind: str, ids: list[int]) -> list[tuple]:
        return await work_repo.rows(self.db, kind, ids, DETECT_KINDS)

    async def _thumbs(self, ids: list[int], fence: leases.Fence) -> None:
        rows = await self._rows("thumbs", ids)
        tasks = [ThumbTask(row_id, abs_path(self.config.worker.local_root(name, root), rel), kind,
                           str(thumbnail_path(self.config, name, rel)), self.config.thumb_size, duration)
                 for row_id, name, root, rel, kind, duration in rows]
        counts = ThumbCounts()
        await make_thumbnails(self.db, self.pool, tasks, counts, None, fence)
        self._detail("thumbs", made=counts.made, unsupported=counts.unsupported, failed=counts.failed)

    async def _hash(self, ids: list[int], fence: leases.Fence) -> None:
        rows = await self._rows("hash", ids)
        counts = await hash_rows(self.db, self.pool, [
            (row_id, abs_path(self.config.worker.local_root(name, root), rel)) for row_id, name, root, rel in rows
        ], None, fence)
        self._detail("hash", hashed=counts.hashed, failed=counts.failed)

    async def _phash(self, ids: list[int], fence: leases.Fence) -> None:
        rows = await duplicates.due_rows_of(self.db, ids)
        counts = await duplicates.hash_rows(self.db, self.config, self.pool, rows, None, fence)
        self._detail("phash", hashed=counts.hashed, failed=counts.failed)

    async def _faces(self, ids: list[int], fence: leases.Fence) -> None:
        assert self.client is not None
        rows = await self._rows("faces", ids)
        candidates = [Candidate(row_id, lib_id, content_hash, kind,
                                abs_path(self.config.worker.local_root(name, root), rel))
                      for row_id, lib_id, content_hash, kind, rel, name, root in rows]
        tick = await detect_candidates(self.db, self.pool, self.client, self.config.faces, candidates, fence,
                                       state=self.face_state)
        self._detail("faces", detected=tick.detected, faces_found=tick.faces_found, bound=tick.bound,
                     transient_failures=tick.transient_failures, permanent_failures=tick.permanent_failures)
        if tick.service_down:
            self.report.service_down = tick.down_reason or "unreachable"

    async def _places(self, ids: list[int], fence: leases.Fence) -> None:
        counts = PlaceCounts()
        await fill_rows(self.db, self.pool, await places_repo.rows(self.db, ids), counts,
                        cache_file(self.config.data_dir), fence)
        self._detail("places", placed=counts.placed, no_place=counts.no_place, failed=counts.failed)

    async def _apollo_back(self) -> bool:
        assert self.client is not None
        from imageapi.core.faces.apollo import ApolloError

        try:
            await self.client.health()
        except ApolloError as exc:
            self.report.service_down = exc.message
            return False
        self.face_state.down, self.face_state.reason, self.report.service_down = False, None, None
        return True

    async def _hls(self, ids: list[int], fence: leases.Fence) -> None:
        """Each claimed video's playlist made (or found made) for the row's version, and the outcome
        recorded on the row while the lease is held; a failure is not tried again until the file
        changes (or `imageapi video hls --retry-failed`), as with previews."""
        assert self.hls is not None
        manager = self.hls

        async def one(row_id: int, rel: str, size: int, mtime_ns: int, lib_id: int, name: str, root: str) -> None:
            key = hls.version_key(size, mtime_ns)  # the row's version
            lib = Library(lib_id, name, Path(self.config.worker.local_root(name, root)))
            error: ImageapiError | None = None
            made = False
            try:
                made = (await manager.prepare(name, rel, resolve_in_library(lib, rel))).made
            except ImageapiError as exc:
                error = exc
                log.info("HLS of %s/%s failed: %s", name, rel, exc.message)
            async with transaction(self.db):
                if not await fence.hold(self.db, row_id):
                    return
                await work_repo.set_hls_outcome(self.db, row_id, key, None if error is None else safe_text(
                    error.message), None if error is None else error.code)
            if error is not None:
                self._detail("hls", failed=1)
            else:
                self._detail("hls", **{"made" if made else "cached": 1})

        await asyncio.gather(*(one(*row) for row in await self._rows("hls", ids)))

    async def _previews(self, ids: list[int], fence: leases.Fence) -> None:
        rows = await self._rows("previews", ids)
        batch = [PreviewCandidate(row_id, Library(lib_id, name, Path(root)), rel, size, mtime_ns, duration)
                 for row_id, rel, size, mtime_ns, duration, lib_id, name, root in rows]
        report = PreviewReport()
        await make_due(self.db, self.config, batch, report, jobs=self.pool.workers, fence=fence,
                       local_root=self.local_root)
        self._detail("previews", made=report.made, failed=report.failed)
