"""Duplicates: one content at several paths (exact), and copies of one picture that are not the
same bytes (near: resized, recompressed, re-exported, lightly edited), found by perceptual hashes.

Perceptual hashes (core/phash.py) are computed from each content's thumbnail in the worker
processes, right after a scan has made the thumbnails (run_scan), by `imageapi worker --kinds phash`
and by `imageapi duplicates backfill`, and stored per content (migration 21).

Near-duplicates: two pictures whose 64-bit hashes differ by at most NEAR_PHASH bits (found by
multi-index hashing, core/dupmatch.py, never by comparing all pairs) and whose 256-bit hashes differ
by at most NEAR_FINE bits. Frames of a burst, shot a fraction of a second apart, are often as close
on the coarse hash as an edited copy, but the finer hash sees the subject move: they are not
grouped unless their pixels are nearly the same. The thresholds come from bench/dups_quality.py.

The best one to keep: the most original pixels, then the most metadata (a camera date, GPS, the
camera), then the oldest file. imageapi reports groups; it never deletes or changes a file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imageapi.core import dupmatch
from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.errors import UsageError
from imageapi.core.files import taken_at_iso
from imageapi.core.libraries import thumbnail_path
from imageapi.core.phash import hash_batch
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import duplicates as repo
from imageapi.core.repositories.duplicates import MemberRow
from imageapi.core.repositories.leases import Fence

NEAR_PHASH = 10     # bits of 64
NEAR_FINE = 26      # bits of 256
NEAR_FINE_INNER = 18  # bits of 256, between a picture's centre and a whole picture (a cropped copy)
# Similar (a burst, the same scene shot again): coarse hashes as close as copies', finer ones
# far from copies' but short of unrelated pictures' (about 128 of 256 bits differ).
SIMILAR_PHASH = 12
SIMILAR_FINE = 90
KINDS = ("exact", "near", "similar")
CAMERA_DATES = ("exif_original", "exif_digitized", "xmp")
MAX_LIMIT = 500
WRITE_EVERY = 64
Progress = Callable[[str, int, int | None], None]


# ------------------------------------------------------------------------------------- hashing

@dataclass
class HashCounts:
    hashed: int = 0
    failed: int = 0
    remaining: int = 0


async def hash_rows(db: Connection, config: Config, pool: WorkerPool, rows: Sequence[tuple[int, str, str, str]],
                    progress: Progress | None = None, fence: Fence | None = None) -> HashCounts:
    """Perceptual hashes of (file id, content hash, library name, rel_path) from their thumbnails,
    in the pool, recorded in batched transactions; with a `fence`, only for contents whose lease is
    still held. An unreadable thumbnail records its reason (the content is not tried again)."""
    counts = HashCounts()
    pending: list[repo.HashRow] = []

    async def flush() -> None:
        nonlocal pending
        if pending:
            async with transaction(db):
                if fence is not None:
                    held = await fence.settle(db, [r[0] for r in pending])
                    pending = [r for r in pending if r[0] in held]
                await repo.record(db, pending)
        pending = []

    items = [(content_hash, str(thumbnail_path(config, name, rel))) for _id, content_hash, name, rel in rows]
    batches = [items[i:i + 16] for i in range(0, len(items), 16)]
    done = 0
    if progress:
        progress("phash", 0, len(items))
    async for batch, results, failure in pool.map_batches(hash_batch, batches):
        now = utcnow()
        for key, hashes, error in results or [(k, None, failure) for k, _ in batch]:
            pending.append((key, *(hashes or (None, None, None, None)), error, now))
            if hashes is not None:
                counts.hashed += 1
            else:
                counts.failed += 1
        done += len(batch)
        if progress:
            progress("phash", done, len(items))
        if len(pending) >= WRITE_EVERY:
            await flush()
    await flush()
    return counts


async def hash_pass(db: Connection, config: Config, pool: WorkerPool, *, library_ids: Sequence[int] | None = None,
                    max_items: int | None = None, progress: Progress | None = None) -> HashCounts:
    """Every due content (a thumbnail made, no perceptual hash yet) of these libraries, or at most
    `max_items` of them, oldest first."""
    rows = await repo.due_rows(db, library_ids, max_items)
    counts = await hash_rows(db, config, pool, rows, progress) if rows else HashCounts()
    counts.remaining = await repo.count_due(db, library_ids)
    return counts


async def count_due(db: Connection, library_ids: Sequence[int] | None = None) -> int:
    return await repo.count_due(db, library_ids)


async def due_rows_of(db: Connection, file_ids: Sequence[int]) -> list[tuple[int, str, str, str]]:
    return await repo.due_rows(db, None, None, file_ids=file_ids)


# ------------------------------------------------------------------------------------ grouping

def _fine_words(fines: list[str]) -> np.ndarray:
    """256-bit hex hashes as rows of four uint64."""
    return np.array([[int(f[i:i + 16], 16) for i in range(0, 64, 16)] for f in fines], dtype=np.uint64).reshape(-1, 4)


def near_groups_of(hashes: Sequence[tuple[str, str, str, str | None, str | None]], max_phash: int = NEAR_PHASH,
                   max_fine: int = NEAR_FINE, max_fine_inner: int = NEAR_FINE_INNER) -> list[list[str]]:
    """Groups of content hashes from (content hash, phash, fine, phash_inner, fine_inner) rows.

    Each picture is indexed twice, whole and by its centre: two whole pictures are copies when both
    their hashes are close; the centre of one and the whole of the other (a copy cropped by about
    5%) when their coarse hashes are close and their fine ones very close."""
    n = len(hashes)
    if n < 2:
        return []
    coarse = dupmatch.to_array([h[1] for h in hashes] + [h[3] or h[1] for h in hashes])
    fine = _fine_words([h[2] for h in hashes] + [h[4] or h[2] for h in hashes])

    def accept(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        bits = dupmatch.popcount(fine[i] ^ fine[j]).sum(axis=1)
        inner_i, inner_j = i >= n, j >= n
        whole = ~inner_i & ~inner_j & (bits <= max_fine)
        cropped = (inner_i ^ inner_j) & (bits <= max_fine_inner)
        return whole | cropped

    owners = np.concatenate([np.arange(n), np.arange(n)])
    return [[hashes[k][0] for k in g] for g in dupmatch.group(coarse, max_phash, accept, owners)]


# The near (and similar) groups of the last database asked, until its perceptual hashes change.
_near_cache: dict[bool, dict[str, Any]] = {False: {}, True: {}}
_near_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def near_map(db: Connection, similar: bool = False) -> dict[str, list[str]]:
    """content hash -> the contents of its near group (with `similar`: its group of near and
    similar pictures), itself included, for grouped contents. Grouped in a thread (numpy lets go
    of the interpreter lock for the heavy parts), once per change of the stored hashes: the
    server's event loop goes on meanwhile."""
    lock = _near_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())  # one grouping at a time
    cache = _near_cache[similar]
    async with lock:
        key = (id(db), await repo.state(db))
        if cache.get("key") != key:
            hashes = await repo.all_hashes(db)
            limits = (SIMILAR_PHASH, SIMILAR_FINE) if similar else (NEAR_PHASH, NEAR_FINE)
            groups = await asyncio.to_thread(near_groups_of, hashes, *limits)
            cache.update(key=key, map={c: g for g in groups for c in g})
        result: dict[str, list[str]] = cache["map"]
    return result


@dataclass
class Member:
    row: MemberRow
    keep: bool = False

    def record(self) -> dict[str, Any]:
        r = self.row
        width, height = (r.height, r.width) if (r.orientation or 1) >= 5 else (r.width, r.height)
        return {
            "id": r.id, "library": r.library, "path": r.rel_path, "kind": r.kind, "size": r.size,
            "width": width, "height": height, "content_hash": r.content_hash,
            "taken_at": taken_at_iso(r.taken_at, r.taken_at_offset) if r.taken_at else None,
            "camera": " ".join(x for x in (r.make, r.model) if x) or None, "gps": r.gps_lat is not None,
            "keep": self.keep,
        }


@dataclass
class Group:
    kind: str                  # exact, near or similar
    key: str                   # the smallest content hash of the group: its place in the order
    members: list[Member] = field(default_factory=list)
    reason: str = ""           # why the kept one

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "count": len(self.members), "keep_reason": self.reason,
                "members": [m.record() for m in self.members]}


def _pixels(r: MemberRow) -> int:
    return (r.width or 0) * (r.height or 0)


def _metadata(r: MemberRow) -> list[str]:
    have = []
    if r.taken_at_source in CAMERA_DATES:
        have.append("date")
    if r.gps_lat is not None:
        have.append("GPS")
    if r.make or r.model:
        have.append("camera")
    return have


def _rank(r: MemberRow) -> tuple[int, int, int, int]:
    """Smaller is better: most pixels, most metadata, oldest, lowest id."""
    return (-_pixels(r), -len(_metadata(r)), r.mtime_ns, r.id)


def best_to_keep(rows: Sequence[MemberRow]) -> tuple[MemberRow, str]:
    """The member to keep and why (what set it apart from the next best)."""
    ranked = sorted(rows, key=_rank)
    best = ranked[0]
    if len(ranked) == 1:
        return best, "the only copy"
    other = ranked[1]
    if _pixels(best) != _pixels(other):
        return best, f"largest original ({best.width}x{best.height} pixels)"
    if len(_metadata(best)) != len(_metadata(other)):
        return best, f"same size, most metadata ({', '.join(_metadata(best))})"
    if best.mtime_ns != other.mtime_ns:
        return best, "same size and metadata, oldest file"
    return best, "identical in size, metadata and age: the first indexed"


def _build(kind: str, key: str, rows: list[MemberRow]) -> Group:
    best, reason = best_to_keep(rows)
    members = [Member(r, keep=r.id == best.id) for r in sorted(rows, key=_rank)]
    return Group(kind, key, members, reason)


def encode_cursor(kind: str, key: str) -> str:
    raw = json.dumps(["dups", kind, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_BAD_CURSOR = "bad cursor: pass back the next_cursor of the previous page unchanged"


def decode_cursor(cursor: str, kind: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, got_kind, key = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise UsageError(_BAD_CURSOR) from None
    if tag != "dups" or not isinstance(key, str) or got_kind not in KINDS:
        raise UsageError(_BAD_CURSOR)
    if got_kind != kind:
        raise UsageError(f"bad cursor: it was made for the {got_kind} groups, not the {kind} ones")
    return key


@dataclass
class GroupPage:
    groups: list[Group]
    next_cursor: str | None


async def find_groups(db: Connection, *, kind: str = "exact", library_id: int | None = None,
                      after: str | None = None, limit: int | None = None) -> GroupPage:
    """Groups of duplicates in key order, the page after the key `after`, at most `limit`. Exact:
    one content at several paths (in any library; with `library_id`, groups with a member there).
    Near: contents whose pictures are near-duplicates, with all their paths (exact copies of a
    content that has no near twin are listed as exact only). Similar: pictures of one moment that
    are not copies of each other (frames of a burst), joined with their copies: groups that hold
    two or more near groups (or lone pictures)."""
    if kind not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}")
    near = kind != "exact"
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}")
    candidates: list[tuple[str, list[str]]]
    if near:
        by_key: dict[str, list[str]] = {}
        for group_contents in (await near_map(db, similar=kind == "similar")).values():
            by_key[group_contents[0]] = group_contents
        if kind == "similar":  # not one near group (those are near-duplicates, listed as such)
            copies = await near_map(db)
            by_key = {k: g for k, g in by_key.items() if len({copies.get(c, [c])[0] for c in g}) > 1}
        candidates = sorted(by_key.items())
    else:
        candidates = [(c, [c]) for c in await repo.exact_contents(db, library_id)]
    if after is not None:
        candidates = [c for c in candidates if c[0] > after]
    groups: list[Group] = []
    more = False
    step = 200
    for i in range(0, len(candidates), step):
        part = candidates[i:i + step]
        rows = await repo.files_of(db, [c for _k, cs in part for c in cs])
        by_content: dict[str, list[MemberRow]] = {}
        for r in rows:
            by_content.setdefault(r.content_hash, []).append(r)
        for key, contents in part:
            members = [r for c in contents for r in by_content.get(c, [])]
            if near and len({m.content_hash for m in members}) < 2:
                continue  # a content of the group is no longer indexed
            if len(members) < 2 or (library_id is not None and all(m.library_id != library_id for m in members)):
                continue
            if limit is not None and len(groups) == limit:
                more = True
                break
            groups.append(_build(kind, key, members))
        if more:
            break
    return GroupPage(groups, encode_cursor(kind, groups[-1].key) if more and groups else None)


# ------------------------------------------------------------------------------------ stacking

async def stacks(db: Connection, library_ids: Sequence[int], file_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """For each of `file_ids` that has duplicates or near-duplicates in these libraries: its stack,
    {"group", "count", "top"}: the group's key, how many files it holds there, and whether this
    file is the one to show (the best to keep). Nothing is changed on disk or in the index."""
    contents = await repo.contents_of_files(db, file_ids)
    if not contents:
        return {}
    nmap = await near_map(db)
    group_of = {c: nmap.get(c, [c]) for c in set(contents.values())}
    rows = await repo.files_of(db, sorted({c for g in group_of.values() for c in g}), library_ids)
    by_content: dict[str, list[MemberRow]] = {}
    for r in rows:
        by_content.setdefault(r.content_hash, []).append(r)
    out: dict[int, dict[str, Any]] = {}
    tops: dict[str, tuple[int, int]] = {}
    for file_id, content in contents.items():
        g = group_of[content]
        if g[0] not in tops:
            members = [r for c in g for r in by_content.get(c, [])]
            tops[g[0]] = (best_to_keep(members)[0].id if members else -1, len(members))
        top, count = tops[g[0]]
        if count > 1:
            out[file_id] = {"group": g[0], "count": count, "top": file_id == top}
    return out


# Collapsed stacks (the timeline shows one copy of each stack): which files are left out, per
# library set, until the hashes or the files change. Kept a few seconds without looking, so the
# months a timeline loads at once do not each count the files again.
COLLAPSE_FRESH_SEC = 5.0
_collapse_cache: weakref.WeakKeyDictionary[Connection, dict[tuple[int, ...], tuple[Any, float, Collapsed]]] = \
    weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Collapsed:
    hidden: frozenset[int]               # files shown under another copy of their stack
    by_day: dict[str | None, int]        # hidden files per day of taken_at (YYYY-MM-DD; None: undated)

    def in_month(self, month: str | None) -> int:
        """Hidden files of a month (YYYY-MM; None: undated)."""
        return sum(n for day, n in self.by_day.items() if (day[:7] if day else None) == month)


async def collapsed(db: Connection, library_ids: Sequence[int]) -> Collapsed:
    """The copies a collapsed timeline of these libraries leaves out: in each stack of two or more
    files (the same content, or near-duplicate contents) every file but the one to keep, the one
    `stacks` puts on top. Nothing is changed on disk or in the index."""
    libs = tuple(sorted(set(library_ids)))
    cache = _collapse_cache.setdefault(db, {})
    cached = cache.get(libs)
    now = time.monotonic()
    if cached is not None and now - cached[1] < COLLAPSE_FRESH_SEC:
        return cached[2]
    nmap = await near_map(db)
    state = (await repo.state(db), await repo.files_state(db, libs), id(nmap))
    if cached is not None and cached[0] == state:
        cache[libs] = (state, now, cached[2])
        return cached[2]
    groups: dict[str, list[str]] = {}
    for content in await repo.stacked_contents(db, libs):
        g = nmap.get(content, [content])
        groups[g[0]] = g
    for g in nmap.values():
        groups[g[0]] = g
    rows = await repo.files_of(db, sorted({c for g in groups.values() for c in g}), libs)
    by_content: dict[str, list[MemberRow]] = {}
    for r in rows:
        by_content.setdefault(r.content_hash, []).append(r)
    hidden: set[int] = set()
    by_day: Counter[str | None] = Counter()
    for g in groups.values():
        members = [r for c in g for r in by_content.get(c, [])]
        if len(members) < 2:
            continue
        top = best_to_keep(members)[0].id
        for m in members:
            if m.id != top:
                hidden.add(m.id)
                by_day[m.taken_at[:10] if m.taken_at else None] += 1
    result = Collapsed(frozenset(hidden), dict(by_day))
    if len(cache) > 16:  # library sets asked of one database: a few
        cache.clear()
    cache[libs] = (state, now, result)
    return result
