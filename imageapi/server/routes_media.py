"""GET /image (thumb, preview, full), GET /image/metadata, GET /video.

The thumbnail path is the hot one (a grid of a few hundred per screen): it touches neither the
database nor a thread pool. The stored thumbnail is stat'ed and, when small, read in the event
loop (one local file of ~12 KB: microseconds, less than a thread-pool hop) and kept in a bounded
in-memory cache that is checked against the file's identity on every hit. Only a missing
thumbnail goes to the database and the worker pool. Originals go out through FileResponse
(sendfile, Range, If-None-Match, If-Modified-Since).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import stat
from pathlib import Path

from aiohttp import web

from imageapi.core.db import Row
from imageapi.core.errors import MediaError, UnsupportedMediaError, UsageError
from imageapi.core.files import get_file_row
from imageapi.core.libraries import Library, resolve_in_library
from imageapi.core.listing import file_record
from imageapi.core.names import on_disk
from imageapi.core.tags import tags_for_hashes
from imageapi.core.thumb_state import make_on_demand
from imageapi.server.auth import media_allowed
from imageapi.server.cache import CACHE_CONTROL, ByteCache, CachedBody, make_entry, not_modified
from imageapi.server.keys import CONFIG, DB, FAST_THUMBS, LIBRARIES, RENDERER, THUMB_CACHE
from imageapi.server.params import client_path, query_choice

THUMB_INLINE_MAX = 512 * 1024   # thumbnails up to this size are read in the event loop

_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "png": "image/png",
    "webp": "image/webp", "gif": "image/gif", "tif": "image/tiff", "tiff": "image/tiff",
    "bmp": "image/bmp", "heic": "image/heic", "heif": "image/heif", "hif": "image/heif",
    "avif": "image/avif", "dng": "image/x-adobe-dng", "cr2": "image/x-canon-cr2",
    "cr3": "image/x-canon-cr3", "nef": "image/x-nikon-nef", "arw": "image/x-sony-arw",
    "raf": "image/x-fuji-raf", "orf": "image/x-olympus-orf", "rw2": "image/x-panasonic-rw2",
    "mp4": "video/mp4", "m4v": "video/x-m4v", "mov": "video/quicktime", "qt": "video/quicktime",
    "mkv": "video/x-matroska", "webm": "video/webm", "avi": "video/x-msvideo", "mts": "video/mp2t",
    "m2ts": "video/mp2t", "3gp": "video/3gpp", "mpg": "video/mpeg", "mpeg": "video/mpeg",
    "wmv": "video/x-ms-wmv",
}


def content_type_for(name: str) -> str:
    ext = name.rpartition(".")[2].lower()
    return _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def respond_cached(request: web.Request, entry: CachedBody) -> web.Response:
    if not_modified(request.headers, entry.etag, entry.mtime_s):
        return web.Response(status=304, headers=entry.headers_304)
    return web.Response(body=entry.body, headers=entry.headers)


async def _target(request: web.Request) -> tuple[Library, str]:
    query = request.query
    name = query.get("library") or None
    libs = request.app[LIBRARIES]
    lib = libs.fresh(name) or await libs.get(name)
    rel = client_path(query.get("path"))
    media_allowed(request, lib.name, rel)
    return lib, rel


async def indexed(request: web.Request, lib: Library, rel: str) -> tuple[Row, Path]:
    """The index row of a file and its path, refusing a path that leads outside the library
    (a symlink) even when the index holds it."""
    row = await get_file_row(request.app[DB], lib, rel)
    return row, resolve_in_library(lib, rel)


async def get_image(request: web.Request) -> web.StreamResponse:
    size = query_choice(request, "size", ("thumb", "preview", "full"), "thumb")
    lib, rel = await _target(request)
    if size == "thumb":
        return await serve_thumb(request, lib, rel)
    row, src = await indexed(request, lib, rel)
    if size == "full":
        return await serve_original(src, rel)
    if row["kind"] not in ("image", "heic", "raw", "video"):
        raise UnsupportedMediaError(f"{rel!r} has no picture")
    entry = await request.app[RENDERER].preview(str(src), row["kind"], row["duration"])
    return respond_cached(request, entry)


def _read_small(path: str, ident: tuple[int, int, int]) -> bytes | None:
    """The file's bytes if it is still the file that was stat'ed (else None: it was replaced)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if (st.st_mtime_ns, st.st_size, st.st_ino) != ident:
            return None
        return fh.read(st.st_size + 1)[: st.st_size]


def thumb_dest(thumbnails: Path, lib_name: str, rel: str) -> str:
    """thumbnail_path(config, lib_name, rel) as a string join: rel is clean (no '..', no leading
    '/', a valid stored form: client_path checked it), and this is the per-request hot path."""
    return f"{thumbnails}{os.sep}{lib_name}{os.sep}{rel if rel.isascii() else on_disk(rel)}"


async def serve_thumb(request: web.Request, lib: Library, rel: str) -> web.StreamResponse:
    app = request.app
    dest = thumb_dest(app[CONFIG].thumbnails, lib.name, rel)
    entry = app[THUMB_CACHE].current(dest) or await _stored_thumb(app[THUMB_CACHE], dest)
    if entry is None:
        entry = await _make_thumb(request, lib, rel, dest)
    # Repeats of this request on this connection can now skip aiohttp's machinery (fastpath.py).
    app[FAST_THUMBS].remember(request, lib.name, dest)
    return respond_cached(request, entry)


def load_small_thumb(cache: ByteCache, dest: str) -> CachedBody | None:
    """The stored thumbnail read into the cache, when it is small enough to read in the event
    loop (one local file of ~12 KB: microseconds, less than a thread-pool hop). None: missing,
    large, or replaced while being read (the caller looks again)."""
    try:
        st = os.stat(dest)
    except OSError:  # missing, or a name too long for THUMBNAILS: the full path decides
        return None
    if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= THUMB_INLINE_MAX:
        return None
    ident = (st.st_mtime_ns, st.st_size, st.st_ino)
    entry = cache.get(dest, ident)
    if entry is not None:
        return entry
    body = _read_small(dest, ident)
    if body is None:
        return None
    return cache.put(dest, make_entry(ident, body, st.st_mtime_ns, "t"))


async def _stored_thumb(cache: ByteCache, dest: str) -> CachedBody | None:
    """The stored thumbnail, from the cache when it still matches the file; None when missing."""
    for _ in range(2):
        entry = load_small_thumb(cache, dest)
        if entry is not None:
            return entry
        try:
            st = os.stat(dest)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        if st.st_size <= THUMB_INLINE_MAX:
            continue  # replaced between stat and open: look again
        ident = (st.st_mtime_ns, st.st_size, st.st_ino)
        entry = cache.get(dest, ident)
        if entry is not None:
            return entry
        body = await asyncio.to_thread(_read_small, dest, ident)
        if body is not None:
            return cache.put(dest, make_entry(ident, body, st.st_mtime_ns, "t"))
    return None


async def _make_thumb(request: web.Request, lib: Library, rel: str, dest: str) -> CachedBody:
    """No stored thumbnail: make it in the worker pool, record it, serve it."""
    app = request.app
    await make_on_demand(app[DB], lib, rel, dest, app[CONFIG].thumb_size, app[RENDERER].thumbnail)
    try:
        st = os.stat(dest)
        body = await asyncio.to_thread(Path(dest).read_bytes)
    except OSError as exc:
        raise MediaError(f"thumbnail of {rel!r} vanished: {exc.strerror}") from None
    return app[THUMB_CACHE].put(dest, make_entry((st.st_mtime_ns, st.st_size, st.st_ino), body, st.st_mtime_ns, "t"))


async def serve_original(src: Path, rel: str) -> web.StreamResponse:
    """The file's bytes with Range, ETag/Last-Modified and 304 (FileResponse does them)."""
    try:
        st = await asyncio.to_thread(os.stat, src)
    except OSError:
        raise MediaError(f"{rel!r} is indexed but cannot be read now") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{rel!r} is not a file")
    return web.FileResponse(src, headers={
        "Content-Type": content_type_for(rel), "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes",
    })


async def get_video(request: web.Request) -> web.StreamResponse:
    lib, rel = await _target(request)
    row, src = await indexed(request, lib, rel)
    if row["kind"] != "video":
        raise UsageError(f"{rel!r} is not a video (it is {row['kind']}): use /image")
    return await serve_original(src, rel)


async def get_metadata(request: web.Request) -> web.Response:
    lib, rel = await _target(request)
    db = request.app[DB]
    row, _ = await indexed(request, lib, rel)
    rec = file_record(request.app[CONFIG], lib, row)
    rec["tags"] = (await tags_for_hashes(db, [row["content_hash"]]))[row["content_hash"]] if row["content_hash"] else []
    return web.json_response(rec)


def setup(app: web.Application) -> None:
    app.router.add_get("/image", get_image)
    app.router.add_get("/image/metadata", get_metadata)
    app.router.add_get("/video", get_video)
