"""The places backfill: rows with GPS indexed before places existed (or computed with another
dataset) get their place and local time, straight from the database.

The due rows (gps_lat set, place_key NULL: migration 19's partial index) are read in id order,
computed in the worker pool (core/places.py, offline) and written in batched transactions, each
row only while it is still due (a scan that rewrote it meanwhile computed its own). Run by
`imageapi places backfill`, by the watcher's tick (a capped number per tick) and by `imageapi
worker --kinds places` (under item leases).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import places as repo
from imageapi.core.repositories.leases import Fence

# (stage, done, total)
Progress = Callable[[str, int, int | None], None]

PER_CALL = 256      # rows per worker call: a lookup costs ~20 µs, the call's overhead more
PAGE = 4096         # due rows read at a time
WRITE_EVERY = 1024  # rows per transaction


@dataclass
class PlaceCounts:
    placed: int = 0      # rows that got a place
    no_place: int = 0    # rows whose GPS names none (out of range, (0, 0), far from any town)
    failed: int = 0      # rows whose computation failed (recorded nothing; due again)
    stale: int = 0       # rows computed with another dataset, made due again first
    remaining: int = 0   # due after the run


def compute(rows: list[tuple[Any, ...]], cache: str | None = None) -> list[tuple[object, ...]]:
    """In a worker process: due rows (repositories.places.due's columns) -> write_places values."""
    from imageapi.core.places import locate, use_cache

    use_cache(cache)
    out: list[tuple[object, ...]] = []
    for row_id, kind, lat, lon, taken_at, offset, taken_source, offset_source in rows:
        found = locate(lat, lon, taken_at, offset, taken_source, kind, previous_source=offset_source)
        p = found.place
        out.append((p.city if p else None, p.region if p else None, p.country if p else None,
                    p.cc if p else None, found.key, found.taken_at, found.taken_at_offset,
                    found.offset_source, row_id))
    return out


async def fill_rows(db: Connection, pool: WorkerPool, rows: Sequence[tuple[Any, ...]], counts: PlaceCounts,
                    cache: Path | None = None, fence: Fence | None = None, progress: Progress | None = None,
                    done: int = 0, total: int | None = None) -> int:
    """Compute `rows` in the pool and write them in batches; with a `fence`, only the rows whose
    lease is still held. Returns `done` plus the rows worked."""
    pending: list[tuple[object, ...]] = []

    async def flush() -> None:
        nonlocal pending
        if pending:
            async with transaction(db):
                if fence is not None:
                    held = await fence.settle(db, [v[-1] for v in pending])
                    pending = [v for v in pending if str(v[-1]) in held]
                await repo.write_places(db, pending)
        pending = []

    batches = [list(rows[i:i + PER_CALL]) for i in range(0, len(rows), PER_CALL)]
    work = functools.partial(compute, cache=str(cache) if cache is not None else None)
    async for batch, results, _failure in pool.map_batches(work, batches):
        if results is None:
            counts.failed += len(batch)
        else:
            for values in results:
                if values[3] is not None:
                    counts.placed += 1
                else:
                    counts.no_place += 1
            pending.extend(results)
        done += len(batch)
        if progress:
            progress("places", done, total)
        if len(pending) >= WRITE_EVERY:
            await flush()
    await flush()
    return done


async def backfill(db: Connection, pool: WorkerPool, max_rows: int | None = None, *,
                   cache: Path | None = None, library_ids: Sequence[int] | None = None,
                   progress: Progress | None = None, forget_stale: bool = True) -> PlaceCounts:
    """Fill the due rows in id order, at most `max_rows`; first, with `forget_stale`, make the rows
    computed with another dataset version due again."""
    from imageapi.core.places import dataset_version

    counts = PlaceCounts()
    if forget_stale:
        async with transaction(db):
            counts.stale = await repo.forget_other_versions(db, dataset_version())
    total = await repo.count_due(db)
    if max_rows is not None:
        total = min(total, max_rows)
    after, done = 0, 0
    if progress:
        progress("places", 0, total)
    while max_rows is None or done < max_rows:
        page = min(PAGE, max_rows - done) if max_rows is not None else PAGE
        rows = await repo.due(db, page, after, library_ids)
        if not rows:
            break
        after = int(rows[-1][0])
        done = await fill_rows(db, pool, rows, counts, cache, progress=progress, done=done, total=total)
    counts.remaining = await repo.count_due(db)
    return counts
