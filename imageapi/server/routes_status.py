"""GET /health (public) and GET /status (the watcher's last ticks, backlog sizes, errors)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from imageapi import __version__
from imageapi.core import status
from imageapi.core.faces.store import face_status
from imageapi.server.keys import BACKGROUND, DB
from imageapi.server.routes_faces import faces_available


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def get_status(request: web.Request) -> web.Response:
    db = request.app[DB]
    last_scans = [asdict(s) for s in await status.last_scans(db)]
    backlog = asdict(await status.backlog(db))
    faces: dict[str, Any] = {"enabled": await faces_available(request.app)}
    if faces["enabled"]:
        st = face_status
        fs = await st(db)
        faces.update({"pending": fs.pending, "backing_off": fs.backing_off, "failed": fs.failed,
                      "scanned": fs.scanned, "faces": fs.faces, "people": fs.people})
    watcher = request.app[BACKGROUND].status()
    return web.json_response({"watcher": watcher, "last_scans": last_scans, "backlog": backlog, "faces": faces})


def setup(app: web.Application) -> None:
    app.router.add_get("/health", get_health)
    app.router.add_get("/status", get_status)
