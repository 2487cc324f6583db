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
    sql = "SELECT COUNT(*) FROM files WHERE content_hash IS NULL"
    params: tuple[object, ...] = ()
    if library_id is not None:
        sql += " AND library_id = ?"
        params = (library_id,)
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


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
    sql = (
        "SELECT f.id, l.root, f.rel_path FROM files f JOIN libraries l ON l.id = f.library_id "
        # Rows whose hashing already failed go last, so a block of unreadable files at low ids
        # cannot starve the rest of the backlog tick after tick.
        "WHERE f.content_hash IS NULL ORDER BY CASE WHEN f.error LIKE 'hash:%' THEN 1 ELSE 0 END, f.id"
    )
    params: tuple[object, ...] = ()
    if max_rows is not None:
        sql += " LIMIT ?"
        params = (max_rows,)
    async with db.execute(sql, params) as cur:
        rows = [(r[0], abs_path(r[1], r[2])) for r in await cur.fetchall()]
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
                await db.executemany("UPDATE files SET content_hash = ?, error = NULL WHERE id = ?", pending)
                await db.executemany("UPDATE files SET error = ? WHERE id = ?", failures)
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

    async with db.execute(
        f"SELECT DISTINCT kind FROM files WHERE thumb_state = 'unsupported' "
        f"AND kind IN ({', '.join('?' * len(TOOL_KINDS))}) AND thumb_tool IS NOT NULL", TOOL_KINDS,
    ) as cur:
        kinds = [row[0] for row in await cur.fetchall()]
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
    sql = (
        "SELECT f.id, l.name, l.root, f.rel_path, f.kind, f.thumb_state, f.duration, f.thumb_tool "
        "FROM files f JOIN libraries l ON l.id = f.library_id"
    )
    params: tuple[object, ...] = ()
    library: str | None = None
    if library_id is not None:
        sql += " WHERE f.library_id = ?"
        params = (library_id,)
        async with db.execute("SELECT name FROM libraries WHERE id = ?", (library_id,)) as cur:
            row = await cur.fetchone()
        library = str(row[0]) if row is not None else None
    sql += " ORDER BY f.id"
    counts = ThumbCounts(temp_files_removed=await asyncio.to_thread(sweep_temp_files, config, library))
    tools = await current_tools(db)
    tasks: list[ThumbTask] = []
    async with db.execute(sql, params) as cur:
        async for r in cur:
            counts.checked += 1
            row_id, lib_name, root, rel, kind, state, duration, tool = tuple(r)
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
    only = ""
    if library_ids is not None:
        only = " AND f.library_id IN (" + ", ".join(str(int(i)) for i in library_ids) + ")"
    counts = ThumbCounts()
    tasks: list[ThumbTask] = []
    for kind, now in tools.items():
        async with db.execute(
            "SELECT f.id, l.name, l.root, f.rel_path, f.duration FROM files f "
            "JOIN libraries l ON l.id = f.library_id "
            "WHERE f.thumb_state = 'unsupported' AND f.kind = ? AND f.thumb_tool IS NOT NULL "
            "AND f.thumb_tool <> COALESCE(?, '')" + only + " ORDER BY f.id", (kind, now),
        ) as cur:
            async for row_id, lib_name, root, rel, duration in cur:
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
                await db.executemany(
                    "UPDATE files SET thumb_state = ?, thumb_reason = ?, thumb_tool = ? WHERE id = ?", updates
                )
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
