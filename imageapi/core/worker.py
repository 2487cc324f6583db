"""Work done in the worker processes: read a file once, hash it, read its metadata, thumbnail it.

Everything here is plain functions over picklable arguments, so a ProcessPoolExecutor can run it;
results come back as records and the parent writes them to the database in batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imageapi.core.errors import ImageapiError
from imageapi.core.hashing import hash_bytes, hash_file
from imageapi.core.media import FileResult, Metadata, ThumbResult

# Stills up to this size are read into memory once and shared by hashing, EXIF and decoding.
# Larger files (videos, huge TIFFs) are streamed.
READ_WHOLE_MAX = 256 * 1024 * 1024


@dataclass(frozen=True)
class Task:
    path: str            # absolute path of the source
    rel_path: str
    kind: str
    thumb_dest: str | None  # where the thumbnail goes; None: no thumbnail wanted
    box: int = 400
    places_cache: str | None = None  # core/places.py's cache file


def mtime_taken_at(mtime_ns: int) -> tuple[str, int]:
    """The file's mtime as local wall-clock time and this machine's UTC offset then (minutes)."""
    local = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    offset = local.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    return local.strftime("%Y-%m-%dT%H:%M:%S"), minutes


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ImageapiError):
        return exc.message
    if isinstance(exc, OSError):
        return f"cannot read file: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def process_file(task: Task) -> FileResult:
    """Hash, metadata and thumbnail of one file. Never raises: failures are recorded on the result."""
    from imageapi.core.exif import read_metadata
    from imageapi.core.thumbs import make_thumbnail

    path = Path(task.path)
    result = FileResult(rel_path=task.rel_path, kind=task.kind, size=0, mtime_ns=0)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            result.size, result.mtime_ns = st.st_size, st.st_mtime_ns
            data = f.read() if task.kind != "video" and st.st_size <= READ_WHOLE_MAX else None
    except OSError as exc:
        result.error = _describe(exc)
        result.thumb = ThumbResult("failed", result.error)
        return result

    try:
        result.content_hash = hash_bytes(data) if data is not None else hash_file(path)
    except OSError as exc:
        result.error = _describe(exc)

    try:
        result.metadata = read_metadata(path, task.kind, data)
    except Exception as exc:  # a reader bug must cost one file, not the scan
        result.metadata = Metadata(warnings=[_describe(exc)])
        result.error = result.error or f"metadata: {_describe(exc)}"
    meta = result.metadata
    if meta.taken_at is None:
        meta.taken_at, meta.taken_at_offset = mtime_taken_at(result.mtime_ns)
        meta.taken_at_source = "mtime"
    try:
        add_place(meta, task.kind, task.places_cache)
    except Exception as exc:  # a places failure costs the place, not the file
        meta.warnings.append(f"place: {_describe(exc)}")

    if task.thumb_dest is not None:
        try:
            result.thumb = make_thumbnail(
                path, task.kind, Path(task.thumb_dest), task.box, data=data, duration=meta.duration
            )
        except Exception as exc:
            result.thumb = ThumbResult("failed", _describe(exc))
        if result.thumb.state != "done" and result.error is None:
            result.error = result.thumb.reason
    return result


def add_place(meta: Metadata, kind: str, cache: str | None = None) -> None:
    """The place and local time from GPS (core/places.py): offline, in this process."""
    from imageapi.core.places import locate, use_cache

    use_cache(cache)
    found = locate(meta.gps_lat, meta.gps_lon, meta.taken_at, meta.taken_at_offset, meta.taken_at_source, kind)
    meta.taken_at, meta.taken_at_offset = found.taken_at, found.taken_at_offset
    meta.taken_at_offset_source = found.offset_source
    meta.place_key = found.key
    if found.place is not None:
        p = found.place
        meta.place_city, meta.place_region, meta.place_country, meta.place_cc = p.city, p.region, p.country, p.cc
    if found.problem is not None and found.key is not None and meta.gps_lat is not None:
        meta.warnings.append(f"place: {found.problem}")


def process_batch(tasks: list[Task]) -> list[FileResult]:
    return [process_file(t) for t in tasks]


def hash_batch(paths: list[tuple[int, str]]) -> list[tuple[int, str | None, str | None]]:
    """(row id, path) -> (row id, hash or None, error or None)."""
    out: list[tuple[int, str | None, str | None]] = []
    for row_id, p in paths:
        try:
            out.append((row_id, hash_file(p), None))
        except OSError as exc:
            out.append((row_id, None, _describe(exc)))
    return out


@dataclass(frozen=True)
class ThumbTask:
    row_id: int
    path: str
    kind: str
    dest: str
    box: int
    duration: float | None


def thumb_batch(tasks: list[ThumbTask]) -> list[tuple[int, ThumbResult]]:
    from imageapi.core.thumbs import make_thumbnail

    out: list[tuple[int, ThumbResult]] = []
    for t in tasks:
        try:
            res = make_thumbnail(Path(t.path), t.kind, Path(t.dest), t.box, duration=t.duration)
        except Exception as exc:
            res = ThumbResult("failed", _describe(exc))
        out.append((t.row_id, res))
    return out
