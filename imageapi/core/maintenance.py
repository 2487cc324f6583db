"""Jobs that work straight from the database, with no filesystem walk: hash backfill and
making missing thumbnails."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.libraries import sentinel_path, thumbnail_path
from imageapi.core.media import ThumbResult
from imageapi.core.names import safe_text
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import files
from imageapi.core.repositories.leases import Fence
from imageapi.core.store import abs_path
from imageapi.core.worker import ThumbTask, hash_batch, thumb_batch

Progress = Callable[[str, int, int | None], None]
WRITE_EVERY = 64


@dataclass
class HashBackfillCounts:
    hashed: int = 0
    failed: int = 0
    remaining: int = 0


async def count_unhashed(db: Connection, library_id: int | None = None) -> int:
    return await files.count_unhashed(db, library_id)


async def backfill_hashes(
    db: Connection,
    pool: WorkerPool,
    max_rows: int | None = None,
    progress: Progress | None = None,
) -> HashBackfillCounts:
    """Hash rows that have no content hash, in id order (earlier failures last), at most `max_rows`.

    Straight from the database: a quick scan that sees only recent files never starves this
    backlog. A file that cannot be read keeps its NULL hash and gets the reason in `error`.
    """
    rows = [(row_id, abs_path(root, rel)) for row_id, root, rel in await files.unhashed_rows(db, max_rows)]
    counts = await hash_rows(db, pool, rows, progress)
    counts.remaining = await count_unhashed(db)
    return counts


async def hash_rows(
    db: Connection,
    pool: WorkerPool,
    rows: list[tuple[int, str]],
    progress: Progress | None = None,
    fence: Fence | None = None,
) -> HashBackfillCounts:
    """Hash (row id, path) in the pool and record each outcome, in batched transactions; with a
    `fence`, only for the rows whose lease is still held (imageapi.core.repositories.leases)."""
    counts = HashBackfillCounts()
    pending: list[tuple[object, ...]] = []
    failures: list[tuple[object, ...]] = []

    async def flush() -> None:
        nonlocal pending, failures
        if pending or failures:
            async with transaction(db):
                if fence is not None:
                    held = await fence.settle(db, [r[1] for r in pending + failures])
                    pending = [r for r in pending if str(r[1]) in held]
                    failures = [r for r in failures if str(r[1]) in held]
                await files.record_hashes(db, pending, failures)
        pending, failures = [], []

    batches = [rows[i:i + 8] for i in range(0, len(rows), 8)]
    done = 0
    if progress:
        progress("hash", 0, len(rows))
    async for batch, results, failure in pool.map_batches(hash_batch, batches):
        if results is None:
            failures.extend((f"hash: {failure}", row_id) for row_id, _ in batch)
            counts.failed += len(batch)
        else:
            for row_id, digest, error in results:
                if digest:
                    pending.append((digest, row_id))
                    counts.hashed += 1
                else:
                    failures.append((f"hash: {error}", row_id))
                    counts.failed += 1
        done += len(batch)
        if progress:
            progress("hash", done, len(rows))
        if len(pending) + len(failures) >= WRITE_EVERY:
            await flush()
    await flush()
    return counts


@dataclass
class ThumbCounts:
    checked: int = 0
    made: int = 0
    unsupported: int = 0
    failed: int = 0
    retried_unsupported: int = 0
    retried_new_tools: int = 0     # unsupported with other tools than the ones there now
    temp_files_removed: int = 0


async def current_tools(db: Connection) -> dict[str, str | None]:
    """The tools each tool-made kind's thumbnails are made with now (ffmpeg_caps.thumb_tools), for
    the kinds that have sentinels with tools recorded (an index lookup; none: no tool is run).
    Asked in a thread, since the first question runs the tools."""
    from imageapi.core.ffmpeg_caps import TOOL_KINDS, thumb_tools

    kinds = await files.unsupported_kinds_with_tools(db, TOOL_KINDS)
    return {kind: await asyncio.to_thread(thumb_tools, kind) for kind in kinds}


def _tools_changed(kind: str, recorded: str | None, tools: dict[str, str | None]) -> bool:
    return recorded is not None and kind in tools and recorded != tools[kind]


def sweep_temp_files(config: Config, library: str | None = None) -> int:
    """Delete temporary thumbnail files left by a process killed mid-write, in one library's
    thumbnails or in all. The caller holds the scan leases of those libraries, so no writer of
    ours is making their thumbnails."""
    from imageapi.core.thumbs import is_temp_name

    removed = 0
    for folder, _dirs, names in os.walk(config.thumbnails / library if library else config.thumbnails):
        for name in names:
            if is_temp_name(name):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


async def make_missing_thumbnails(
    db: Connection,
    config: Config,
    pool: WorkerPool,
    *,
    retry_unsupported: bool = False,
    library_id: int | None = None,
    progress: Progress | None = None,
) -> ThumbCounts:
    """Thumbnails for rows that have none on disk (pending, failed, or deleted from the cache).

    Unsupported files keep their sentinel and are skipped, unless `retry_unsupported`, which
    removes the sentinels and tries them again; those found unsupported with other tools than the
    ones there now (a new ffmpeg, exiftool installed) are tried again in any case.
    """
    library = await files.library_name(db, library_id) if library_id is not None else None
    counts = ThumbCounts(temp_files_removed=await asyncio.to_thread(sweep_temp_files, config, library))
    tools = await current_tools(db)
    tasks: list[ThumbTask] = []
    async for r in files.thumb_rows(db, library_id):
        counts.checked += 1
        row_id, lib_name, root, rel, kind, state, duration, tool = r
        dest = thumbnail_path(config, lib_name, rel)
        if state == "unsupported":
            if retry_unsupported:
                counts.retried_unsupported += 1
            elif _tools_changed(kind, tool, tools):
                counts.retried_new_tools += 1
            else:
                continue
            try:
                os.unlink(sentinel_path(dest))
            except FileNotFoundError:
                pass
        elif state == "done" and dest.exists():
            continue
        tasks.append(ThumbTask(row_id, abs_path(root, rel), kind, str(dest), config.thumb_size, duration))
    await make_thumbnails(db, pool, tasks, counts, progress)
    return counts


async def retry_new_tools(
    db: Connection, config: Config, pool: WorkerPool, progress: Progress | None = None,
    library_ids: list[int] | None = None,
) -> ThumbCounts:
    """Try again, by themselves, the files marked unsupported with other tools (or versions) than
    the ones there now: a new ffmpeg, exiftool installed. Cheap when there are none (an index of
    the unsupported rows answers, and no tool is run), so scans and the watcher run it first
    every time. `library_ids`: only those libraries' files (the ones whose scan leases the caller
    holds)."""
    if library_ids is not None and not library_ids:
        return ThumbCounts()
    tools = await current_tools(db)
    counts = ThumbCounts()
    tasks: list[ThumbTask] = []
    for kind, now in tools.items():
        async for row_id, lib_name, root, rel, duration in files.unsupported_with_other_tools(db, kind, now,
                                                                                             library_ids):
            dest = thumbnail_path(config, lib_name, rel)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sentinel_path(dest))
            tasks.append(ThumbTask(row_id, abs_path(root, rel), kind, str(dest), config.thumb_size, duration))
    counts.checked = counts.retried_new_tools = len(tasks)
    if tasks:  # no progress bar for nothing
        await make_thumbnails(db, pool, tasks, counts, progress)
    return counts


async def make_thumbnails(
    db: Connection, pool: WorkerPool, tasks: list[ThumbTask], counts: ThumbCounts,
    progress: Progress | None, fence: Fence | None = None,
) -> None:
    """Run the tasks in the pool and record each outcome on its row, in batched transactions; with
    a `fence`, only on the rows whose lease is still held (imageapi.core.repositories.leases)."""
    updates: list[tuple[object, ...]] = []

    async def flush() -> None:
        nonlocal updates
        if updates:
            async with transaction(db):
                if fence is not None:
                    held = await fence.settle(db, [u[3] for u in updates])
                    updates = [u for u in updates if str(u[3]) in held]
                await files.record_thumb_states(db, updates)
        updates = []

    batches = [tasks[i:i + 4] for i in range(0, len(tasks), 4)]
    done = 0
    if progress:
        progress("thumbs", 0, len(tasks))
    async for batch, results, failure in pool.map_batches(thumb_batch, batches):
        pairs: list[tuple[int, ThumbResult]] = results or [
            (t.row_id, ThumbResult("failed", failure)) for t in batch
        ]
        for row_id, res in pairs:
            state, reason = res.state, res.reason
            updates.append((state, safe_text(reason), res.tool, row_id))  # may quote a name that is not UTF-8
            if state == "done":
                counts.made += 1
            elif state == "unsupported":
                counts.unsupported += 1
            else:
                counts.failed += 1
        done += len(batch)
        if progress:
            progress("thumbs", done, len(tasks))
        if len(updates) >= WRITE_EVERY:
            await flush()
    await flush()
