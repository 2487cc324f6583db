"""Typed application keys: what create_app puts on the application for the handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from imageapi.core.config import Config
from imageapi.core.db import Connection
from imageapi.core.pool import WorkerPool
from imageapi.core.tokens import TokenService

if TYPE_CHECKING:
    from imageapi.server.auth import LoginThrottle
    from imageapi.server.background import Background
    from imageapi.server.cache import ByteCache
    from imageapi.server.fastpath import FastThumbs
    from imageapi.server.libcache import LibraryCache
    from imageapi.server.render import Renderer

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Connection)
POOL = web.AppKey("pool", WorkerPool)                # scans, hashing (the watcher's work)
RENDERER: web.AppKey[Renderer] = web.AppKey("renderer")  # thumbnails and previews asked for by requests
TOKENS = web.AppKey("tokens", TokenService)
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("throttle")
LIBRARIES: web.AppKey[LibraryCache] = web.AppKey("libraries")
THUMB_CACHE: web.AppKey[ByteCache] = web.AppKey("thumb_cache")
FAST_THUMBS: web.AppKey[FastThumbs] = web.AppKey("fast_thumbs")
BACKGROUND: web.AppKey[Background] = web.AppKey("background")
