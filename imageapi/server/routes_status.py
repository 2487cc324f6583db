"""GET /health (public) and GET /status (the watcher's last ticks, backlog sizes, errors)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imageapi import __version__
from imageapi.core.faces.store import face_status
from imageapi.server.keys import BACKGROUND, DB
from imageapi.server.routes_faces import faces_available


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def _scalar(request: web.Request, sql: str) -> int:
    async with request.app[DB].execute(sql) as cur:
        row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


async def get_status(request: web.Request) -> web.Response:
    db = request.app[DB]
    last_scans: list[dict[str, Any]] = []
    async with db.execute(
        "SELECT l.name, s.mode, s.subtree, s.started_at, s.finished_at, s.status, s.scanned, s.added, "
        "s.changed, s.removed, s.moved, s.errors, s.error FROM scans s JOIN libraries l ON l.id = s.library_id "
        "WHERE s.id IN (SELECT MAX(id) FROM scans GROUP BY library_id, mode) ORDER BY l.name, s.mode"
    ) as cur:
        for r in await cur.fetchall():
            last_scans.append({k: r[k] for k in r.keys()} | {"library": r["name"]})
    for s in last_scans:
        s.pop("name", None)
    backlog: dict[str, Any] = {
        "files": await _scalar(request, "SELECT COUNT(*) FROM files"),
        "unhashed": await _scalar(request, "SELECT COUNT(*) FROM files WHERE content_hash IS NULL"),
        "thumbnails_pending": await _scalar(
            request, "SELECT COUNT(*) FROM files WHERE thumb_state IN ('pending', 'failed')"),
        "file_errors": await _scalar(request, "SELECT COUNT(*) FROM files WHERE error IS NOT NULL"),
    }
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
