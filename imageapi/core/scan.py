"""The scan: find new, changed, moved and removed files in a library and index them.

Discovery runs in a thread, the per-file work (read once, hash, metadata, thumbnail) in the worker
pool, and the results are written in batched transactions. Nothing is recorded as done before it is:
a file's row is written after its thumbnail is in place, folder mtimes (which let the next quick
scan skip unchanged folders) are written only once every file under them is indexed, and removals
last. So a scan killed at any moment is finished by the next one, with no duplicate rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imageapi.core import duplicates
from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection, database_error, db_path, utcnow
from imageapi.core.errors import DatabaseError, ImageapiError, NotFoundError, UsageError
from imageapi.core.kinds import IgnoreRules
from imageapi.core.libraries import (
    Library,
    add_library,
    get_library,
    list_libraries,
    locate,
    thumbnail_path,
)
from imageapi.core.maintenance import retry_new_tools
from imageapi.core.media import FileResult, ThumbResult
from imageapi.core.names import safe_text
from imageapi.core.places import cache_file
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import files, scans
from imageapi.core.repositories import mapindex as map_repo
from imageapi.core.store import (
    abs_path,
    move_params,
    remove_thumbnail_files,
    upsert_params,
    write_results,
)
from imageapi.core.walk import Entry, Walker, within_any
from imageapi.core.worker import Task, process_batch

log = logging.getLogger(__name__)

# (stage, done, total) — stage is "discover" or "index"; total is None while unknown.
Progress = Callable[[str, int, int | None], None]

BATCH = 4              # files per worker call: small, so one slow file does not hold up many
WRITE_EVERY = 64       # rows per transaction
WRITE_INTERVAL = 1.0   # ... or seconds, whichever comes first
MAX_ERRORS_KEPT = 100  # per-file errors returned in the report (all are on their rows)


@dataclass
class ScanCounts:
    scanned: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    moved: int = 0
    hashed: int = 0
    thumbs_made: int = 0
    thumbs_unsupported: int = 0
    thumbs_failed: int = 0
    errors: int = 0

    def add(self, other: ScanCounts) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class ScanReport:
    library: str
    mode: str
    subtree: str
    counts: ScanCounts = field(default_factory=ScanCounts)
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: str | None = None   # why this library's scan stopped (its root is missing, ...)


@dataclass(frozen=True)
class ScanTarget:
    library: Library
    subtree: str = ""


async def resolve_targets(
    db: Connection, library_names: list[str], path: Path | None
) -> list[ScanTarget]:
    """What `imageapi scan [--library NAME]... [PATH]` means.

    PATH inside a known library: that subtree. No library configured yet: PATH becomes library
    `main`. Otherwise an error names the known libraries.
    """
    libraries = await list_libraries(db)
    if path is not None:
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        if not libraries:
            return [ScanTarget(await add_library(db, "main", path))]
        folder = path if path.is_dir() else path.parent
        try:
            lib, rel = locate(libraries, folder)
        except NotFoundError:
            known = ", ".join(f"{lib.name} ({lib.root})" for lib in libraries)
            raise UsageError(
                f"{path} is not inside a known library (known: {known}); "
                "add it with `imageapi library add NAME PATH`"
            ) from None
        if library_names and lib.name not in library_names:
            raise UsageError(f"{path} is in library {lib.name!r}, not in {', '.join(library_names)}")
        return [ScanTarget(lib, rel)]
    if library_names:
        return [ScanTarget(await get_library(db, name)) for name in library_names]
    if not libraries:
        raise UsageError(
            "no library configured: give a folder (imageapi scan --full ~/Pictures), "
            "set BASE_PATH, or use `imageapi library add NAME PATH`"
        )
    return [ScanTarget(lib) for lib in libraries]


async def mark_interrupted(db: Connection, library_ids: list[int]) -> None:
    """Scans of these libraries left 'running' by a killed process (the caller holds their scan
    leases, so none is live; another library's may be, on another host)."""
    for library_id in library_ids:
        async with transaction(db):
            await scans.mark_interrupted(db, library_id, utcnow())


class _Known:
    """What the database holds for the part of the library being scanned."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, int, int, str | None]] = {}  # rel -> (id, size, mtime, hash)


async def _load_known(
    db: Connection, lib: Library, subtree: str, dirs: set[str] | None
) -> _Known:
    known = _Known()
    if dirs is not None and len(dirs) <= 200:
        for d in dirs:
            known.rows.update((r[0], r[1:]) for r in await files.known_in_dir(db, lib.id, d))
        return known
    rows = await files.known_under(db, lib.id, subtree)
    if dirs is None:
        known.rows = {r[0]: r[1:] for r in rows}
    else:
        known.rows = {r[0]: r[1:] for r in rows if r[0].rpartition("/")[0] in dirs}
    return known


async def _rows_under(db: Connection, lib: Library, folders: set[str]) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for folder in folders:
        for r in await files.rows_under(db, lib.id, folder):
            out[r[1]] = (r[0], r[2], r[3], r[4])
    return out


async def _known_dirs(db: Connection, lib: Library) -> dict[str, tuple[int, int | None]]:
    """Folders as the last scan that listed them left them: rel -> (mtime_ns, fingerprint)."""
    return {r[0]: (r[1], r[2]) for r in await scans.known_dirs(db, lib.id)}


def _batches(tasks: list[Task], size: int) -> Iterator[list[Task]]:
    for i in range(0, len(tasks), size):
        yield tasks[i:i + size]


async def scan_library(
    db: Connection,
    config: Config,
    target: ScanTarget,
    mode: str,
    pool: WorkerPool,
    progress: Progress | None = None,
) -> ScanReport:
    if mode not in ("full", "quick"):
        raise UsageError(f"scan mode must be full or quick, not {mode!r}")
    lib, subtree = target.library, target.subtree
    started = time.monotonic()
    report = ScanReport(library=lib.name, mode=mode, subtree=subtree)
    counts = report.counts
    scan_id = await scans.insert_scan(db, lib.id, mode, subtree, utcnow())
    try:
        await _scan(db, config, lib, subtree, mode, pool, progress, report)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) else "failed"
        # A full disk or a damaged database is the cause to record and report, not a traceback.
        error = database_error(exc, db_path(db))
        try:
            await _finish(db, scan_id, counts, status, safe_text(str(error or exc)) or type(exc).__name__)
        except Exception as finish_exc:  # the disk may still be full: the next run marks it interrupted
            log.warning("could not record the end of scan %s: %s", scan_id, finish_exc)
        if error is not None and error is not exc:
            raise error from exc
        raise
    report.seconds = time.monotonic() - started
    await _finish(db, scan_id, counts, "done", "; ".join(report.warnings) or None)
    return report


async def _finish(db: Connection, scan_id: int | None, counts: ScanCounts, status: str,
                  error: str | None) -> None:
    async with transaction(db):
        await scans.finish_scan(db, scan_id, asdict(counts), status, utcnow(), error)


async def _scan(
    db: Connection,
    config: Config,
    lib: Library,
    subtree: str,
    mode: str,
    pool: WorkerPool,
    progress: Progress | None,
    report: ScanReport,
) -> None:
    counts = report.counts
    walker = Walker(str(lib.root), IgnoreRules(config.ignore_patterns),
                    on_progress=(lambda n: progress("discover", n, None)) if progress else None)

    # 1. Discovery (filesystem only, in a thread).
    known_dirs = await _known_dirs(db, lib)
    if mode == "full":
        walk = await asyncio.to_thread(walker.full, subtree)
    else:
        walk = await asyncio.to_thread(walker.quick, {d: m for d, (m, _) in known_dirs.items()}, subtree)
    if walk.errors and walk.errors[0][0] == subtree and subtree not in walk.listed:
        raise NotFoundError(f"library {lib.name!r}: cannot read {lib.root / subtree}: {walk.errors[0][1]}")
    for rel, reason in walk.errors:
        counts.errors += 1
        if len(report.errors) < MAX_ERRORS_KEPT:
            report.errors.append((rel, reason))
    counts.scanned = len(walk.files)
    if progress:
        progress("discover", len(walk.files), len(walk.files))

    # 2. Compare with the database.
    error_dirs = {rel for rel, _ in walk.errors}
    # Folders compared file by file: listed ones whose fingerprint moved since the last scan listed
    # them (new ones have none), and, in a full scan, folders holding rows that the walk no longer
    # finds. A listed folder whose fingerprint is unchanged holds exactly what its rows say.
    stale = {d for d in walk.listed if known_dirs.get(d, (0, None))[1] != walk.fingerprints.get(d)}
    if mode == "full":
        vanished = {
            d for d in await files.dirs_with_rows(db, lib.id, subtree)
            if d not in walk.listed and not within_any(d, error_dirs)
        }
        known = await _load_known(db, lib, subtree, stale | vanished)
    else:
        known = await _load_known(db, lib, subtree, stale)
    gone_rows = {
        rel: row for rel, row in known.rows.items() if rel not in walk.files and not within_any(rel, error_dirs)
    }
    if mode == "quick":
        gone_rows.update(await _rows_under(db, lib, walk.gone_dirs))
    if gone_rows and not walk.files and not walk.dirs.keys() - {subtree} and mode == "full":
        # An empty root while files are indexed is what an unmounted NAS share looks like.
        report.warnings.append(
            f"{lib.root / subtree} is empty but {len(gone_rows)} files are indexed: is it mounted? "
            "Removals were not recorded."
        )
        gone_rows = {}

    tasks: list[Task] = []
    new_paths: set[str] = set()
    for rel, entry in walk.files.items():
        if rel.rpartition("/")[0] not in stale:
            continue
        row = known.rows.get(rel)
        if row is None:
            new_paths.add(rel)
        elif row[1] == entry.size and row[2] == entry.mtime_ns:
            continue
        tasks.append(_task(config, lib, rel, entry))
    tasks.sort(key=lambda t: t.rel_path)
    counts.changed = len(tasks) - len(new_paths)

    # 3. Index new and changed files in the pool; a new file whose content matches a vanished
    #    row is a move: that row (its id, and what hangs off its content) takes the new path.
    gone_by_hash: dict[str, list[tuple[int, str]]] = {}
    for rel, (row_id, _size, _mtime, content_hash) in gone_rows.items():
        if content_hash:
            gone_by_hash.setdefault(content_hash, []).append((row_id, rel))
    upserts: list[tuple[object, ...]] = []
    moves: list[tuple[object, ...]] = []
    moved_from: list[str] = []
    last_write = time.monotonic()
    done = 0
    if progress:
        progress("index", 0, len(tasks))

    async def flush() -> None:
        nonlocal upserts, moves, moved_from, last_write
        await write_results(db, upserts, moves)
        remove_thumbnail_files(config, lib.name, moved_from)
        upserts, moves, moved_from = [], [], []
        last_write = time.monotonic()

    async for batch, results, failure in pool.map_batches(process_batch, _batches(tasks, BATCH)):
        if results is None:
            results = [_failed_result(t, failure or "unknown failure") for t in batch]
        now = utcnow()
        for res in results:
            done += 1
            _count(counts, report, res)
            candidates = gone_by_hash.get(res.content_hash or "") if res.rel_path in new_paths else None
            if candidates:
                row_id, old_rel = candidates.pop()
                gone_rows.pop(old_rel, None)
                moves.append(move_params(row_id, lib.id, res, now))
                moved_from.append(old_rel)
                counts.moved += 1
            else:
                upserts.append(upsert_params(lib.id, res, now))
                if res.rel_path in new_paths:
                    counts.added += 1
        if progress:
            progress("index", done, len(tasks))
        if len(upserts) + len(moves) >= WRITE_EVERY or time.monotonic() - last_write > WRITE_INTERVAL:
            await flush()
    await flush()

    # 4. Removals and folder mtimes, last, in one transaction.
    async with transaction(db):
        gone_ids = [(row[0],) for row in gone_rows.values()]
        await files.delete_files(db, gone_ids)
        if gone_ids:
            await map_repo.bump(db, [lib.id])  # the map forgets them
        if mode == "full":
            await scans.delete_dirs_under(db, lib.id, subtree)
        else:
            dropped = [(lib.id, d) for d in known_dirs if within_any(d, walk.gone_dirs)]
            await scans.delete_dirs(db, dropped)
        # A listed folder had all its files seen now (see migration 6).
        seen = utcnow()
        await scans.upsert_dirs(db, [(lib.id, d, m, seen, walk.fingerprints.get(d)) for d, m in walk.dirs.items()])
    counts.removed = len(gone_rows)
    remove_thumbnail_files(config, lib.name, gone_rows)


def _task(config: Config, lib: Library, rel: str, entry: Entry) -> Task:
    return Task(
        path=abs_path(lib.root, rel),
        rel_path=rel,
        kind=entry.kind,
        thumb_dest=str(thumbnail_path(config, lib.name, rel)),
        box=config.thumb_size,
        places_cache=str(cache_file(config.data_dir)),
    )


def _failed_result(task: Task, reason: str) -> FileResult:
    try:
        st = Path(task.path).stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = 0, 0
    return FileResult(
        rel_path=task.rel_path, kind=task.kind, size=size, mtime_ns=mtime, error=reason,
        thumb=ThumbResult("failed", reason),
    )


def _count(counts: ScanCounts, report: ScanReport, res: FileResult) -> None:
    if res.content_hash:
        counts.hashed += 1
    if res.thumb is not None:
        if res.thumb.state == "done":
            counts.thumbs_made += 1
        elif res.thumb.state == "unsupported":
            counts.thumbs_unsupported += 1
        elif res.thumb.state == "failed":
            counts.thumbs_failed += 1
    if res.error:
        counts.errors += 1
        if len(report.errors) < MAX_ERRORS_KEPT:
            report.errors.append((res.rel_path, safe_text(res.error) or ""))


async def run_scan(
    db: Connection,
    config: Config,
    targets: list[ScanTarget],
    mode: str,
    pool: WorkerPool,
    progress: Progress | None = None,
) -> list[ScanReport]:
    """Scan each target in turn, after trying again the files that other tools than the ones
    there now found unsupported. The caller holds the scan leases of the targets' libraries.

    One library's trouble never stops another's: a scan that fails (a missing root, an unreadable
    folder, a bug) is logged, recorded on its `scans` row and in its report's `failed`, and the
    next library is scanned."""
    library_ids = sorted({t.library.id for t in targets})
    await mark_interrupted(db, library_ids)
    retried = await retry_new_tools(db, config, pool, progress, library_ids=library_ids)
    if retried.retried_new_tools:
        log.info("tried %d unsupported files again with the tools there now: %d thumbnails made, "
                 "%d still unsupported, %d failed", retried.retried_new_tools, retried.made,
                 retried.unsupported, retried.failed)
    reports = []
    for target in targets:
        where = target.library.name + (f"/{target.subtree}" if target.subtree else "")
        try:
            report = await scan_library(db, config, target, mode, pool, progress)
        except (asyncio.CancelledError, KeyboardInterrupt, DatabaseError):
            raise  # a full disk or a damaged database is every library's trouble: stop the run
        except Exception as exc:
            message = exc.message if isinstance(exc, ImageapiError) else f"{type(exc).__name__}: {exc}"
            report = ScanReport(library=target.library.name, mode=mode, subtree=target.subtree,
                                failed=safe_text(message))
            if isinstance(exc, ImageapiError):
                log.warning("%s scan of %s failed: %s", mode, where, report.failed)
            else:
                log.exception("%s scan of %s failed: %s", mode, where, report.failed)
            reports.append(report)
            continue
        log.info("%s scan of %s: %s in %.1f s", mode, where, asdict(report.counts), report.seconds)
        reports.append(report)
    # The perceptual hashes of the pictures whose thumbnails were just made (and, on a full scan, of
    # any left before): from the thumbnails, in the pool. A quick scan that made no thumbnail
    # does not look (at a million files the look costs a second).
    if mode == "full" or retried.made or any(r.counts.thumbs_made for r in reports):
        phashes = await duplicates.hash_pass(db, config, pool, library_ids=library_ids, progress=progress)
        if phashes.hashed or phashes.failed:
            log.info("perceptual hashes: %d computed, %d thumbnails unreadable", phashes.hashed, phashes.failed)
    return reports
