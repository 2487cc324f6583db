"""GET /video/stream (HLS playlist), /video/segment/{name} (its files), /video/preview (the wall's
clip), /video/gif and /video/wall.

Players cannot add headers, so the playlist's segment URLs carry a media token (`mt`): the one the
playlist was asked with, or, for a Bearer request, one made for this video alone. The URLs are
relative ("segment/seg00000.m4s?..."), so they still resolve behind a reverse proxy that mounts
the server under a prefix; the file name is in the path because some players (ffmpeg's) only fetch
segment URLs whose path ends in a media extension. Runs are owned by one HlsManager per
application, stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from imageapi.core import hls
from imageapi.core.errors import ImageapiError, UsageError
from imageapi.core.hls import HlsManager
from imageapi.core.previews import WALL_MAX_LIMIT, clip_path, gif_path, list_wall, mark_missing, preview_key
from imageapi.core.tokens import MEDIA_TTL_DEFAULT, MEDIA_TTL_MAX
from imageapi.server import auth
from imageapi.server.auth import MEDIA_KEY, MEDIA_PARAM, USER_KEY
from imageapi.server.cache import CACHE_CONTROL
from imageapi.server.keys import CONFIG, DB, LIBRARIES, TOKENS
from imageapi.server.middlewares import ApiError
from imageapi.server.params import client_path, query_bool, query_choice, query_int, query_str
from imageapi.server.routes_media import _target, indexed

HLS = web.AppKey("hls", HlsManager)
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
RETRY_AFTER = "3"  # seconds a player waits before asking again for a playlist still being prepared
DISCONNECT_POLL = 0.25  # seconds between looks at a waiting request's connection
T = TypeVar("T")

# Routes that a player loads by itself: they take the media token like /image and /video.
MEDIA_ROUTES = frozenset({"/video/stream", "/video/segment/{name}", "/video/preview", "/video/gif"})


async def _video_row(request: web.Request) -> tuple[str, str, Any, Path]:
    lib, rel = await _target(request)
    row, src = await indexed(request, lib, rel)
    if row["kind"] != "video":
        raise UsageError(f"{rel!r} is not a video (it is {row['kind']})")
    return lib.name, rel, row, src


def _media_token(request: web.Request, library: str, prefix: str, ttl: float) -> str:
    """The token the request came with, or a new one for `prefix` when it came with a Bearer."""
    if request.get(MEDIA_KEY) is not None:
        return request.query[MEDIA_PARAM]
    claims = request.get(USER_KEY)
    if claims is None:  # the auth gate lets nothing else through
        raise ApiError(401, "unauthorized", "authentication required")
    return request.app[TOKENS].issue_media(claims, library, prefix, ttl).token


async def _while_connected(request: web.Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client goes away meanwhile (aiohttp does not cancel handlers on
    disconnect): the first request of a video waiting for its first segment then stops the run."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL)
            if done:
                return task.result()
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client went away")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def get_stream(request: web.Request) -> web.Response:
    hevc = query_bool(request, "hevc", False)
    library, rel, row, src = await _video_row(request)
    key = await asyncio.to_thread(hls.stat_key, src)
    failure = hls.recorded_failure(row, key)
    if failure is not None:
        raise failure
    view = await _while_connected(request, request.app[HLS].open_stream(library, rel, src, hevc))
    if not view.ready:
        raise ApiError(503, "stream_preparing", f"{rel!r} is still being prepared: ask again shortly",
                       {"Retry-After": RETRY_AFTER})
    # A playlist outlives the default media token when the video is long: the longest one then.
    token = _media_token(request, library, rel, MEDIA_TTL_MAX)
    base = {"library": library, "path": rel, "v": view.variant, "k": view.key}

    def url(name: str) -> str:
        return f"segment/{name}?" + urlencode({**base, MEDIA_PARAM: token})

    text = hls.render_playlist(view.playlist, view.complete, url)
    return web.Response(text=text, content_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-cache"})


async def get_segment(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    variant = query_choice(request, "v", hls.VARIANTS, "")
    key = query_str(request, "k")
    if not variant or not key:
        raise ApiError(400, "missing_parameter", "query parameters 'v' and 'k' are required")
    if not hls.SEGMENT_RE.match(name):
        raise ApiError(400, "bad_parameter", f"{name!r} is not an HLS segment name")
    library, rel, _row, src = await _video_row(request)
    view = await request.app[HLS].view(library, rel, src, variant, key)
    if view is None:
        raise ApiError(404, "stream_gone", "this stream is no longer available (the video changed or its "
                                           "preparation stopped): load the playlist again")
    path = hls.segment_file(view, name)
    kind = "video/mp4" if name == hls.INIT else "video/iso.segment"
    # The URL names the source version, so the bytes behind it never change.
    return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": "private, max-age=86400"})


async def _serve_preview(request: web.Request, what: str) -> web.StreamResponse:
    library, rel, row, _src = await _video_row(request)
    config = request.app[CONFIG]
    current = row["preview_source"] == preview_key(row["size"], row["mtime_ns"], row["rel_path"])
    if current and row["preview_state"] == "failed":
        raise ApiError(422, "preview_failed", f"{rel!r} has no preview: {row['preview_error']}")
    pending = ApiError(404, "preview_pending", f"the preview of {rel!r} is not made yet (the watcher makes it, "
                                               "or `imageapi video previews`)")
    if not current or row["preview_state"] != "done":
        raise pending
    path = clip_path(config, library, rel) if what == "clip" else gif_path(config, library, rel)
    try:
        await asyncio.to_thread(os.stat, path)
    except FileNotFoundError:
        await mark_missing(request.app[DB], row["id"])  # deleted by hand: make it again
        raise pending from None
    kind = "video/mp4" if what == "clip" else "image/gif"
    return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": CACHE_CONTROL,
                                           "Accept-Ranges": "bytes"})


async def get_preview(request: web.Request) -> web.StreamResponse:
    return await _serve_preview(request, "clip")


async def get_gif(request: web.Request) -> web.StreamResponse:
    return await _serve_preview(request, "gif")


async def get_wall(request: web.Request) -> web.Response:
    lib = await request.app[LIBRARIES].get(query_str(request, "library"))
    folder = client_path(request.query.get("path"), required=False)
    recursive = query_bool(request, "recursive", True)
    limit = query_int(request, "limit", 100, 1, WALL_MAX_LIMIT)
    page = await list_wall(request.app[DB], lib, folder=folder, recursive=recursive, limit=limit,
                           cursor=query_str(request, "cursor"))
    token = _media_token(request, lib.name, folder, MEDIA_TTL_DEFAULT)
    for item in page.items:
        q = urlencode({"library": lib.name, "path": item["path"], MEDIA_PARAM: token})
        done = item["preview"]["state"] == "done"
        item["urls"] = {
            "clip": f"/video/preview?{q}" if done else None,
            "gif": f"/video/gif?{q}" if done else None,
            "thumbnail": f"/image?{q}",
            "stream": f"/video/stream?{q}",
            "original": f"/video?{q}",
        }
    return web.json_response({"library": lib.name, "path": folder, "recursive": recursive, "limit": limit,
                              "items": page.items, "next_cursor": page.next_cursor})


async def _manager(app: web.Application) -> AsyncIterator[None]:
    async def record(library: str, rel: str, key: str, exc: ImageapiError) -> None:
        await hls.record_failure(app[DB], library, rel, key, exc)

    manager = HlsManager(app[CONFIG], recorder=record)
    app[HLS] = manager
    warm = asyncio.create_task(hls.warm_up())
    try:
        yield
    finally:
        warm.cancel()
        await manager.aclose()  # kills every ffmpeg still running


def setup(app: web.Application) -> None:
    assert MEDIA_ROUTES <= auth.MEDIA_TOKEN_PATHS  # the gate lets media tokens through on these
    app.cleanup_ctx.append(_manager)
    app.router.add_get("/video/stream", get_stream)
    app.router.add_get("/video/segment/{name}", get_segment)
    app.router.add_get("/video/preview", get_preview)
    app.router.add_get("/video/gif", get_gif)
    app.router.add_get("/video/wall", get_wall)
